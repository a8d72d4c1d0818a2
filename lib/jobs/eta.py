"""How long a profile will take on this machine, said before the long part starts: a few seconds of calibration
(the voice's RTF here on ONNX Runtime and on PyTorch, one thread) against the same figures of a recorded run of
that profile, which scale that run's seconds per notebook. Training notebooks scale with PyTorch, the rest with
ONNX Runtime. A profile with no recorded run gets no estimate, and says so.

    python -m lib.jobs.eta default 00_data_and_features 01_baselines --json outputs/default/eta.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from lib.core import machine, text
from lib.core.results import atomic_write_json
from lib.harness import bench
from lib.voices import synth as voices

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
# The recorded run each profile's estimate scales from: its run_status.json (seconds per notebook) and 01's RTF rows.
REFERENCE_RUNS = {"default": ROOT / "outputs" / "recorded" / "amd-epyc-zen4-2c" / "14_default_run"}
TORCH_NOTEBOOKS = ("02_lora_qlora", "04_distillation")  # their time is mostly PyTorch training
CALIBRATION_SENTENCES = 3  # from the judged lists 1-10, as 01 times them


def reference(profile: str) -> dict | None:
    """{'seconds': {notebook: s}, 'rtf': {'ort-cpu': x, 'torch-cpu': y}, 'cpu': model, 'path': folder} of the
    recorded run of `profile`, or None where none is recorded."""
    import pandas as pd
    folder = REFERENCE_RUNS.get(profile)
    if folder is None or not (folder / "run_status.json").exists():
        return None
    status = json.loads((folder / "run_status.json").read_text())
    rows = pd.read_csv(folder / "01_results.csv")
    rtf = rows[(rows.metric == "rtf") & (rows.variant == "fp32") & (rows.threads == 1) & (rows.status == "ok")]
    env = json.loads((folder / "01_env.json").read_text())
    return {"seconds": {k: v["seconds"] for k, v in status.items()},
            "rtf": {b: float(rtf[rtf.backend == b].value.iloc[0]) for b in ("ort-cpu", "torch-cpu")},
            "cpu": env.get("cpu_model", "?"), "path": str(folder.relative_to(ROOT))}


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


def estimate(profile: str, notebooks: list[str], cal: dict, ref: dict) -> dict[str, float]:
    """Seconds per notebook here: the recorded run's, times this machine's RTF over the recorded one."""
    scale = {b: cal[b] / ref["rtf"][b] for b in ("ort-cpu", "torch-cpu")}
    return {nb: ref["seconds"][nb] * scale["torch-cpu" if nb in TORCH_NOTEBOOKS else "ort-cpu"]
            for nb in notebooks if nb in ref["seconds"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lib.jobs.eta", description=__doc__.split("\n\n")[0])
    p.add_argument("profile")
    p.add_argument("notebooks", nargs="*")
    p.add_argument("--json", default="", help="write {notebook: estimated seconds} here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return report(args.profile, args.notebooks, args.json)


def report(profile: str, notebooks: list[str], json_path: str = "") -> int:
    """Say how long `notebooks` of `profile` (all of them where empty) will take here; write it to `json_path`."""
    ref = reference(profile)
    if ref is None:
        if json_path:
            Path(json_path).unlink(missing_ok=True)  # no stale estimate of an earlier run
        _LOGGER.warning("no time estimate: no recorded run of profile '%s' to scale from", profile)
        return 0
    cal = calibrate()
    est = estimate(profile, notebooks or list(ref["seconds"]), cal, ref)
    ratio = cal["ort-cpu"] / ref["rtf"]["ort-cpu"]
    _LOGGER.info(f"estimate: about {sum(est.values()) / 60:.0f} minutes for {len(est)} notebook(s) on this {machine.cpu_model()} "
          f"({machine.feature_line()}); it speaks {ratio:.1f}x as long as the {ref['cpu']} whose run is "
          f"recorded in {ref['path']} (RTF {cal['ort-cpu']:.3f} vs {ref['rtf']['ort-cpu']:.3f} on ONNX Runtime, "
          f"{cal['torch-cpu']:.3f} vs {ref['rtf']['torch-cpu']:.3f} on PyTorch, 1 thread)"
          + ("; the calibration was contended, so the estimate is rough" if cal["contended"] else ""))
    if json_path:
        atomic_write_json(Path(json_path), {"estimate_s": est, "calibration": cal, "reference": ref["path"]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
