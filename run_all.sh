#!/usr/bin/env bash
# Run every numbered notebook with papermill on one profile, keep going past failures, then render the report.
#   ./run_all.sh [PROFILE [NN ...]]   PROFILE defaults to 'default'; parameters come from params/PROFILE/*.yaml;
#                                     NN picks notebooks by number (e.g. 02 90); the others' results are kept
# Executed notebooks go to outputs/PROFILE/notebooks/, the report to outputs/PROFILE/report.html.
# TTS_LAB_PARAMS and TTS_LAB_OUTPUTS move the params and outputs folders (the tests use them); NOTEBOOK_TIMEOUT
# is the per-cell execution timeout in seconds; TTS_LAB_REQUIRE_QUIET=SECONDS makes every timing wait that long for
# a quiet machine and fail rather than record a contended number. params/PROFILE/voice.yaml names your own voice.
set -uo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python}"
# Long training runs on this machine (python -m lib.jobs.train_job) pause while the notebooks run: hold the timing lock.
if [ -z "${TTS_LAB_RUN_ALL_HOLDS:-}" ]; then
  TTS_LAB_RUN_ALL_HOLDS=1 exec "$PY" -m lib.core.pause hold -- bash "$PWD/$(basename "$0")" "$@"
fi
PROFILE="${1:-default}"
shift || true
PICK=("$@")
TIMEOUT="${NOTEBOOK_TIMEOUT:-3600}"
PARAMS="${TTS_LAB_PARAMS:-params}"
OUT="${TTS_LAB_OUTPUTS:-outputs}/$PROFILE"
NBOUT="$OUT/notebooks"

if [ ! -d "$PARAMS/$PROFILE" ]; then
  echo "run_all.sh: no profile '$PROFILE' (expected a folder $PARAMS/$PROFILE; have: $(ls "$PARAMS" | tr '\n' ' '))" >&2
  exit 2
fi
mkdir -p "$NBOUT"
# Everything the run prints also goes to its log beside the notebooks (appended, each run under a header line);
# what it says on stderr (a failed notebook, bad parameters) stays on stderr too.
exec > >(tee -a "$OUT/run.log") 2> >(tee -a "$OUT/run.log" >&2)
echo "== $(date -u +%FT%TZ) $0 $PROFILE${PICK[*]:+ ${PICK[*]}} at $(git rev-parse --short HEAD 2>/dev/null || echo 'no git')"
# Library warnings the lab knows to be noise are silenced by name (lib/core/quiet.py); any other one shows.
PYTHONWARNINGS="$("$PY" -c 'from lib.core.quiet import pythonwarnings; print(pythonwarnings())')" && export PYTHONWARNINGS
# executed notebooks keep a few progress lines, not hundreds: a bar shows once its loop has run 5 s, then at most
# every 30 s, so a slower CPU adds at most two lines per bar and minute (the terminal shows papermill's own bar)
export TQDM_DELAY="${TQDM_DELAY:-5}" TQDM_MININTERVAL="${TQDM_MININTERVAL:-30}"
export TTS_LAB_COMMAND="./run_all.sh $PROFILE${PICK[*]:+ ${PICK[*]}}"  # each metrics.json keeps it
# The profile's own Piper voice (params/PROFILE/voice.yaml), if it names one; else en_US-joe-medium.
if ! voice_env=$("$PY" -m lib.core.params voice-env "$PROFILE"); then exit 2; fi
eval "$voice_env"
[ -z "$voice_env" ] || echo "voice: ${TTS_LAB_VOICE} (speaker ${TTS_LAB_SPEAKER})"

