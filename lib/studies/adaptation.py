"""Notebook 02's steps: the adaptation target (a real other speaker on the teacher's timing, or a WORLD shift of the
teacher), every method trained on the same data and step budget, every adapted voice through the one harness with
its pitch shift and its speaker similarity to the target, and Track B (SpeechT5 on recordings, when the hub answers)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core import audio as lab_audio
from lib.core.results import LONG_RUN, RECORDED, ResultWriter
from lib.core.text import Sentence
from lib.harness import bench, evaluate, metrics
from lib.harness.judges import Judges, speaker_similarity_per_clip
from lib.jobs.adapt_job import target_voice
from lib.studies import common
from lib.techniques import adapt_targets, finetune
from lib.training import batches
from lib.training.loop import Recipe
from lib.voices import synth as voices

TRAINING_METRICS = ("trainable_params", "trainable_pct_of_full", "adapter_size_mb", "train_s_per_step", "train_peak_rss_mb")
FINAL_LOSS_STEPS = 3  # a method's final loss is the mean over its last this many steps
F0_FRAME_MS = 5.0  # frame period of the F0 tracks shown in section 1


class SpokenOnce:
    """A deterministic voice (no sampling noise) that speaks each text once and returns the same clip when asked
    again: the target speaker's clip of a sentence is wanted by the training set, section 1, the reference, the
    judged target and the speaker's own judging, and each costs a synthesis plus a WORLD analysis. Every other
    attribute is the wrapped voice's."""

    def __init__(self, voice):
        self._voice, self._spoken = voice, {}

    def synthesize(self, text: str):
        if text not in self._spoken:
            self._spoken[text] = self._voice.synthesize(text)
        return self._spoken[text]

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._voice, name)


def check_methods(methods: Sequence[str], unmerged_timing: str, device: str) -> dict:
    """{method name: (method, LoRA rank)} for `methods`; an `unmerged_timing` that is not one of them, or a CUDA
    device this machine lacks, is an error that says so."""
    plan = {m: finetune.parse_method(m) for m in methods}
    if unmerged_timing and unmerged_timing not in plan:
        raise ValueError(f"unmerged_timing {unmerged_timing!r} is not one of methods {list(methods)}")
    common.check_device(device)
    return plan


def target(target_speaker: str, *, semitones: float, formant_ratio: float, threads: int):
    """The adaptation target: `voice:speaker` (e.g. kokoro-82m:jf_alpha) reading the same text on the teacher's
    timing (its clips spoken once each, see SpokenOnce), or, for '', the teacher's own voice WORLD-shifted by
    `semitones` and `formant_ratio`."""
    if not target_speaker:
        return adapt_targets.VoiceShift(semitones=semitones, formant_ratio=formant_ratio)
    shift = target_voice(target_speaker, threads)
    shift.voice = SpokenOnce(shift.voice)
    return shift


def training_set(teacher, frontend, sentences: Sequence[Sentence], shift, path: Path) -> tuple:
    """The teacher, noise off, on each training sentence with its alignment, and the target's waveform on the same
    frames (batches.aligned_set); saved to `path` for the training processes. Returns (set, path)."""
    data = batches.aligned_set(teacher, frontend.sentence_ids(sentences), [s.id for s in sentences],
                               target=shift, sample_rate=frontend.sample_rate, texts=[s.text for s in sentences])
    return data, data.save(path)


def target_example(teacher, shift, sentence: Sentence, *, threads: int) -> dict:
    """One sentence as the teacher (noise off) and as the target says it: the clips, their F0 tracks (s, Hz; NaN
    unvoiced), mean spectral envelopes (Hz, dB) and the target's F0 shift in semitones."""
    quiet = voices.load_voice(backend="torch-cpu", module=teacher, threads=threads, noise_scale=0.0, noise_w=0.0)
    teacher_clip = quiet.synthesize(sentence.text)
    sr = teacher_clip.sample_rate
    clips = {"teacher": teacher_clip.samples,
             "target": adapt_targets.ShiftedVoice(quiet, shift).synthesize(sentence.text).samples}
    out = {"clips": clips, "sample_rate": sr, "f0": {}, "envelope": {},
           "f0_shift": metrics.f0_shift_semitones([clips["teacher"]], [clips["target"]], sr)}
    for label, samples in clips.items():
        f0 = metrics.f0_track(samples, sr, frame_ms=F0_FRAME_MS)
        out["f0"][label] = (np.arange(len(f0)) * F0_FRAME_MS / 1000, np.where(f0 > 0, f0, np.nan))
        env_db = metrics.mean_envelope_db(samples, sr)
        out["envelope"][label] = (np.linspace(0, sr / 2, len(env_db)), env_db)
    return out


