"""How long a profile will take on this machine, said before the long part starts: a few seconds of calibration
(the voice's RTF here on ONNX Runtime and on PyTorch, one thread, and the judges' seconds per audio second) against
the same figures of the run each notebook's time is taken from, which scale its seconds. That run is the newest that
timed the notebook doing what it does now (the same fingerprint: code cells and parameters) and starting as it will
(warm, with an earlier run's outputs, or fresh); else the newest that timed it, and the estimate says it is rough.
Each kind of work scales by its own figure where the run kept where its time went (lib.core.worktime: judging by the
judges', training by PyTorch's, the rest by ONNX Runtime's); a run that did not scales a training notebook by PyTorch
and the rest by ONNX Runtime. A profile no run has timed gets no estimate, and says so.

    tts-lab study eta default 00_data_and_features 01_baselines --json outputs/default/eta.json
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import machine, params, text, worktime
from lib.core.results import atomic_write_json
from lib.harness import bench
from lib.harness.judges import judge_seconds
from lib.voices import synth as voices

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "outputs" / "recorded"  # <cpu>/<n>_<profile>_run/: run_status.json with eta.json or 01's RTF rows
TORCH_NOTEBOOKS = ("02_lora_qlora", "04_distillation")  # their time is mostly PyTorch training
CALIBRATION_SENTENCES = 3  # from the judged lists 1-10, as 01 times them
CALIBRATION_REPEATS = 3  # rounds over them: the VM's speed wanders by a third from one few seconds to the next
CALIBRATION_METHOD = 2  # 1 (none recorded): one round after one warm-up call, whose PyTorch figure ran up to 1.7x high


def timed_runs(profile: str, outputs: Path | None = None, recorded: Path | None = None) -> list[dict]:
    """The runs of `profile` an estimate can scale from, newest first, each {'seconds': {notebook: s}, 'rtf':
    {notebook: {'ort-cpu': x, 'torch-cpu': y}}, 'cpu', 'path'}: this checkout's last time of each notebook (where
    run_all.sh kept the RTFs it was calibrated at), then the recorded runs by their number."""
    runs = []
    status_file = Path(outputs or ROOT / "outputs") / profile / "run_status.json"
    if status_file.exists():
        done = {k: v for k, v in json.loads(status_file.read_text()).items()
                if v.get("status") == "ok" and "rtf" in v}
        if done:  # times an older run_all.sh kept without RTFs scale nothing
            runs.append(_run(done, {k: v["rtf"] for k, v in done.items()}, "this machine's last run", status_file))
    folders = [f for f in (recorded or RECORDED).glob(f"*/*_{profile}_run") if (f / "run_status.json").exists()]
    for folder in sorted(folders, key=lambda f: int(f.name.split("_")[0]), reverse=True):
        status = {k: v for k, v in json.loads((folder / "run_status.json").read_text()).items()
                  if v.get("status") == "ok"}
        if (folder / "eta.json").exists():
            rtf = json.loads((folder / "eta.json").read_text())["calibration"]
        elif (folder / "01_results.csv").exists():
            rows = pd.read_csv(folder / "01_results.csv")
            rows = rows[(rows.metric == "rtf") & (rows.variant == "fp32") & (rows.threads == 1) & (rows.status == "ok")]
            rtf = {b: float(rows[rows.backend == b].value.iloc[0]) for b in ("ort-cpu", "torch-cpu")}
        else:
            continue  # seconds with nothing to scale them by
        env = folder / "01_env.json"
        cpu = json.loads(env.read_text()).get("cpu_model", folder.parent.name) if env.exists() else folder.parent.name
        path = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        runs.append(_run(status, {k: v.get("rtf", rtf) for k, v in status.items()}, cpu, path))
    return runs


def _run(status: dict, rtf: dict, cpu: str, path) -> dict:
    """One run an estimate can scale from, out of its run_status.json entries (notebook: what run_all.sh kept)."""
    return {"seconds": {k: v["seconds"] for k, v in status.items()}, "rtf": rtf,
            "work": {k: v["work_s"] for k, v in status.items() if v.get("work_s")},
            "fingerprint": {k: v.get("fingerprint") for k, v in status.items()},
            "warm": {k: v.get("warm") for k, v in status.items()}, "cpu": cpu, "path": str(path)}


def _fingerprint(profile: str, notebook: str) -> str | None:
    """The notebook's fingerprint on `profile` (lib.core.params), or None where its files cannot say."""
    try:
        return params.fingerprint(profile, notebook)
    except (params.ParamsError, OSError, ValueError):
        return None


JUDGE = "judge"  # the calibration's key for the judges' seconds per audio second
SCALE_BY = {worktime.JUDGE: JUDGE, worktime.TRAIN: "torch-cpu"}  # each tallied kind of work, the figure it scales by


def calibrate(sentences: int = CALIBRATION_SENTENCES, judges: bool = True) -> dict:
    """The voice's median RTF here at one thread on ONNX Runtime and PyTorch, timed call by call in turn after two
    warm-up calls each (PyTorch's first calls run slower), the judges' median seconds per audio second in one process
    (Whisper base, DNSMOS, Distill-MOS; `judge`), and whether the timing was contended."""
    texts = [s.text for s in text.harvard_sentences([1])[:sentences]]
    engines = {b: voices.load_voice(backend=b, threads=1) for b in ("ort-cpu", "torch-cpu")}
    timed = bench.time_interleaved({b: v.synthesize for b, v in engines.items()}, texts, lambda a: a.duration,
                                   warmup=2, repeats=CALIBRATION_REPEATS, threads=1)
    out = {b: float(np.median(t.latencies_s / t.audio_s)) for b, t in timed.items()}
    out["contended"] = any(t.status[0] == "contended" for t in timed.values())
    out["method"] = CALIBRATION_METHOD
    if judges:
        clip = engines["ort-cpu"].synthesize(texts[0])
        out[JUDGE] = judge_seconds(clip, "whisper-base") / clip.duration
    return out


