#!/bin/bash
# One lent-GPU slot (issue 49): the teacher speaks a corpus on the GPU (8 writers, a time budget), then four runs share
# the GPU on it for TRAIN_S seconds each (SIGTERM checkpoints): the frame-rate decoder's adversarial phase (issue 49
# item 6: piper's MPD+MRD, batch 16, a discriminator-only warm-up), and regressions of the 128-channel decoder, the
# hybrid decoder (from the teacher) and the half-width flow. What comes back: each run's folder without optimiser or
# discriminator state (`tts-lab train pack --ledger` runs here), the logs and the corpus manifest.
set -u
PY=${PY:-python3}; CORPUS_S=${CORPUS_S:-75}; TRAIN_S=${TRAIN_S:-240}; DEV=${DEV:-cuda}; NW=${NW:-8}; OUT=${OUT:-$TMPDIR/slot-out}; mkdir -p $OUT
[ -n "${SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $TMPDIR/site .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devrun/site:$TMPDIR/site:$PWD TTS_LAB_TEACHER_BUNDLE=$PWD/.devrun/bundle PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 PYTHONWARNINGS=ignore
L=$TMPDIR/logs; C=$TMPDIR/corpus; W=$TMPDIR/w; mkdir -p $L $W
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $L/gpu.txt
date +%s > $L/t_start
for i in $(seq $NW); do
  $PY -m lib.cli train corpus --out $C --device $DEV --seconds $CORPUS_S --threads 2 > $L/corpus$i.log 2>&1 &
done
wait
$PY -m lib.cli train corpus --out $C --device $DEV --seconds 1e-9 --manifest-out $L/corpus_manifest.json > $L/corpus_manifest.log 2>&1
date +%s > $L/t_corpus
$PY -c "import json,sys; m=json.load(open('$L/corpus_manifest.json')); print('corpus', m['sentences'], m['hours']); sys.exit(m['sentences'] < 64)" || { tail -n 30 $L/corpus1.log $L/corpus_manifest.log; tar -C $TMPDIR -czf $OUT/logs.tgz logs; exit 3; }
R="$PY -m lib.jobs.train_job"
COMMON="--device $DEV --corpus $C --noise-scale 0.667 --noise-w 0.8 --threads 2 --log-every 50 --eval-every 250 --checkpoint-every 250"
timeout -s TERM $TRAIN_S $R regress-istft --work $W/istftcorpusadv --init-from .devrun/init/istft --dim 192 --blocks 6 \
  --steps 292750 --adversarial-steps 4000 --disc-warmup 300 --warm-restart --lr 1e-4 --discriminators mpd mrd \
  --batch 16 --frames 32 $COMMON > $L/istftcorpusadv.log 2>&1 &
timeout -s TERM $TRAIN_S $R regress --work $W/reg128corpus --init-from .devrun/init/dec128 --width 128 --steps 170000 \
  --warm-restart --lr 2.5e-4 --batch 16 --frames 32 $COMMON > $L/reg128corpus.log 2>&1 &
OMP_NUM_THREADS=4 timeout -s TERM $TRAIN_S $R regress-hybrid --work $W/hybrid96corpus --width 96 --steps 30000 \
  --batch 16 --frames 32 $COMMON > $L/hybrid96corpus.log 2>&1 &
timeout -s TERM $TRAIN_S $R regress-flow --work $W/flow96corpus --init-from .devrun/init/flow --hidden 96 --steps 60500 \
  --warm-restart --lr 2.5e-4 --batch 32 --frames 128 $COMMON > $L/flow96corpus.log 2>&1 &
wait
date +%s > $L/t_train
nvidia-smi > $L/nvidia-smi.txt 2>&1
for w in $W/*; do  # the generators (EMA and raw), configs, curves and run.json: what `pack` reads
  (cd $W && tar -czf $OUT/$(basename $w).tgz $(basename $w)/run.json \
     $(cd $W && ls -d $(basename $w)/*/ | while read p; do for f in config.json curve.csv keep.json ema.safetensors state/model.safetensors; do [ -e "$p$f" ] && echo "$p$f"; done; done))
done
tar -C $TMPDIR -czf $OUT/logs.tgz logs
ls -la $OUT; for f in $L/*corpus*.log; do echo "== $f"; tail -n 4 $f; done