def recipe(method: str, *, steps: int, lr_full: float, lr_lora: float, adversarial_steps: int,
           discriminators: Sequence[str], checkpoint_every: int, f0_weight: float) -> dict:
    """The shared recipe's settings for one method: its learning rate, mel only until the last `adversarial_steps`."""
    return dict(steps=steps, lr=lr_full if method == "full" else lr_lora, warmup_steps=max(0, steps - adversarial_steps),
                discriminators=discriminators, adversarial=adversarial_steps > 0, checkpoint_every=checkpoint_every,
                f0_weight=f0_weight)


def train_methods(plan: dict, teacher, data, data_path: Path, onnx: Path, work: Path, *, recipe_kw: dict, batch: int,
                  frames: int, threads: int, device: str, memory_probe: bool, card: dict) -> tuple[dict, dict, pd.DataFrame]:
    """Train every method of `plan` on the same data and step budget (a finished run in `work`/<method> is only
    loaded), save its adapter with a model card, and measure its peak memory in a fresh process when
    `memory_probe`. Returns ({method: training log}, {method: Adapted}, the table of training costs)."""
    logs, adapted, rows = {}, {}, []
    for name, (method, rank) in plan.items():
        rec = recipe(method, **recipe_kw)
        spec = dict(onnx=str(onnx), data=str(data_path), method=method, rank=rank, recipe=rec, batch=batch,
                    frames=frames, ckpt_dir=str(work / name), threads=threads, device=device)
        peak = bench.training_peak_mb(finetune.train_job, spec, work / name) if memory_probe else np.nan
        a = adapted[name] = finetune.prepare(teacher, method, rank=rank or 8)
        logs[name] = finetune.train_adapted(a, data, Recipe(**rec), work / name, batch=batch, frames=frames,
                                            threads=threads, progress=None)
        saved = a.save(work / f"{name}-adapter", base=voices.piper_base_id(), card=dict(card, recipe=rec))
        rows.append({"method": name, "trainable_params": a.trainable_params(), "adapter_size_mb": bench.size_mb(saved),
                     "train_s_per_step": logs[name].s_per_step, "train_peak_rss_mb": peak,
                     "final_loss": float(np.mean(logs[name].loss[-FINAL_LOSS_STEPS:])),
                     "lora_layers": len(a.targets) if a.is_peft else 0, "nf4_layers": len(a.quantized)})
    table = pd.DataFrame(rows)
    full = table.set_index("method")["trainable_params"].get("full", np.nan)
    table["trainable_pct_of_voice"] = 100 * table["trainable_params"] / voice_params(teacher)
    table["trainable_pct_of_full"] = 100 * table["trainable_params"] / full
    return logs, adapted, table


def voice_params(teacher) -> int:
    """Parameters of the whole voice (the inference path rebuilt from the ONNX file)."""
    return sum(p.numel() for p in teacher.parameters())


def long_run_adaptations(teacher, runs: Sequence[str], target: str, root: Path = RECORDED / "training") -> tuple:
    """The packs of the long CPU adaptation runs (`root`/<work>/<method>/, e.g. adaptlora8/lora-r8) trained for
    `target`, each merged into a copy of the teacher and named `<method>@cpu-long`: ({name: voice}, {name: why it is
    absent}, a table of each loaded pack's trainable parameters, steps and machine-hours, with the share of the
    long full fine-tuning run's trainable parameters where one is loaded)."""
    found, absent, rows = {}, {}, []
    for run in runs:
        name = f"{Path(run).name}@{LONG_RUN}"
        try:
            found[name], info = finetune.adaptation_for(teacher, Path(root) / run, target)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            absent[name] = f"long run {run}: {type(exc).__name__}: {str(exc)[:200]}"
            continue
        rows.append({"method": name, "trainable_params": info.get("trainable_params", np.nan),
                     "steps": info.get("steps"), "machine_hours": info.get("hours"), "device": info.get("device")})
    table = pd.DataFrame(rows, columns=["method", "trainable_params", "steps", "machine_hours", "device"])
    full = table.set_index("method")["trainable_params"].get(f"full@{LONG_RUN}", np.nan)
    table["trainable_pct_of_full"] = 100 * table["trainable_params"] / full
    return found, absent, table


