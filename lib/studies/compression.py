"""Notebook 03's steps: where int8 hurts, what unstructured pruning costs, the structured decoder and its recovery
fine-tune, the long CPU runs' recovered decoders beside it, the compressed variants (PyTorch, OpenVINO, the split
voice, ONNX Runtime int8, bitsandbytes) handed to the one harness, and the values its closing findings state."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core.results import ResultWriter
from lib.core.subject import Technique
from lib.core.text import Sentence
from lib.harness import bench, evaluate, metrics
from lib.runtimes import bench_engines
from lib.studies import common
from lib.techniques import compress, export, packs
from lib.training import batches, loop as training
from lib.voices import piper_torch, synth as voices
from lib.voices.spec import Part, VoiceSpec

BNB_SCOPE = ("enc_p", "flow")  # the modules whose 1x1 convolutions bitsandbytes converts (the decoder has none)
BNB_MODES = ("int8", "nf4")
GPU_VARIANTS = ("gpu-fp16", "gpu-bf16", "gpu-bnb-int8", "gpu-bnb-nf4")  # measured on an H100 by notebook 05
GPU_RECORD = "outputs/recorded/h100/05_hardware_benchmark"
# the technique of a pruned decoder trained back: this run's and the long runs'
RECOVERY = Technique.STRUCTURED_RECOVERY
# the ONNX Runtime int8 conversions section 5 judges (compress.CONVERSIONS), in the harness's order
ORT_CONVERSIONS = ("ort-weight-int8-all", "ort-weight-int8-flow-dec", "ort-dynamic-int8-matmul",
                   "ort-dynamic-int8-conv", "ort-qdq-int8-all")






def noise_free_clips(model: str, sentences: Sequence[Sentence], *, length_scale: float, threads: int) -> dict:
    """The FP32 voice on ONNX Runtime with sampling noise off: the reference every variant is compared with."""
    voice = voices.load_voice(model, threads=threads, noise_scale=0.0, noise_w=0.0, length_scale=length_scale)
    return evaluate.synthesize_set(voice, sentences)


def least_sensitive(sens: pd.DataFrame) -> str:
    """The layer group whose int8 version is closest to FP32 (lowest MCD): the one the guided variant quantizes."""
    return sens.sort_values("mcd_db")["group"].iloc[0]


def unstructured_sweep(model: str, fp32, amounts: Sequence[float], sentences: Sequence[Sentence], reference: dict, *,
                       length_scale: float, threads: int) -> pd.DataFrame:
    """For each pruning fraction: magnitude-prune every conv weight, speak `sentences` with noise off, and compare with
    the FP32 `reference` (mean PESQ, STOI, MCD, F0 error); with the sparsity and the weights' size, raw and zipped."""
    rows = []
    for amount in amounts:
        pruned = compress.prune_unstructured(fp32, amount)
        voice = voices.load_voice(model, backend="torch-cpu", module=pruned, threads=threads, noise_scale=0.0,
                                  noise_w=0.0, length_scale=length_scale)
        outs = evaluate.synthesize_set(voice, sentences)
        scores = pd.DataFrame([metrics.reference_metrics(reference[k].samples, outs[k].samples, outs[k].sample_rate)
                               for k in outs])
        rows.append({"amount": amount, "sparsity": compress.weight_sparsity(pruned),
                     "size_mb": compress.state_dict_bytes(pruned) / 2**20,
                     "size_mb_zip": compress.state_dict_bytes(pruned, compressed=True) / 2**20,
                     **scores.mean().to_dict()})
    return pd.DataFrame(rows)


def teacher_sets(fp32, frontend, train: Sequence[Sentence], heldout: Sequence[Sentence], cache: Path | None = None):
    """The teacher's latents and waveforms (noise off) for the training sentences and for the held-out ones (kept
    in `cache`)."""
    return tuple(batches.teacher_latents(fp32, frontend.sentence_ids(s), [x.id for x in s], cache=cache)
                 for s in (train, heldout))