def scaled(seconds: float, work: dict | None, cal: dict, ref: dict, torch_notebook: bool) -> float:
    """One notebook's `seconds` from a run calibrated at `ref`, on a machine calibrated at `cal`: each kind of work
    the run tallied (`work`) by its own figure and the rest by ONNX Runtime's, where both calibrations have the
    figures; else all of it by PyTorch's (a training notebook) or ONNX Runtime's."""
    ratio = {k: cal[k] / ref[k] for k in ("ort-cpu", "torch-cpu", JUDGE) if cal.get(k) and ref.get(k)}
    if work and all(SCALE_BY[k] in ratio for k in work):
        rest = max(seconds - sum(work.values()), 0.0)
        return rest * ratio["ort-cpu"] + sum(s * ratio[SCALE_BY[k]] for k, s in work.items())
    return seconds * ratio["torch-cpu" if torch_notebook else "ort-cpu"]


def estimate(notebooks: list[str], cal: dict, runs: list[dict], now: dict[str, str] | None = None,
             warm: dict[str, bool] | None = None) -> dict[str, tuple[float, dict]]:
    """Seconds per notebook here, with the run they scale from, scaled by `scaled`: the newest run that timed the
    work the notebook does now (its fingerprint in `now`) and started as this one will (`warm`: with an earlier run's
    outputs, whose judged clips and trained states it reuses, or fresh); else the newest that matches the one, else
    the newest that timed it at all."""
    out = {}
    for nb in notebooks:
        def fits(r: dict) -> tuple[bool, bool]:
            same_work = bool(now and now.get(nb) and r.get("fingerprint", {}).get(nb) == now[nb])
            same_start = bool(warm and nb in warm and r.get("warm", {}).get(nb) == warm[nb])
            return same_work, same_start
        run = max((r for r in runs if nb in r["seconds"]), key=fits, default=None)  # the newest of the best fits
        if run is not None:
            out[nb] = (scaled(run["seconds"][nb], run.get("work", {}).get(nb), cal, run["rtf"][nb],
                              nb in TORCH_NOTEBOOKS), run)
    return out


def report(profile: str, notebooks: list[str], json_path: str = "", outputs: Path | None = None) -> int:
    """Say how long `notebooks` of `profile` (every one a run timed, where empty) will take here; write it to
    `json_path`."""
    runs = timed_runs(profile, outputs)
    wanted = notebooks or sorted({nb for r in runs for nb in r["seconds"]})
    missing = [nb for nb in wanted if not any(nb in r["seconds"] for r in runs)]
    if len(missing) == len(wanted):
        if json_path:
            Path(json_path).unlink(missing_ok=True)  # no stale estimate of an earlier run
        _LOGGER.warning("no time estimate: no run of profile '%s' timed %s to scale from", profile,
                        ", ".join(wanted) or "any notebook")
        return 0
    cal = calibrate()
    now = {nb: _fingerprint(profile, nb) for nb in wanted}
    warm = {nb: (Path(outputs or ROOT / "outputs") / profile / nb / "results.csv").exists() for nb in wanted}
    est = estimate(wanted, cal, runs, now, warm)
    changed = [nb for nb, (_, r) in est.items() if not now[nb] or r.get("fingerprint", {}).get(nb) != now[nb]]
    unlike = [nb for nb, (_, r) in est.items() if r.get("warm", {}).get(nb) not in (None, warm[nb])]
    other_method = [nb for nb, (_, r) in est.items() if r["rtf"][nb].get("method", 1) != cal.get("method", 1)]
    sources = sorted({f"{r['path']} ({r['cpu']})" for _, r in est.values()})
    rough = "; the calibration was contended, so the estimate is rough" if cal["contended"] else ""
    rough += f"; no run timed {', '.join(missing)}" if missing else ""
    rough += (f"; rough for {', '.join(changed)}: no run timed what they do now (their code or parameters changed)"
              if changed else "")
    rough += (f"; rough for {', '.join(unlike)}: timed on a run that started otherwise (warm, with an earlier run's "
              "judged clips and trained states, or fresh) than this one will" if unlike else "")
    rough += (f"; rough for {', '.join(other_method)}: timed on a run calibrated by another method" if other_method
              else "")
    _LOGGER.info(f"estimate: about {sum(s for s, _ in est.values()) / 60:.0f} minutes for {len(est)} notebook(s) on "
                 f"this {machine.cpu_model()} ({machine.feature_line()}; RTF {cal['ort-cpu']:.3f} on ONNX Runtime, "
                 f"{cal['torch-cpu']:.3f} on PyTorch, 1 thread; the judges {cal.get(JUDGE, float('nan')):.2f} s per "
                 "audio second), scaled from the newest run that timed each (by kind of work where it kept where its "
                 "time went): "
                 + "; ".join(sources) + rough)
    if json_path:
        atomic_write_json(Path(json_path), {"estimate_s": {nb: s for nb, (s, _) in est.items()}, "calibration": cal,
                                            "reference": {nb: r["path"] for nb, (_, r) in est.items()},
                                            "changed": changed, "unlike_start": unlike,
                                            "other_calibration": other_method})
    return 0