def judged_variants(teacher, adapted: dict, shift, writer: ResultWriter, work: Path, *, model: str, recorded_roots: dict,
                    unmerged_timing: str, long_runs: Sequence[str] = ()) -> tuple[list, pd.DataFrame]:
    """What the harness judges: the teacher (a fresh copy, as every adapted voice), the target, each method merged,
    the adapters recorded on other devices for this target (absent rows for those without one), the packs of the
    long CPU runs in `long_runs` (long_run_adaptations) and the method in `unmerged_timing` with its adapter still
    unmerged. Returns (the variants, the long runs' table)."""
    pt = work / "torch"
    target_variant = evaluate.Variant(
        "target", "target", "torch-cpu+world",
        lambda **kw: SpokenOnce(adapt_targets.ShiftedVoice(voices.load_voice(backend="torch-cpu", module=teacher, **kw),
                                                           shift)), parent="")
    out = [evaluate.torch_variant("teacher", "baseline", copy.deepcopy(teacher), pt, parent=""), target_variant]
    out += [evaluate.torch_variant(name, "finetune", a.merged(), pt, parent="teacher") for name, a in adapted.items()]
    recorded, absent = finetune.recorded_adaptations(teacher, recorded_roots, shift.describe())
    long, long_absent, long_table = long_run_adaptations(teacher, long_runs, shift.describe())
    out += [evaluate.torch_variant(name, "finetune", voice, pt, parent="teacher")
            for name, voice in {**recorded, **long}.items()]
    for name, why in {**absent, **long_absent}.items():
        writer.absent(model=model, variant=name, metrics=["secs", "wer"], technique="finetune", backend="torch-cpu",
                      reason=why)
    if unmerged_timing:
        out.append(evaluate.torch_variant(f"{unmerged_timing}-unmerged", "finetune", adapted[unmerged_timing].voice, pt,
                                          parent="teacher",
                                          convert={"peft_adapter": str(work / f"{unmerged_timing}-adapter")}))
    return out, long_table


def _clips(writer: ResultWriter, folder: str, ids: Sequence[str]) -> list:
    return [lab_audio.Audio(*lab_audio.read_wav(writer.dir / "audio" / folder / f"{i}.wav")) for i in ids]


def pitch_shifts(variants: Sequence, writer: ResultWriter, ids: Sequence[str], *, model: str, threads: int) -> dict:
    """Each variant's F0 shift from the teacher (semitones, median over frames voiced in both) on the noise-free
    clips of sentences `ids`, written as `f0_shift_semitones` rows; the first variant is the teacher."""
    folder = lambda v: evaluate.clip_dir_name(v.name, v.backend)  # noqa: E731
    teacher = [c.samples for c in _clips(writer, folder(variants[0]), ids)]
    shifts = {}
    for v in variants:
        clips = _clips(writer, folder(v), ids)
        shifts[v.name] = metrics.f0_shift_semitones(teacher, [c.samples for c in clips], clips[0].sample_rate)
        writer.add(model=model, variant=v.name, metric="f0_shift_semitones", value=shifts[v.name], technique=v.technique,
                   parent=v.parent, backend=v.backend, threads=threads, reference="teacher")
    return shifts


def speaker_similarities(variants: Sequence, sentences: Sequence[Sentence], shift, judges: Judges,
                         writer: ResultWriter, *, model: str, real_speaker: bool,
                         secs_sentences: int) -> tuple[str, pd.DataFrame]:
    """SECS of every variant to the target speaker on the first `secs_sentences` held-out sentences (pairs of
    different sentences only), and the speaker's self-similarity, the ceiling. With a real speaker its own clips are
    judged first (variant `target-speaker`: DNSMOS, WER); else the WORLD-shifted target is the speaker. Returns the
    speaker's variant name and the SECS sentence by sentence (variant, id, secs), the sample the verdicts resample."""
    if real_speaker:
        evaluate.evaluate_quality(shift.voice, sentences, judges, writer, model=model, variant="target-speaker",
                                  technique="target", backend="ort-cpu")
    speaker = "target-speaker" if real_speaker else "target"
    speaker_dir = "target-speaker__ort-cpu" if real_speaker else evaluate.clip_dir_name("target", "torch-cpu+world")
    ids = [s.id for s in sentences[:secs_sentences]]
    secs, secs_self = speaker_similarity_per_clip({v.name: _clips(writer, evaluate.clip_dir_name(v.name, v.backend), ids)
                                                   for v in variants if v.name != speaker}, _clips(writer, speaker_dir, ids))
    keys = {v.name: dict(technique=v.technique, backend=v.backend, parent=v.parent) for v in variants}
    keys["target-speaker"] = dict(technique="target", backend="ort-cpu", parent="")
    per_sentence = {**secs, speaker: secs_self}
    for name, value in per_sentence.items():
        writer.add(model=model, variant=name, metric="secs", value=float(value.mean()), **keys[name],
                   reference=f"{speaker} (other sentences)", n=len(ids))
    clips = pd.DataFrame([{"variant": name, "id": i, "secs": float(x)}
                          for name, values in per_sentence.items() for i, x in zip(ids, values)])
    return speaker, clips