def structured_recovery(fp32, onnx_fp32: Path, latents, heldout, work_dir: Path, *, ratio: float, steps: int, lr: float,
                        batch: int, adversarial_steps: int, discriminators: Sequence[str], eval_every: int,
                        checkpoint_every: int, threads: int, device: str = "cpu"):
    """A copy of the voice whose decoder lost `ratio` of its channels (structured pruning), then trained `steps` steps
    to the FP32 decoder's waveforms with the shared stack: mel only, adversarial for the last `adversarial_steps`,
    a held-out mel/PESQ check every `eval_every` steps, resumable from `work_dir`, on `device`. Returns (model,
    training log)."""
    common.check_device(device)
    structured = piper_torch.load_piper_torch(onnx_fp32)
    structured.dec = compress.prune_structured(fp32.dec, ratio, latents.z[0])
    recipe = training.Recipe.adversarial_tail(steps, adversarial_steps, lr=lr, discriminators=tuple(discriminators),
                                              eval_every=eval_every, checkpoint_every=checkpoint_every)
    log = training.train_decoder(structured.dec, latents, recipe, work_dir, batch=batch, heldout=heldout,
                                 threads=threads, device=device,
                                 eval_fn=evaluate.heldout_pesq(heldout, limit=len(heldout.z)) if eval_every else None,
                                 progress="recovery")
    return structured, log


def pct(x: float) -> int:
    """A fraction as the whole percent a variant's name carries (0.3 -> 30)."""
    return int(x * 100)


def build_variants(fp32, onnx_fp32: Path, structured, sens: pd.DataFrame, calibration, work: Path, split: tuple, *,
                   unstructured_amount: float, structured_ratio: float, chunk_frames: int, context_frames: int,
                   skip: Sequence[str] = ()) -> tuple[list[evaluate.Variant], dict]:
    """Every compressed variant of section 5, in the harness's order, as evaluate.Variant; those named in `skip` are
    not built. `split` is (split folder, latent ONNX, decoder ONNX) of section 4. Returns the variants and `info`:
    the least sensitive group, the names of the guided int8 and structured variants, the layers torch int8 converted."""
    pt, tag, s = work / "torch", least_sensitive(sens).split()[0], pct(structured_ratio)
    split_dir, latent_onnx, decoder_onnx = split
    split_kw = dict(decoder_path=decoder_onnx, chunk_frames=chunk_frames, context_frames=context_frames)
    info = {"insensitive": least_sensitive(sens), "guided": f"ort-qdq-int8-{tag}", "structured": f"structured-{s}-ort",
            "torch_int8_layers": None}
    structured_onnx = functools.cache(lambda: compress.export_onnx(structured, work / "structured.onnx"))

    def torch_int8(name):
        model, info["torch_int8_layers"] = compress.quantize_dynamic_torch(fp32)
        return evaluate.torch_variant(name, Technique.TORCH_DYNAMIC_INT8, model, pt,
                                      extra={"quantized_layers": info["torch_int8_layers"]},
                                      convert={"torch_dynamic_int8": True})

    def unstructured(name):
        model = compress.prune_unstructured(fp32, unstructured_amount)
        return evaluate.torch_variant(name, Technique.UNSTRUCTURED_PRUNING, model, pt, extra={
            "sparsity": compress.weight_sparsity(model),
            "size_mb_zip": compress.state_dict_bytes(model, compressed=True) / 2**20})

    def structured_int8(name):  # only the least sensitive group in int8, as in the guided variant
        conversion = compress.OnnxConversion(name, Technique.STRUCTURED_INT8, "static", "structured_qdq.onnx",
                                             groups=(info["insensitive"],))
        return evaluate.onnx_variant(name, conversion.technique, conversion.convert(structured_onnx(), work,
                                                                                    calibration))

    recipes = {
        "fp32": lambda n: evaluate.onnx_variant(n, Technique.BASELINE, onnx_fp32, parent=""),
        "fp32-torch": lambda n: evaluate.torch_variant(n, Technique.BASELINE, fp32, pt),
        f"l1-unstructured-{pct(unstructured_amount)}": unstructured,
        "torch-dynamic-int8": torch_int8,
        "torch-bf16-autocast": lambda n: evaluate.torch_variant(n, Technique.BF16, fp32, pt, autocast_bf16=True),
        "openvino-f32": lambda n: evaluate.onnx_variant(n, Technique.RUNTIME, onnx_fp32, backend="openvino-cpu",
                                                        precision="f32"),
        "openvino-bf16": lambda n: evaluate.onnx_variant(n, Technique.BF16, onnx_fp32, backend="openvino-cpu",
                                                         precision="bf16"),
        "split-f32": lambda n: evaluate.onnx_variant(n, Technique.STATIC_SHAPE, latent_onnx, backend="split",
                                                     artefact=split_dir, precision="f32", **split_kw),
        "split-bf16": lambda n: evaluate.onnx_variant(n, Technique.STATIC_SHAPE_BF16, latent_onnx, backend="split",
                                                      artefact=split_dir, precision="bf16", **split_kw),
        **{c.name: (lambda n, c=c: evaluate.onnx_variant(n, c.technique, c.convert(onnx_fp32, work, calibration)))
           for c in map(compress.CONVERSIONS.get, ORT_CONVERSIONS)},
        info["guided"]: lambda n: evaluate.onnx_variant(n, Technique.ORT_GUIDED_INT8,  # made by section 1
                                                        Path(sens.set_index("group").loc[info["insensitive"], "file"])),
        info["structured"]: lambda n: evaluate.onnx_variant(n, RECOVERY, structured_onnx()),
        f"{info['structured']}-qdq-{tag}": structured_int8,
    }
    tags = [g.split()[0] for g in compress.SCOPES]  # the guided names any group could give, so a profile may name one
    check_skip(skip, list(recipes) + [f"bnb-{m}-1x1" for m in BNB_MODES]
               + [f"ort-qdq-int8-{t}" for t in tags] + [f"{info['structured']}-qdq-{t}" for t in tags])
    return [make(name) for name, make in recipes.items() if name not in skip], info


