"""How long a profile will take on this machine, said before the long part starts: a few seconds of calibration
(the voice's RTF here on ONNX Runtime and on PyTorch, one thread) against the same figures of the newest run that
timed each notebook (this checkout's last, else a recorded one), which scale its seconds. Training notebooks scale
with PyTorch, the rest with ONNX Runtime. A profile no run has timed gets no estimate, and says so.

    tts-lab study eta default 00_data_and_features 01_baselines --json outputs/default/eta.json
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import machine, text
from lib.core.results import atomic_write_json
from lib.harness import bench
from lib.voices import synth as voices

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "outputs" / "recorded"  # <cpu>/<n>_<profile>_run/: run_status.json with eta.json or 01's RTF rows
TORCH_NOTEBOOKS = ("02_lora_qlora", "04_distillation")  # their time is mostly PyTorch training
CALIBRATION_SENTENCES = 3  # from the judged lists 1-10, as 01 times them


def timed_runs(profile: str, outputs: Path | None = None, recorded: Path = RECORDED) -> list[dict]:
    """The runs of `profile` an estimate can scale from, newest first, each {'seconds': {notebook: s}, 'rtf':
    {notebook: {'ort-cpu': x, 'torch-cpu': y}}, 'cpu', 'path'}: this checkout's last time of each notebook (where
    run_all.sh kept the RTFs it was calibrated at), then the recorded runs by their number."""
    runs = []
    status_file = Path(outputs or ROOT / "outputs") / profile / "run_status.json"
    if status_file.exists():
        done = {k: v for k, v in json.loads(status_file.read_text()).items()
                if v.get("status") == "ok" and "rtf" in v}
        if done:  # times an older run_all.sh kept without RTFs scale nothing
            runs.append({"seconds": {k: v["seconds"] for k, v in done.items()},
                         "rtf": {k: v["rtf"] for k, v in done.items()}, "cpu": "this machine's last run",
                         "path": str(status_file)})
    folders = [f for f in recorded.glob(f"*/*_{profile}_run") if (f / "run_status.json").exists()]
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
        runs.append({"seconds": {k: v["seconds"] for k, v in status.items()}, "rtf": {k: rtf for k in status},
                     "cpu": cpu, "path": str(path)})
    return runs


def calibrate(sentences: int = CALIBRATION_SENTENCES) -> dict:
    """The voice's median RTF here at one thread on ONNX Runtime and PyTorch, and whether the timing was contended."""
    texts = [s.text for s in text.harvard_sentences([1])[:sentences]]
    out = {}
    for backend in ("ort-cpu", "torch-cpu"):
        v = voices.load_voice(backend=backend, threads=1)
        t = bench.time_calls(v.synthesize, texts, lambda a: a.duration, warmup=1, threads=1)
        out[backend] = float(np.median(t.latencies_s / t.audio_s))
        out["contended"] = out.get("contended", False) or t.status[0] == "contended"
    return out


def estimate(notebooks: list[str], cal: dict, runs: list[dict]) -> dict[str, tuple[float, dict]]:
    """Seconds per notebook here, with the run they scale from: the newest run that timed it, times this machine's
    RTF over the one that run was calibrated at."""
    out = {}
    for nb in notebooks:
        run = next((r for r in runs if nb in r["seconds"]), None)
        if run is not None:
            backend = "torch-cpu" if nb in TORCH_NOTEBOOKS else "ort-cpu"
            out[nb] = (run["seconds"][nb] * cal[backend] / run["rtf"][nb][backend], run)
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
    est = estimate(wanted, cal, runs)
    sources = sorted({f"{r['path']} ({r['cpu']})" for _, r in est.values()})
    rough = "; the calibration was contended, so the estimate is rough" if cal["contended"] else ""
    rough += f"; no run timed {', '.join(missing)}" if missing else ""
    _LOGGER.info(f"estimate: about {sum(s for s, _ in est.values()) / 60:.0f} minutes for {len(est)} notebook(s) on "
                 f"this {machine.cpu_model()} ({machine.feature_line()}; RTF {cal['ort-cpu']:.3f} on ONNX Runtime, "
                 f"{cal['torch-cpu']:.3f} on PyTorch, 1 thread), scaled from the newest run that timed each: "
                 + "; ".join(sources) + rough)
    if json_path:
        atomic_write_json(Path(json_path), {"estimate_s": {nb: s for nb, (s, _) in est.items()}, "calibration": cal,
                                            "reference": {nb: r["path"] for nb, (_, r) in est.items()}})
    return 0

