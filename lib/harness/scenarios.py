"""The measuring scenarios of the hardware benchmark (after MLPerf inference): single-stream latency, offline
throughput by batch size, streaming time to first audio with chunk fidelity, utilisation and energy from counters
only, and the whole suite for one engine. Part of the harness, beside bench and evaluate."""
from __future__ import annotations

import dataclasses
import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from lib.core import text
from lib.core.audio import snr_db
from lib.core.results import STREAMING_TIMINGS, fidelity_failure
from lib.core.subject import Subject, Technique
from lib.harness import bench, evaluate, metrics
from lib.harness.bench import Timing
from lib.harness.metrics import pesq_wb

if TYPE_CHECKING:
    import pandas as pd  # deferred at run time: the suites import it when they run
from lib.harness.trackers import Monitor, Watched
from lib.runtimes.bench_engines import Engine, windows
from lib.voices import synth as voices
from lib.voices.synth import CHUNK_FRAMES, CONTEXT_FRAMES

# --- scenarios -----------------------------------------------------------------------------------------------

def single_stream(engine: Engine, queries: Sequence[Sequence[int]], min_queries: int = 100, min_seconds: float = 10.0,
                  max_seconds: float = 120.0, warmup: int = 3, progress: bool = False, threads: int = 1) -> Timing:
    """MLPerf single-stream: one query at a time, the i-th with noise seed i, until at least `min_queries` and
    `min_seconds` (capped at `max_seconds`), through the one timing loop (bench.time_interleaved): latency per
    query, the audio it produced, and the machine's load meanwhile."""
    for ids in list(queries)[:warmup]:
        engine.synth([ids])
    seeds = itertools.count()
    return bench.time_interleaved({engine.label: lambda ids: engine.synth([ids], seed=next(seeds))}, queries,
                                  lambda out: out[0].size / engine.sample_rate, warmup=0, threads=threads,
                                  progress=f"single-stream {engine.label}" if progress else None,
                                  until=bench.Until(min_queries, min_seconds, max_seconds),
                                  sync=engine.sync)[engine.label]


def offline_throughput(engine: Engine, queries: Sequence[Sequence[int]], batch_sizes: Sequence[int],
                       min_seconds: float = 2.0, min_batches: int = 2, on_result: Callable | None = None) -> list[dict]:
    """MLPerf offline: audio seconds per wall second when queries are sent `b` at a time (sorted by length so a
    batch pads little). Stops growing the batch at the first out-of-memory error."""
    order = sorted(queries, key=len)
    rows = []
    for b in batch_sizes:
        try:
            batches = [order[i:i + b] for i in range(0, len(order), b)] or [order]
            batches = [bt for bt in batches if len(bt) == b] or batches[:1]
            engine.synth(batches[0])
            engine.sync()
            audio_s = wall = 0.0
            n = 0
            while wall < min_seconds or n < min_batches:
                bt = batches[n % len(batches)]
                t0 = time.perf_counter()
                out = engine.synth(bt, seed=n)
                engine.sync()
                wall += time.perf_counter() - t0
                audio_s += sum(a.size for a in out) / engine.sample_rate
                n += 1
        except (RuntimeError, MemoryError) as exc:
            if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
                rows.append({"batch": b, "status": "failed", "reason": f"out of memory at batch {b}"})
                break
            raise
        row = {"batch": b, "batches": n, "audio_s": audio_s, "wall_s": wall, "throughput_xrt": audio_s / wall,
               "status": "ok", "reason": ""}
        rows.append(row)
        if on_result:
            on_result(row)
    return rows


def stream(engine: Engine, ids: Sequence[int], chunk_frames: int, context_frames: int, seed: int = 0):
    """Yield (seconds since the call, audio chunk): latent first (the flow sees the whole sentence), then the
    decoder over fixed windows of chunk + 2 x context frames, keeping each window's centre."""
    t0 = time.perf_counter()
    z = engine.latent(ids, seed=seed)
    for _, chunk in stream_latent(engine, z, chunk_frames, context_frames):
        yield time.perf_counter() - t0, chunk