def long_recoveries(fp32, runs: Sequence[str], config: Path, work: Path, writer: ResultWriter, *,
                    root: Path = packs.LONG_ROOT) -> tuple[list[evaluate.Variant], dict[str, VoiceSpec]]:
    """The packs of the long CPU runs of the pruned decoder (`runs`, e.g. 'reg128/dec128-regress': `root`/<work>/<run>,
    their recipe, steps and machine-hours in each pack's config.json), each as the voice with that decoder, exported
    for ONNX Runtime and judged beside this run's short recovery as `<run>@cpu-long-ort` (technique RECOVERY, parent
    fp32), loaded and named as notebook 04 loads and names them (packs.one_part_voices). A pack that cannot
    be loaded, or is no HiFi-GAN decoder, is an absent row naming why. Returns (variants, {variant: its spec})."""
    long, absent, info, specs = packs.one_part_voices(fp32, runs, root)
    absent |= {n: f"long run {n} is a {info[n]['kind']}, not a pruned HiFi-GAN decoder" for n in long
               if info[n]["kind"] != "decoder"}
    for name, reason in absent.items():
        writer.about(name, RECOVERY, backend="ort-cpu").absent(["rtf", "dnsmos_p808"], reason)
    ort = {n: specs[n].on("ort-cpu") for n in long if n not in absent}
    return ([evaluate.onnx_variant(sp.name, RECOVERY, export.export_voice(long[n], work / "long" / sp.folder, config))
             for n, sp in ort.items()], {sp.name: sp for sp in ort.values()})


def recovery_budgets(structured: str, long_specs: dict[str, VoiceSpec], log, device: str) -> dict[str, str]:
    """Each recovered decoder's training budget by its variant, as notebook 04's verdicts name theirs
    (VoiceSpec.budget): this run's recovery (`structured`, trained `log.seconds` on `device`) and each long pack's
    machine-hours (`long_specs`: long_recoveries')."""
    here = VoiceSpec((Part(structured, "decoder"),)).budget({structured: log.seconds / 60}, device)
    return {structured: here, **{n: spec.budget({}, device) for n, spec in long_specs.items()}}


def check_skip(skip: Sequence[str], names: Sequence[str]) -> None:
    """`skip` may name only variants this notebook builds, and never the FP32 baseline every ratio divides by."""
    bad = [v for v in skip if v not in names or v == "fp32"]  # a typo would silently build a variant
    if bad:
        raise ValueError(f"skip_variants {bad}: name variants other than fp32 among {list(names)}")


def variants_table(variants: Sequence[evaluate.Variant]) -> pd.DataFrame:
    """What was built: each variant's technique, back-end and size on disk."""
    return pd.DataFrame([{"variant": v.name, "technique": v.technique.value, "backend": v.backend,
                          "artefact MB": bench.size_mb(v.artefact)} for v in variants])


