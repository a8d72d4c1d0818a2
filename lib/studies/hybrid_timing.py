"""Does a hybrid decoder fit the decoder-alone speed target (issue 49 item 4)? The teacher voice with untrained
decoders in place of its own -- the 128- and 64-channel pruned decoders, the frame-rate decoder and hybrid decoders
(voices.hybrid_decoder: the teacher's first stages at a width, then an iSTFT head) -- exported as piper voices and
timed interleaved with the shipped file in ONNX Runtime, noise off, through the harness's one timing path (as notebook
04's width scan times its untrained frame-rate decoders). Weights do not change the time: nothing here trains."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from lib.core import text
from lib.core.results import ResultWriter, atomic_write_text, write_env
from lib.core.subject import Technique
from lib.harness import bench, evaluate
from lib.techniques import distill, export
from lib.voices import parts, synth as voices, teacher_bundle
from lib.voices.istft_decoder import FrameRateDecoder
from lib.voices.spec import Part, Source, VoiceSpec
from lib.studies.study_options import HybridTiming

_LOGGER = logging.getLogger(__name__)
UNTRAINED = Source(trained=False)
EXPORT_CHECK = "teacher-export-ort"  # the teacher module exported by export_voice: the students' exporter, timed too


def hybrid_name(width: int, keep_stages: int, n_fft: int) -> str:
    return f"hybrid{width}s{keep_stages}f{n_fft}"


def decoders(teacher, hybrids, dec_widths, istft) -> dict[Part, torch.nn.Module]:
    """The untrained decoders to time, by their part: HiFi-GAN students of `dec_widths`, the frame-rate decoder
    (`istft`: dim, blocks) and the hybrids (`hybrids`: (width, keep_stages, n_fft) each)."""
    out = {Part(f"dec{w}", "decoder", w, UNTRAINED): parts.build_part("decoder", parts.decoder_build(teacher, w))
           for w in dec_widths}
    if istft:
        dim, blocks = istft
        out[Part(f"istft{dim}x{blocks}", "istft_decoder", dim, UNTRAINED)] = FrameRateDecoder(
            teacher.hparams["inter_channels"], dim, blocks)
    for w, k, n in hybrids:
        dec = parts.build_part("hybrid_decoder", parts.hybrid_build(teacher, w, k, n))
        out[Part(hybrid_name(w, k, dec.config["n_fft"]), "hybrid_decoder", w, UNTRAINED)] = dec
    return {p: parts.fold_weight_norm(d) for p, d in out.items()}


def describe(part: Part, dec) -> dict:
    """The columns that say what a decoder is: kind, width, kept stages, n_fft and hop of an iSTFT."""
    cfg = getattr(dec, "config", {})
    return {"decoder": part.name, "kind": part.kind, "width": part.width, "keep_stages": cfg.get("keep_stages"),
            "n_fft": cfg.get("n_fft"), "istft_hop": getattr(dec, "hop", None) if part.kind != "decoder" else None}


def run(cfg: HybridTiming) -> pd.DataFrame:
    """Export each voice, count its cost, time all interleaved (rtf_ratio to the shipped file), and write
    hybrid_timing.csv (one row per voice), results.csv (the harness's tidy rows) and env.json into `cfg.out`."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    onnx_fp32, config = voices.piper_paths()
    sentences = text.harvard_sentences(list(cfg.lists))[:cfg.sentences]
    ids = teacher_bundle.sentence_ids(sentences[:cfg.cost_sentences])
    decs = decoders(teacher, cfg.hybrids, cfg.dec_widths, cfg.istft)
    shipped = VoiceSpec(backend="ort-cpu").name
    paths, info = {shipped: Path(onnx_fp32)}, {shipped: {"decoder": "teacher", "kind": "decoder", "width": 256}}
    costs = {shipped: bench.voice_cost(teacher, ids)}
    work = Path(cfg.work)
    paths[EXPORT_CHECK] = export.export_voice(teacher, work / "teacher", config)
    info[EXPORT_CHECK], costs[EXPORT_CHECK] = info[shipped], costs[shipped]
    for part, dec in decs.items():
        spec = VoiceSpec((part,), backend="ort-cpu")
        voice = distill.with_parts(teacher, decoder=dec)
        paths[spec.name] = export.export_voice(voice, work / spec.folder, config)
        info[spec.name], costs[spec.name] = describe(part, dec), bench.voice_cost(voice, ids)
        _LOGGER.info("exported %s (%s)", spec.name, paths[spec.name])
    quiet = dict(backend="ort-cpu", threads=cfg.threads, noise_scale=0.0, noise_w=0.0)
    timed = {n: voices.load_voice(model_path=p, **quiet) for n, p in paths.items()}
    writer = ResultWriter("recorded", "hybrid_timing", "piper-joe")  # from here the long runs wait: all is timed
    subjects = {n: writer.about(n, Technique.BASELINE if n == shipped else Technique.ARCHITECTURE_SCAN,
                                backend="ort-cpu", threads=cfg.threads, parent="" if n == shipped else shipped).subject
                for n in timed}
    speed = evaluate.measure_speed(timed, sentences, writer, baseline=shipped, warmup=cfg.warmup,
                                   repeats=cfg.repeats, subjects=subjects)
    for n, c in costs.items():
        writer.add_many(subjects[n], {k: c[k] for k in ("params", "gflop_per_audio_s", "dec_gflop_per_audio_s")},
                        n=len(ids))
    table = pd.DataFrame([{"variant": n, **info[n], "params": costs[n]["params"],
                           "dec_gflop_per_audio_s": costs[n]["dec_gflop_per_audio_s"],
                           "gflop_per_audio_s": costs[n]["gflop_per_audio_s"]} for n in timed])
    table = table.merge(
        speed[["name", "rtf", "rtf_ratio", "latency_ms_p50", "status"]].rename(columns={"name": "variant"}),
        on="variant")
    table = table.astype({c: "Int64" for c in ("keep_stages", "n_fft", "istft_hop", "params")})
    atomic_write_text(out / "hybrid_timing.csv", table.to_csv(index=False))
    atomic_write_text(out / "results.csv", writer.frame().to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg),
           "timing_load": writer.scalars.get("timing_load"), "sentences": [s.id for s in sentences]}
    write_env(out / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out,
                 table[["variant", "dec_gflop_per_audio_s", "rtf", "rtf_ratio", "status"]].to_string())
    return table