def streaming_ttfa(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int, context_frames: int,
                   min_queries: int = 100, min_seconds: float = 10.0, max_seconds: float = 120.0,
                   warmup: int = 3) -> dict:
    """Time to first audio (p50/p90/p99) and whole-stream latency over single-stream queries."""
    for ids in list(queries)[:warmup]:
        list(stream(engine, ids, chunk_frames, context_frames))
    ttfa, total, aud = [], [], []
    start = time.perf_counter()
    i = 0
    while ((len(ttfa) < min_queries or time.perf_counter() - start < min_seconds)
           and time.perf_counter() - start < max_seconds):
        chunks = list(stream(engine, queries[i % len(queries)], chunk_frames, context_frames, seed=i))
        engine.sync()
        ttfa.append(chunks[0][0])
        total.append(chunks[-1][0])
        aud.append(sum(c.size for _, c in chunks) / engine.sample_rate)
        i += 1
    ttfa = np.array(ttfa) * 1e3
    return {"ttfa_ms_p50": float(np.percentile(ttfa, 50)), "ttfa_ms_p90": float(np.percentile(ttfa, 90)),
            "ttfa_ms_p99": float(np.percentile(ttfa, 99)),
            "stream_rtf": float(np.median(np.array(total) / np.array(aud))), "n": len(ttfa)}


def chunk_fidelity(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int,
                   context_frames: int) -> list[dict]:
    """Streamed (chunked) against whole-utterance synthesis with the same noise: max |diff|, SNR and, where the
    pesq package is installed, PESQ-WB per query. Chunk borders are inaudible when the two match."""
    rows = []
    for i, ids in enumerate(queries):
        whole = engine.synth([ids], seed=i)[0]
        chunked = np.concatenate([c for _, c in stream(engine, ids, chunk_frames, context_frames, seed=i)])
        n = min(whole.size, chunked.size)
        diff = whole[:n] - chunked[:n]
        row = {"query": i, "max_abs_diff": float(np.max(np.abs(diff))), "snr_db": snr_db(whole, chunked),
               "length_diff_samples": int(whole.size - chunked.size)}
        try:
            row["pesq_wb"] = pesq_wb(whole[:n], chunked[:n], engine.sample_rate)
        except ImportError:
            pass
        rows.append(row)
    return rows


def stream_latent(engine: Engine, z, chunk_frames: int, context_frames: int):
    """The windowed decoding of `stream` for a latent already computed."""
    k, c = context_frames, chunk_frames
    if hasattr(z, "new_zeros"):
        import torch
        padded = torch.nn.functional.pad(z.float(), (k, k + c))
    else:
        padded = np.pad(np.asarray(z, dtype=np.float32), ((0, 0), (0, 0), (k, k + c)))
    for start, keep in windows(z.shape[-1], c, k):
        audio = engine.decode_window(padded[..., start:start + c + 2 * k])
        hop = audio.size // (c + 2 * k)
        yield start, audio[k * hop:(k + keep) * hop]


def cold_start(onnx_path: Path, text: str, repeats: int = 3) -> dict:
    """Seconds from starting a fresh Python process to the first audio chunk of `text` through piper's own runtime
    (`PiperVoice.load`, then the first chunk `synthesize` yields): interpreter start, imports, loading the model and
    the first sentence, as a user's process pays them. Median and worst of `repeats` runs, one after the other."""
    import subprocess
    import sys
    code = ("import sys, time\nfrom piper import PiperVoice\nvoice = PiperVoice.load(sys.argv[1])\n"
            "next(iter(voice.synthesize(sys.argv[2])))\nprint(repr(time.time()))")
    took = []
    for _ in range(repeats):
        start = time.time()
        proc = subprocess.run([sys.executable, "-c", code, str(onnx_path), text], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"piper's runtime failed on {onnx_path}: {proc.stderr.strip()[-300:]}")
        took.append(float(proc.stdout.strip().splitlines()[-1]) - start)
    return {"cold_start_ms": 1e3 * float(np.median(took)), "cold_start_ms_max": 1e3 * float(np.max(took)), "n": repeats}


# --- the whole suite for one engine, and the run on a GPU machine ---------------------------------------------