mapfile -t NOTEBOOKS < <(ls notebooks/[0-9][0-9]_*.ipynb | sort)
if [ ${#PICK[@]} -gt 0 ]; then
  picked=()
  for n in "${PICK[@]}"; do
    match=(notebooks/"$n"_*.ipynb)
    if [ ! -f "${match[0]}" ]; then
      echo "run_all.sh: no notebook numbered '$n' (have: $(ls notebooks | grep -o '^[0-9][0-9]' | tr '\n' ' '))" >&2
      exit 2
    fi
    picked+=("${match[0]}")
  done
  NOTEBOOKS=("${picked[@]}")
fi
REPORT="notebooks/90_report.ipynb"
# Before the long part: roughly how long this profile takes here (a few seconds of calibration against its recorded run)
NAMES=(); for nb in "${NOTEBOOKS[@]}"; do NAMES+=("$(basename "$nb" .ipynb)"); done
"$PY" -m lib.cli eta "$PROFILE" "${NAMES[@]}" --json "$OUT/eta.json" || echo "(no time estimate: the calibration failed)"
# each notebook's estimate, and the same at this run's pace so far (lib.core.pace; done_json: this run's seconds)
done_json="{}"
eta_of() { "$PY" -c "import json,sys; from lib.core.pace import line; print(line(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))" "$OUT/eta.json" "$1" "$done_json" 2>/dev/null; }
failures=()
status_json=$(cat "$OUT/run_status.json" 2>/dev/null || echo "{}")
[ ${#PICK[@]} -gt 0 ] || status_json="{}"
start_all=$(date +%s)
i=0
for nb in "${NOTEBOOKS[@]}"; do
  name=$(basename "$nb" .ipynb)
  i=$((i + 1))
  echo "[$i/${#NOTEBOOKS[@]}] $name ($PROFILE$(eta_of "$name"))"
  t0=$(date +%s)
  # warm: an earlier run's outputs are here, whose judged clips and trained states this run reuses (eta tells apart)
  if [ -e "$OUT/$name/results.csv" ]; then warm=true; else warm=false; fi
  if ! "$PY" -m lib.core.params check-one "$PROFILE/$name"; then
    failures+=("$name (bad parameters)")
    st=failed
  else
    tmp="$NBOUT/.$name.running.ipynb"
    # the profile is the folder's name, whatever a copied file's `profile:` says (-p overrides -f)
    # the kernel says on every start that its local TCP sockets are unencrypted (papermill offers no IPC transport)
    if "$PY" -m papermill "$nb" "$tmp" -f "$PARAMS/$PROFILE/$name.yaml" -p profile "$PROFILE" -k python3 \
         --cwd "$PWD" --execution-timeout "$TIMEOUT" --progress-bar --log-level WARNING \
         2> >(grep -v --line-buffered "Kernel is running over TCP without encryption" >&2); then
      mv -f "$tmp" "$NBOUT/$name.ipynb"
      st=ok
    else
      mv -f "$tmp" "$NBOUT/$name.failed.ipynb" 2>/dev/null
      echo "    error: $("$PY" -m lib.report.failed "$NBOUT/$name.failed.ipynb")"
      failures+=("$name (see $NBOUT/$name.failed.ipynb)")
      st=failed
    fi
  fi
  secs=$(( $(date +%s) - t0 ))
  fp=$("$PY" -m lib.core.params fingerprint "$PROFILE/$name" 2>/dev/null || echo "")
  echo "    -> $st in ${secs}s"
  [ "$st" = ok ] && done_json=$("$PY" -c "import json,sys; d=json.loads(sys.argv[1]); d[sys.argv[2]]=int(sys.argv[3]); print(json.dumps(d))" "$done_json" "$name" "$secs")
  # each notebook's time with the figures this run was calibrated at (eta.json), where its time went (its
  # metrics.json's work_seconds: judging, training) and what it ran (its fingerprint: code cells and parameters), so
  # that a later estimate can scale each kind by its own figure, from a run of the same work
  status_json=$("$PY" -c "import json,sys,pathlib; d=json.loads(sys.argv[1]); e=pathlib.Path(sys.argv[5]); c=json.loads(e.read_text()).get('calibration',{}) if e.exists() else {}; m=pathlib.Path(sys.argv[6]); w=json.loads(m.read_text()).get('work_seconds',{}) if m.exists() and m.stat().st_mtime >= float(sys.argv[7]) else {}; d[sys.argv[2]]={'status':sys.argv[3],'seconds':int(sys.argv[4]),**({'rtf':{b:c[b] for b in ('ort-cpu','torch-cpu','judge','method','machine') if b in c}} if 'torch-cpu' in c else {}),**({'work_s':w} if w else {}),**({'fingerprint':sys.argv[8]} if sys.argv[8] else {}),'warm':sys.argv[9]=='true'}; print(json.dumps(d))" "$status_json" "$name" "$st" "$secs" "$OUT/eta.json" "$OUT/$name/metrics.json" "$t0" "$fp" "$warm")
  "$PY" -c "from lib.core.results import atomic_write_text; import sys; atomic_write_text(sys.argv[1], sys.argv[2])" "$OUT/run_status.json" "$status_json"
  if [ "$st" = ok ] && [ "$nb" != "$REPORT" ]; then
    { "$PY" -m jupyter nbconvert --to html --log-level WARN "$NBOUT/$name.ipynb" --output-dir "$NBOUT" >/dev/null 2>&1 \
      && "$PY" -m lib.report.media offline "$NBOUT/$name.html"; } || echo "    (could not render $name.ipynb to HTML)"
  fi
done

if [ -f "$NBOUT/90_report.ipynb" ]; then
  if "$PY" -m jupyter nbconvert --to html --no-input --log-level WARN "$NBOUT/90_report.ipynb" \
       --output-dir "$OUT" --output report.html && "$PY" -m lib.report.media offline "$OUT/report.html"; then
    echo "report: $OUT/report.html"
  else
    failures+=("report rendering")
  fi
fi
echo "total: $(( $(date +%s) - start_all ))s"
if [ ${#failures[@]} -gt 0 ]; then
  echo "FAILED (${#failures[@]}):" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "all notebooks ran for profile '$PROFILE'"