def record_training(train_table: pd.DataFrame, writer: ResultWriter, *, model: str, threads: int) -> None:
    """Each method's training costs as result rows (peak memory only where it was measured; a long run's pack has
    only its trainable parameters and their share of full's)."""
    for _, tr in train_table.iterrows():
        for metric in TRAINING_METRICS:
            if metric not in tr or np.isnan(tr[metric]):  # memory_probe off, or a long run's pack
                continue
            writer.add(model=model, variant=tr["method"], metric=metric, value=float(tr[metric]), technique="finetune",
                       parent="teacher", backend="torch-cpu", threads=threads)


def evaluate_all(variants: Sequence, sentences: Sequence[Sentence], judges: Judges, writer: ResultWriter, *,
                 model: str, shift, train_table: pd.DataFrame, real_speaker: bool, settings: dict, threads: int,
                 train_threads: int, reference_limit: int, secs_sentences: int, **timing) -> tuple:
    """The harness on every variant (quality and reference metrics against the target with noise off; `rtf_ratio`
    to the teacher, the target untimed; `timing`: speed_sentences, warmup, repeats, memory), then the pitch shifts,
    the speaker similarities and the training costs as rows. Returns (per-clip table, speed table, speaker name, SECS
    per sentence)."""
    per_clip, speed = evaluate.evaluate_variants(variants, sentences, judges, writer, model=model, baseline="target",
                                                 settings=settings, threads=threads, reference_limit=reference_limit,
                                                 paired=True, speed_baseline="teacher", untimed=["target"], **timing)
    pitch_shifts(variants, writer, [s.id for s in sentences[:reference_limit]], model=model, threads=threads)
    speaker, secs_clips = speaker_similarities(variants, sentences, shift, judges, writer, model=model,
                                               real_speaker=real_speaker, secs_sentences=secs_sentences)
    record_training(train_table, writer, model=model, threads=train_threads)
    return per_clip, speed, speaker, secs_clips


def hub_track(hub_model: str, hub_dataset: str, hub_methods: Sequence[str], work: Path, judges: Judges,
              writer: ResultWriter, **kw) -> tuple:
    """Track B: SpeechT5 fine-tuned on `hub_dataset` by each of `hub_methods` (lib.jobs.speecht5_bench; `kw`:
    steps, train_limit, eval_limit, speaker, lr_full, lr_lora, batch, device). Returns (the methods' table, their
    training curves, the table joined with each method's mean quality), or three Nones when Track B is off or the hub
    does not answer (then an absent row says why)."""
    if hub_model not in ("", "speecht5"):
        raise ValueError(f"hub_model must be 'speecht5' or '' (Track B off), got {hub_model!r}")
    if not hub_model:
        return None, None, None
    from lib.jobs import speecht5_bench
    from lib.voices import hub
    spec = hub.HUB_MODELS[hub_model]
    steps = kw.pop("steps")
    try:
        table, curves, clips = speecht5_bench.speecht5_track(spec.model, spec.vocoder, hub_dataset, hub_methods, steps,
                                                             work, judges, writer, **kw)
    except hub.HubUnavailable as exc:
        writer.absent(model=hub_model, variant="track-b", metrics=["trainable_params", "mcd_db"], technique="finetune",
                      backend="torch-cpu", reason=f"Track B needs the hub: {exc}")
        print(f"Track B absent here: {exc}")
        return None, None, None
    quality = clips.groupby("variant")[[c for c in ["mcd_db", "f0_rmse_cents", "pesq_wb", "dnsmos_p808", "wer"]
                                        if c in clips]].mean()
    return table, curves, table.set_index("variant").join(quality, how="outer")


def training_curves(logs: dict) -> pd.DataFrame:
    """Every method's losses by step in one table (column `method`)."""
    return pd.concat([lg.frame.assign(method=n) for n, lg in logs.items()], ignore_index=True)


def method_summaries(table: pd.DataFrame, plan: dict) -> dict:
    """For the findings: each trained method's SECS, share of full's trainable parameters (%), F0 shift and WER."""
    t = table.set_index("variant")
    return {m: t.loc[m, ["secs", "trainable_pct_of_full", "f0_shift_semitones", "wer"]] for m in plan if m in t.index}