@dataclass
class SuiteConfig:
    min_queries: int = 100
    min_seconds: float = 10.0
    max_seconds: float = 60.0
    batch_sizes: tuple = (1, 2, 4, 8, 16, 32, 64)
    offline_seconds: float = 2.0
    chunk_frames: int = CHUNK_FRAMES
    context_frames: int = CONTEXT_FRAMES
    fidelity_queries: int = 5
    energy_seconds: float = 5.0
    warmup: int = 3

    @classmethod
    def from_params(cls, values: dict) -> "SuiteConfig":
        """The suite a notebook-05 parameter set asks for (its names are the fields'; other keys are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        picked = {k: v for k, v in values.items() if k in fields}
        if "batch_sizes" in picked:
            picked["batch_sizes"] = tuple(picked["batch_sizes"])
        return cls(**picked)


def run_suite(engine: Engine, queries: Sequence[Sequence[int]], ttfa_queries: Sequence[Sequence[int]],
              cfg: SuiteConfig, writer, threads: int | None = None,
              technique: Technique = Technique.HARDWARE) -> list[dict]:
    """Single-stream latency, offline throughput by batch size, streaming TTFA and chunk fidelity, utilisation,
    peak GPU memory and energy for one engine, written as result rows under the engine's own label. Energy rows
    are measured counters or absent with the reason; returns the throughput-by-batch rows. The rows are about the
    writer's model."""
    out = writer.about(engine.label, technique, backend=engine.backend, device=engine.device, threads=threads)
    torch_cuda = engine.device == "cuda"
    loads = writer.scalars.setdefault("timing_load", [])

    def load_status(load, scenario):
        loads.append({"variants": [engine.label], "scenario": scenario, **load.as_dict()})
        return dict(status="contended", reason=load.reason()) if load.contended else {}

    with Monitor() as mon:
        timing = single_stream(engine, queries, cfg.min_queries, cfg.min_seconds, cfg.max_seconds, cfg.warmup,
                               threads=threads or 1)
    busy = load_status(timing.load, "single-stream")
    summary = timing.summary()
    out.add_many({k: summary[k] for k in ("rtf", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99")},
                 n=len(timing.latencies_s), **busy)
    out.add("throughput_xrt", summary["throughput_xrt"], n=len(timing.latencies_s), **busy)
    util = mon.summary()
    out.add("util_pct", util["cpu_util_pct"], reference="CPU, single-stream")
    if util["gpu_util_pct"] is not None:
        out.add("gpu_util_pct", util["gpu_util_pct"], reference="GPU, single-stream")
    watch = Watched(threads or 1)
    rows = watch.run(lambda: offline_throughput(engine, queries, cfg.batch_sizes, cfg.offline_seconds))
    busy = load_status(watch.load, "offline")
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["throughput_xrt"])
    out.add("throughput_xrt_offline", best["throughput_xrt"], n=best["batches"], **busy)
    out.add("best_batch", best["batch"], **busy)
    watch = Watched(threads or 1)
    ttfa = watch.run(lambda: streaming_ttfa(engine, ttfa_queries, cfg.chunk_frames, cfg.context_frames,
                                            cfg.min_queries, cfg.min_seconds, cfg.max_seconds, cfg.warmup))
    busy = load_status(watch.load, "streaming")
    fid = chunk_fidelity(engine, ttfa_queries[:cfg.fidelity_queries], cfg.chunk_frames, cfg.context_frames)
    worst = min(r["snr_db"] for r in fid)
    failed = fidelity_failure(worst)  # a timing beside a failed fidelity check stands for nothing: no value
    for metric in STREAMING_TIMINGS:
        out.add(metric, None if failed else ttfa[metric], n=ttfa["n"],
                **(dict(status="failed", reason=failed) if failed else busy))
    out.add("chunk_snr_db", worst, reference="worst chunk vs whole utterance", n=len(fid))
    if all("pesq_wb" in r for r in fid):
        out.add("chunk_pesq_wb", min(r["pesq_wb"] for r in fid), reference="worst chunk vs whole utterance",
                n=len(fid))
    if torch_cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    batch = sorted(queries, key=len)[:best["batch"]]
    audio_s = 0.0
    with Monitor() as mon:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < cfg.energy_seconds:
            audio_s += sum(a.size for a in engine.synth(batch)) / engine.sample_rate
            engine.sync()
    util = mon.summary()
    if torch_cuda:
        import torch
        out.add("peak_gpu_mb", torch.cuda.max_memory_allocated() / 2**20, reference="at the best batch")
        if util["gpu_util_pct"] is not None:
            out.add("gpu_util_pct_offline", util["gpu_util_pct"], reference="GPU, best batch")
    if util["gpu_energy_j"] is not None and torch_cuda:
        out.add("energy_j_per_audio_s", util["gpu_energy_j"] / audio_s,
                reference="GPU board, NVML counter, best batch", n=1)
    elif util["cpu_energy_j"] is not None and not torch_cuda:
        out.add("energy_j_per_audio_s", util["cpu_energy_j"] / audio_s,
                reference="CPU package, RAPL counter, best batch", n=1)
    else:
        out.absent(["energy_j_per_audio_s"], mon.nvml_reason if torch_cuda else mon.rapl_reason)
    for r in rows:
        r.update(variant=engine.label, backend=engine.backend, device=engine.device, effective=engine.effective)
    return rows


KOKORO_GPU_ABSENT = ("Kokoro-82M ships here as int8 ONNX only (ConvInteger/MatMulInteger/DynamicQuantizeLSTM, CPU "
                     "kernels in ONNX Runtime); its PyTorch weights are on the hub, and the GPU machine's onnxruntime "
                     "is a CPU build, so no GPU run exists")


class _Keeping:
    """A voice that keeps what it said for the texts in `keep`, so that the audio of a timed pass is compared
    afterwards instead of synthesised a second time (a dict lookup per call: nothing next to a synthesis)."""

    def __init__(self, voice, keep: Sequence[str]):
        self.voice, self.keep, self.kept = voice, set(keep), {}

    def synthesize(self, t: str):
        out = self.voice.synthesize(t)
        if t in self.keep:
            self.kept[t] = out
        return out


def kokoro_cpu_suite(engines: Sequence[str], texts: Sequence[str], writer, threads: int = 1,
                     fidelity: int = 3, warmup: int = 1, speaker: str = "jf_alpha") -> pd.DataFrame:
    """A second architecture on the CPU engines: Kokoro-82M's shipped int8 ONNX on each of `engines` ('ort-cpu',
    'openvino-cpu'), single stream, timed interleaved on `texts`; the first `fidelity` outputs compared with the
    first engine's (PESQ, MCD, F0 error: the same file need not give the same audio on another runtime). Time to
    first audio is recorded absent (the graph returns the whole waveform), and so is the GPU, each with its reason.
    Returns one row per engine."""
    import pandas as pd
    model = "kokoro-82m"
    made = {e: voices.load_voice(model, backend=e, threads=threads, speaker=speaker) for e in engines}
    ref_engine = engines[0]
    subjects = {e: Subject(model, f"{model}-{e}", Technique.HARDWARE, parent=f"{model}-{ref_engine}", backend=e,
                           threads=threads) for e in engines}
    keeping = {e: _Keeping(v, texts[:fidelity]) for e, v in made.items()}  # the timed pass's audio is compared
    speed = evaluate.measure_speed(keeping, [text.Sentence(id=str(i), text=t) for i, t in enumerate(texts)], writer,
                                   baseline=ref_engine, subjects=subjects, warmup=warmup).set_index("name")
    ref = [keeping[ref_engine].kept[t].samples for t in texts[:fidelity]]
    rows = []
    for e, v in made.items():
        summ = {"size_mb": bench.size_mb(v.model_path)}
        if e != ref_engine:
            outs = [keeping[e].kept[t].samples for t in texts[:fidelity]]
            compared = [metrics.reference_metrics(r, o, v.sample_rate) for r, o in zip(ref, outs)]
            summ.update({m: float(np.mean([c[m] for c in compared])) for m in ("pesq_wb", "mcd_db", "f0_rmse_cents")})
        writer.add_many(subjects[e], summ, n=min(fidelity, len(texts)))
        writer.absent(subjects[e], ["ttfa_ms_p90"], "not streamable as shipped: the ONNX graph returns the whole "
                      "waveform, so the first audio comes with the last (see latency)")
        rows.append({"engine": e, **speed.loc[e, ["rtf", "rtf_ratio", "latency_ms_p50", "latency_ms_p90",
                                                  "latency_ms_p99", "throughput_xrt"]].to_dict(), **summ})
    writer.absent(Subject(model, f"{model}-gpu", Technique.HARDWARE, backend="ort-cuda", device="cuda"),
                  ["latency_ms_p90"], KOKORO_GPU_ABSENT)
    return pd.DataFrame(rows)


