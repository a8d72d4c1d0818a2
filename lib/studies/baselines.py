"""Notebook 01's steps: where the pretrained voice's parameters and compute sit, whether its PyTorch rebuild is the
same voice, its quality and speed on both back-ends, and the other models in the same harness."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from lib.core.results import ResultWriter
from lib.core.subject import Technique
from lib.core.text import Sentence
from lib.harness import bench, evaluate
from lib.studies import common
from lib.voices import synth as voices

BACKENDS = ("ort-cpu", "torch-cpu")  # ONNX Runtime, the shipped graph; PyTorch, the rebuild every technique edits


def architecture(torch_voice, sentences: Sequence[Sentence]) -> pd.DataFrame:
    """Parameters and GFLOP per audio second by module (torch.utils.flop_counter over `sentences`), with each
    module's share of the compute; the row `total` sums them."""
    module = torch_voice.module
    flops, audio_s = {}, 0.0
    for s in sentences:
        out = []
        for k, v in bench.flops_by_module(lambda: out.append(torch_voice.synthesize(s.text)), module).items():
            flops[k] = flops.get(k, 0.0) + v
        audio_s += out[0].duration
    gflops = pd.Series({k: v / audio_s / 1e9 for k, v in flops.items()}, name="GFLOP per audio s")
    arch = pd.concat([pd.Series(bench.params_by_module(module), name="params"), gflops], axis=1).fillna(0)
    arch["compute share"] = arch["GFLOP per audio s"] / gflops["total"]
    arch["params share"] = arch["params"] / arch.drop(index="total")["params"].sum()
    return arch


def parity(model: str, module, sentences: Sequence[Sentence], *, length_scale: float, threads: int,
           max_abs_diff: float, max_rms_db: float) -> tuple[pd.DataFrame, bool]:
    """ONNX Runtime against the PyTorch rebuild with sampling noise and normalisation off: per-sentence differences,
    and whether every sentence has the same length, max |difference| < `max_abs_diff` and error energy below
    `max_rms_db` dB relative to the signal."""
    quiet = dict(noise_scale=0.0, noise_w=0.0, length_scale=length_scale, normalize=False, threads=threads)
    table = evaluate.compare_outputs(voices.load_voice(model, backend="ort-cpu", **quiet),
                                     voices.load_voice(model, backend="torch-cpu", module=module, **quiet), sentences)
    ok = bool((table["length_diff_samples"] == 0).all() and (table["max_abs_diff"] < max_abs_diff).all()
              and (table["rms_diff_db"] < max_rms_db).all())
    return table, ok


def judge_backends(voices_by_backend: dict, sentences: Sequence[Sentence], judges, writer: ResultWriter, *,
                   threads: int) -> pd.DataFrame:
    """Each back-end's voice speaks and is judged on `sentences` (rows added to `writer`); the per-clip table with a
    `backend` column."""
    return pd.concat([evaluate.evaluate_quality(v, sentences, judges, writer.about("fp32", backend=b, threads=threads)
                                                ).assign(backend=b)
                      for b, v in voices_by_backend.items()])


def speed(module, sentences: Sequence[Sentence], writer: ResultWriter, *, threads: Sequence[int],
          memory_threads: Sequence[int], settings: dict, warmup: int, repeats: int) -> pd.DataFrame:
    """The notebook's voice on both back-ends at each thread count, timed interleaved on the same sentences
    (`rtf_ratio` to ONNX Runtime at the first thread count); peak memory, each in a fresh process, for the thread
    counts in `memory_threads`."""
    timed, subjects, specs = {}, {}, {}
    for t in threads:
        for backend in BACKENDS:
            name, spec = f"{backend}/{t}", dict(name=writer.model, backend=backend, threads=t, **settings)
            if t in memory_threads:
                specs[name] = spec
            timed[name] = voices.load_voice(**spec, **({"module": module} if backend == "torch-cpu" else {}))
            subjects[name] = writer.about("fp32", backend=backend, threads=t, parent="fp32").subject
    return evaluate.measure_speed(timed, sentences, writer, baseline=f"ort-cpu/{threads[0]}", subjects=subjects,
                                  warmup=warmup, repeats=repeats, specs=specs).set_index("name")


def models_table(per_clip: pd.DataFrame, others: pd.DataFrame, others_speed: pd.DataFrame, *,
                 ours: str) -> pd.DataFrame:
    """Mean quality per model and variant (the Piper voice `ours` on ONNX Runtime as `pretrained`), with each other
    model's speed and size from the same run."""
    compare = pd.concat([per_clip[per_clip["backend"] == "ort-cpu"].assign(model=ours, variant="pretrained"), others])
    cols = [c for c in ["dnsmos_p808", "dnsmos_ovrl", "wer", "cer", "mcd_db", "f0_rmse_cents", "pesq_wb"]
            if c in compare]
    table = compare.groupby(["model", "variant"])[cols].mean()
    if len(others_speed):
        table = table.join(others_speed.set_index("model")[["rtf", "rtf_ratio", "latency_ms_p50", "size_mb"]],
                           on="model")
    return table


def models_points(table: pd.DataFrame, *, ours: str, rtf: float, size_mb: float) -> pd.DataFrame:
    """One point per pretrained model for the quality-against-speed plot; the Piper voice's RTF and size come from
    this run's timing and file."""
    pts = table.reset_index()
    pts = pts[pts["variant"] == "pretrained"].set_index("model")
    pts.loc[ours, ["rtf", "size_mb"]] = [rtf, size_mb]
    return pts


def listening_clips(writer: ResultWriter, sentence_id: str, *, torch_quality: bool, other_models: Sequence[str],
                    absent: dict) -> list[tuple[str, str, str]]:
    """(model, backend, wav path) of every clip this run spoke for one sentence."""
    ours = writer.model
    pairs = [(ours, "ort-cpu", "fp32")] + ([(ours, "torch-cpu", "fp32")] if torch_quality else [])
    pairs += [(m, "ort-cpu" if m == "kokoro-82m" else "torch-cpu", m) for m in other_models if m not in absent]
    return [(m, b, str(common.clip_path(writer, v, b, sentence_id))) for m, b, v in pairs]


def record(writer: ResultWriter, *, voices_by_backend: dict, module, arch: pd.DataFrame, flop_sentences: int,
           parity_table: pd.DataFrame, parity_threads: int) -> None:
    """Sizes and parameter counts per back-end, the compute per audio second, and the parity check's worst case."""
    for backend, v in voices_by_backend.items():
        out = writer.about("fp32", backend=backend, threads=1)
        out.add("size_mb", bench.size_mb(v.model_path))
        out.add_many(bench.param_counts(module))
    writer.about("fp32", backend="torch-cpu", threads=1).add(
        "gflop_per_audio_s", arch.loc["total", "GFLOP per audio s"], n=flop_sentences)
    worst = parity_table.agg({"length_diff_samples": "max", "max_abs_diff": "max", "rms_diff_db": "max",
                              "pesq_wb": "mean"})
    writer.about("fp32-parity", Technique.PARITY, parent="fp32", backend="torch-cpu",
                 threads=parity_threads).add_many(worst.to_dict(), n=len(parity_table))