def bitsandbytes_variants(fp32, save_dir: Path, writer: ResultWriter, *, skip: Sequence[str] = ()):
    """bitsandbytes int8 (LLM.int8()) and NF4 on the 1x1 convolutions of the text encoder and flow, as torch variants;
    where bitsandbytes cannot run, absent rows with the reason.
    Returns (variants, layers converted per mode, status)."""
    ok, reason = compress.bitsandbytes_status("int8")
    names = [f"bnb-{m}-1x1" for m in BNB_MODES]
    if not ok:
        for name in names:
            writer.about(name, Technique.BITSANDBYTES, backend="torch-cpu").absent(["rtf", "dnsmos_p808"], reason)
        return [], {}, reason
    out, layers = [], {}
    for mode, name in zip(BNB_MODES, names):
        if name in skip:
            continue
        bnb_model, converted = compress.bnb_convert(fp32, mode, scope=BNB_SCOPE)
        layers[mode] = len(converted)
        out.append(evaluate.torch_variant(name, Technique.BITSANDBYTES, bnb_model, save_dir,
                                          extra={"quantized_layers": len(converted)},
                                          convert={"bnb": mode, "scope": list(BNB_SCOPE)}))
    return out, layers, reason


def duration_predictor_int8(fp32, ids: Sequence[list[int]], writer: ResultWriter, *, threads: int) -> str:
    """Whether the duration predictor survives bitsandbytes int8: the voice speaks `ids` with only it converted; a
    divergence is a failed row with the reason. Returns what happened, in words."""
    dp_model, names = compress.bnb_convert(fp32, "int8", scope=("dp",))
    try:
        bench_engines.TorchEngine(dp_model, threads=threads).synth(list(ids))
        return f"int8 duration predictor ({len(names)} layers): durations stayed bounded"
    except ValueError as exc:
        writer.about("bnb-int8-duration-predictor", Technique.BITSANDBYTES, backend="torch-cpu").add(
            "rtf", None, status="failed", reason=str(exc))
        return f"int8 duration predictor ({len(names)} layers): {exc}"


def gpu_absent(writer: ResultWriter) -> None:
    """Without CUDA here, the GPU precisions are absent rows that point to the recorded H100 run."""
    import torch
    if torch.cuda.is_available():
        return
    for name in GPU_VARIANTS:
        writer.about(name, Technique.HALF_PRECISION_BNB, backend="torch-cuda", device="cuda").absent(
            ["rtf", "dnsmos_p808"], f"no CUDA device on this machine; measured on an H100: {GPU_RECORD}")




def recovery_summary(log, steps: int, final_loss_steps: int) -> dict:
    """The recovery fine-tune in numbers: steps, seconds per step, and the loss averaged over its last steps."""
    return dict(steps=steps, s_per_step=log.s_per_step, final_loss=float(np.mean(log.loss[-final_loss_steps:])))


def findings_facts(sens: pd.DataFrame, sweep: pd.DataFrame, table: pd.DataFrame, info: dict) -> dict:
    """The values the closing findings state: the int8 group that hurts most and the others' PESQ; speed and size of
    the int8 variants whose quality bounds are judged; the sweep's zipped sizes; every recovered decoder, this
    run's and the long runs' (variant, rtf_ratio, DNSMOS drop, WER rise; the smallest drop first); bitsandbytes."""
    t = table.set_index("variant")
    worst = sens.sort_values("pesq_wb").iloc[0]
    int8 = [v for v in ("ort-dynamic-int8-conv", "ort-qdq-int8-all", info["guided"], "ort-weight-int8-all")
            if v in t.index]
    return {"worst": worst["group"], "worst_pesq": worst["pesq_wb"],
            "other_groups": [(r.group, r.pesq_wb) for r in sens.itertuples() if r.group != worst["group"]],
            "int8": [(v, t.loc[v, "rtf_ratio"], t.loc[v, "size_ratio"]) for v in int8],
            "sweep_zip": [(100 * r.amount, r.size_mb_zip) for r in sweep.itertuples()],
            "unzipped": sweep["size_mb"].iloc[0],
            "recoveries": [(r.variant, r.rtf_ratio, r.dnsmos_drop, r.wer_increase)
                           for r in table[table["technique"] == RECOVERY].sort_values("dnsmos_drop").itertuples()],
            "bnb": [(v, t.loc[v, "dnsmos_drop"]) for v in t.index
                    if t.loc[v, "technique"] == Technique.BITSANDBYTES]}
