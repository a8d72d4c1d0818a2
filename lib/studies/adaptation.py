"""Notebook 02's steps: the target speaker (an LJSpeech folder, made by the lab from another voice or given by the
user), the posterior encoder, every method trained with piper's objective on the same recordings and budget, every
adapted voice through the one harness with its pitch shift and its speaker similarity to the speaker, and Track B
(SpeechT5 on recordings, when the hub answers)."""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core import audio as lab_audio, registry
from lib.core import text as textmod
from lib.core.params import ROOT
from lib.core.results import LONG_RUN, RECORDED, UNMERGED, ResultWriter
from lib.core.subject import Technique
from lib.core.text import Sentence
from lib.data import ljspeech
from lib.harness import bench, evaluate, metrics
from lib.harness.judges import Judges, speaker_similarity_per_clip
from lib.jobs import speaker_job
from lib.studies import common
from lib.techniques import finetune, speaker_adapt
from lib.training import ledger, posterior
from lib.training import vits_objective as vo
from lib.voices import piper_torch
from lib.voices import synth as voices

_LOGGER = logging.getLogger(__name__)

TRAINING_METRICS = ("trainable_params", "trainable_pct_of_full", "adapter_size_mb", "train_s_per_step",
                    "train_peak_rss_mb")
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


VOICE_SPEC_HINT = "'<voice>:<speaker>' (e.g. kokoro-82m:jf_alpha) or the path of an LJSpeech folder"


@dataclass
class Speaker:
    """The target speaker: its folder, its recordings split into training and validation, a voice that speaks any
    text as the speaker (the lab's own target) or None (a user's recordings), and a description."""
    folder: Path
    train: list
    validation: list
    voice: object | None
    description: str


class RecordedVoice:
    """The speaker's own recordings as a voice: `synthesize(text)` returns the recording of that transcript."""

    def __init__(self, recordings: Sequence[ljspeech.Recording], name: str = "target-speaker"):
        self._by_text = {r.text: r for r in recordings}
        self.name, self.sample_rate = name, recordings[0].sample_rate

    def synthesize(self, text: str):
        if text not in self._by_text:
            raise KeyError(f"the speaker has no recording of {text[:60]!r}")
        r = self._by_text[text]
        return lab_audio.Audio(r.samples, r.sample_rate)


def speaker(target_dataset: str, folder: Path, *, lists: Sequence[int], validation: int, sample_rate: int,
            threads: int) -> Speaker:
    """`target_dataset` as a Speaker: '<voice>:<speaker>' has the lab write that voice reading Harvard `lists` at its
    own timing into `folder` (kept once written); anything else is an LJSpeech folder (relative paths from the
    repository root). The last `validation` recordings are the validation split."""
    other, sep, who = target_dataset.partition(":")
    voice = None
    if sep and other in voices.VOICE_NAMES:
        voice = SpokenOnce(voices.load_voice(other, threads=threads, **({"speaker": who} if who else {})))
        path = speaker_adapt.speaker_folder(voice, textmod.harvard_sentences(list(lists)), folder)
        span = f"list {lists[0]}" if len(lists) == 1 else f"lists {lists[0]}-{lists[-1]}"
        about = f"{other} ({who}) reading Harvard {span} at its own timing (written by the lab)"
    else:
        path = Path(target_dataset) if Path(target_dataset).is_absolute() else ROOT / target_dataset
        if not path.exists():
            raise ljspeech.DatasetError(f"target_dataset {target_dataset!r}: {path} does not exist ({VOICE_SPEC_HINT})")
        about = f"the recordings in {target_dataset}"
    train, val = ljspeech.split(ljspeech.read_folder(path, sample_rate), validation)
    return Speaker(path, train, val, voice, f"{about}: {len(train)} for training, {len(val)} for validation")


def posterior_pack(pack: str, teacher, frontend, work: Path, *, steps: int, sentences: Sequence[Sentence],
                   threads: int) -> tuple[Path, dict]:
    """The posterior encoder's pack: `pack` (relative to the repository root) where it loads, else bootstrapped here
    on `sentences` for `steps` into `work`. Returns (its folder, its config, with `round_trip` on held-out list 31)."""
    path = ROOT / pack if pack else None
    try:
        if path is None:
            raise ValueError("no pack named")
        enc_q = posterior.load(path, teacher.hparams, teacher)  # another voice's pack is refused: bootstrapped anew
    except ValueError as exc:
        path = work / "posterior"
        pairs = posterior.Pairs.of_teacher(teacher, frontend.sentence_ids(sentences))
        recipe = speaker_job.PosteriorRun(work=str(work), steps=steps, threads=threads).recipe()
        enc_q, _ = posterior.bootstrap(teacher.hparams, pairs, recipe, work / "posterior-train", threads=threads,
                                       progress=None)
        posterior.save(enc_q, path, teacher.hparams, {"steps": steps, "why_here": str(exc)})
    held = posterior.Pairs.of_teacher(teacher, frontend.sentence_ids(textmod.harvard_sentences([31])[:4]), seed=1000)
    check = posterior.round_trip(enc_q, teacher.dec, held, teacher.sample_rate, limit=4)
    return path, {**json.loads((path / "config.json").read_text()), "round_trip": check}


def alignment_check(teacher, enc_q_pack: Path, spk: Speaker, frontend, limit: int = 12) -> pd.DataFrame:
    """How well MAS aligns recordings with their text through the posterior encoder: the speaker's first `limit`
    training recordings beside the teacher's own audio of the same sentences (the control), each as the correlation
    of MAS's durations with the teacher's (posterior.alignment_agreement): mean and range."""
    enc_q = posterior.load(enc_q_pack, teacher.hparams)
    recs = spk.train[:limit]
    hop = piper_torch.hop_length(teacher)
    own = vo.from_recordings(recs, frontend, hop)
    pairs = posterior.Pairs.of_teacher(teacher, [p.tolist() for p in own.phonemes])
    control = vo.build(own.ids, own.phonemes, [w.reshape(-1) for w in pairs.latents.wav], hop, teacher.sample_rate)
    rows = []
    for name, utts in (("the teacher's own audio", control), ("the speaker's recordings", own)):
        r = posterior.alignment_agreement(teacher, enc_q, utts, limit)
        rows.append({"recordings": name, "duration correlation (mean)": float(np.mean(r)), "min": float(np.min(r)),
                     "max": float(np.max(r)), "n": len(r)})
    return pd.DataFrame(rows)


def method_table(plan: dict, teacher, enc_q_pack: Path) -> pd.DataFrame:
    """What each method trains and keeps frozen, with its trainable parameters (share of the voice's) and, for an
    adapter, how many layers of the decoder, the flow and the text path carry one (finetune.target_counts)."""
    enc_q = posterior.load(enc_q_pack, teacher.hparams)
    rows = []
    for name in plan:
        m = speaker_adapt.Method.parse(name)
        prepared = speaker_adapt.prepare(teacher, m, enc_q)
        n = prepared.trainable_params()
        layers = finetune.target_counts(prepared.targets) if prepared.peft is not None else {}
        rows.append({"method": name, "trains": m.trains, "frozen": m.frozen, "trainable_params": n,
                     "trainable_pct_of_voice": 100 * n / voice_params(teacher),
                     **{f"adapted layers, {part}": count for part, count in layers.items()}})
    return pd.DataFrame(rows)


def train_methods(plan: dict, teacher, spk: Speaker, enc_q_pack: Path, work: Path, *, run: speaker_job.SpeakerRun,
                  lr_full: float, lr_lora: float, memory_probe: bool) -> tuple[dict, dict, pd.DataFrame]:
    """Train every method of `plan` on the speaker's folder with the same budget (`run`'s steps, batch, threads),
    each a SpeakerRun in `work`/<method> packed to `work`/<method>-adapter (a finished run is only loaded); its peak
    memory in a fresh process when `memory_probe`. Returns ({method: curve}, {method: adapter folder}, costs)."""
    curves, folders, rows = {}, {}, []
    for name, (method, _) in plan.items():
        cfg = replace(run, work=str(work / name), dataset=str(spk.folder), method=name, posterior=str(enc_q_pack),
                      out=str(work / f"{name}-adapter"), lr=lr_full if method in finetune.FULL else lr_lora)
        peak = (bench.training_peak_mb(speaker_job.train_from_spec, asdict(cfg), work / name / "train") if memory_probe
                else np.nan)
        folders[name] = speaker_job.run_speaker(cfg, ledger_path=None)
        curves[name] = pd.read_csv(work / name / "train" / "curve.csv")
        info = json.loads((folders[name] / "config.json").read_text())
        last = curves[name].iloc[-1]
        rows.append({"method": name, "trainable_params": info["trainable_params"],
                     "adapter_size_mb": sum(bench.size_mb(p) for p in speaker_adapt.shipped_weights(folders[name])),
                     "train_s_per_step": last["seconds"] / last["step"], "train_peak_rss_mb": peak,
                     "final_loss": float(curves[name]["loss_g"].tail(FINAL_LOSS_STEPS).mean()),
                     "lora_layers": info["lora_layers"], "nf4_layers": info["nf4_layers"],
                     **{f"validation_{k}": v for k, v in info["judged"].items()}})
    table = pd.DataFrame(rows)
    table["trainable_pct_of_voice"] = 100 * table["trainable_params"] / voice_params(teacher)
    full = table.set_index("method")["trainable_params"].get("full", np.nan)
    table["trainable_pct_of_full"] = 100 * table["trainable_params"] / full
    return curves, folders, table


def voice_params(teacher) -> int:
    """Parameters of the whole voice (the inference path rebuilt from the ONNX file)."""
    return sum(p.numel() for p in teacher.parameters())


def long_run_adaptations(teacher, runs: Sequence[str], root: Path = RECORDED / "training") -> tuple:
    """The packs of the long adaptation runs (`root`/<run>, e.g. speaker/lora-r8), each loaded into a copy of the
    teacher and named `<method>@cpu-long`: ({name: voice}, {name: why it is absent}, a table of each pack's trainable
    parameters, steps and machine-hours, the validation WER and SECS its checkpoint was chosen by)."""
    found, absent, rows = {}, {}, []
    for run in runs:
        name = f"{Path(run).name}@{LONG_RUN}"
        try:
            found[name] = speaker_adapt.load(teacher, Path(root) / run)
            info = json.loads((Path(root) / run / "config.json").read_text())
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            absent[name] = f"long run {run}: {type(exc).__name__}: {str(exc).replace(f'{ROOT}/', '')[:200]}"
            continue
        rows.append({"method": name, "trainable_params": info.get("trainable_params", np.nan),
                     "steps": info.get("steps"), "machine_hours": info.get("hours"), "device": info.get("device"),
                     **{f"validation_{k}": v for k, v in (info.get("judged") or {}).items()}})
    table = pd.DataFrame(rows, columns=["method", "trainable_params", "steps", "machine_hours", "device"] +
                         sorted({k for r in rows for k in r if k.startswith("validation_")}))
    table["trainable_pct_of_voice"] = 100 * table["trainable_params"] / voice_params(teacher)
    params = table.set_index("method")["trainable_params"]
    full = next((params[f"{m}@{LONG_RUN}"] for m in ("full", "full-acoustic") if f"{m}@{LONG_RUN}" in params), np.nan)
    table["trainable_pct_of_full"] = 100 * table["trainable_params"] / full
    return found, absent, table


def judged_variants(teacher, adapters: dict, writer: ResultWriter, work: Path, *, unmerged_timing: str,
                    long_runs: Sequence[str] = ()) -> tuple[list, pd.DataFrame]:
    """What the harness judges: the teacher (a fresh copy, as every adapted voice), each method's adapter folder
    merged into it, the packs of the long runs in `long_runs` (long_run_adaptations, absent rows for those that do
    not load), and the method in `unmerged_timing` with its adapter still unmerged. Returns (the variants, the long
    runs' table)."""
    pt = work / "torch"
    out = [evaluate.torch_variant("teacher", Technique.BASELINE, copy.deepcopy(teacher), pt, parent="")]
    out += [evaluate.torch_variant(name, Technique.FINETUNE, speaker_adapt.load(teacher, folder), pt, parent="teacher",
                                   adapted=made_by(name)) for name, folder in adapters.items()]
    long, absent, long_table = long_run_adaptations(teacher, long_runs)
    out += [evaluate.torch_variant(name, Technique.FINETUNE, voice, pt, parent="teacher",
                                   adapted=made_by(name.removesuffix(f"@{LONG_RUN}"), run=LONG_RUN))
            for name, voice in long.items()]
    for name, why in absent.items():
        writer.about(name, Technique.FINETUNE, backend="torch-cpu",
                     **made_by(name.removesuffix(f"@{LONG_RUN}"), run=LONG_RUN)).absent(["secs", "wer"], why)
    if unmerged_timing:
        out.append(evaluate.torch_variant(f"{unmerged_timing}{UNMERGED}", Technique.FINETUNE,
                                          speaker_adapt.load(teacher, adapters[unmerged_timing], merge=False), pt,
                                          parent="teacher", convert={"peft_adapter": str(adapters[unmerged_timing])},
                                          adapted=made_by(unmerged_timing, merged=False)))
    return out, long_table


def made_by(method: str, run: str = "", merged: bool = True) -> dict:
    """An adapted voice's Subject facts from its method's name (finetune.parse_method, the one parser of method
    names): its kind, LoRA rank, whether the adapter is merged (None without one) and whose budget trained it."""
    kind, rank = finetune.parse_method(method)
    return {"method": kind, "rank": rank, "merged": merged if rank is not None else None, "run": run}


def _clips(writer: ResultWriter, folder: str, ids: Sequence[str]) -> list:
    return [lab_audio.Audio(*lab_audio.read_wav(writer.dir / "audio" / folder / f"{i}.wav")) for i in ids]


def pitch_shifts(variants: Sequence, writer: ResultWriter, ids: Sequence[str], *, threads: int) -> dict:
    """Each variant's F0 shift from the teacher (semitones, pYIN, mean over frames voiced in both) on the noise-free
    clips of sentences `ids`, written as `f0_shift_semitones` rows; the first variant is the teacher."""
    folder = lambda v: evaluate.clip_dir_name(v.name, v.backend)
    teacher = [c.samples for c in _clips(writer, folder(variants[0]), ids)]
    shifts = {}
    for v in variants:
        clips = _clips(writer, folder(v), ids)
        shifts[v.name] = metrics.f0_shift_semitones(teacher, [c.samples for c in clips], clips[0].sample_rate)
        writer.add(v.subject(writer.model, threads), "f0_shift_semitones", shifts[v.name], reference="teacher")
    return shifts


def speaker_similarities(variants: Sequence, sentences: Sequence[Sentence], spk: Speaker, judges: Judges,
                         writer: ResultWriter, *, secs_sentences: int) -> pd.DataFrame:
    """The speaker's own clips judged first (variant `target-speaker`: DNSMOS, WER): the judged sentences as its
    voice says them where the lab made the speaker, else its validation recordings. Then SECS of every variant to
    those clips (the first `secs_sentences`; pairs of different sentences only) and the speaker's self-similarity,
    the ceiling. Returns (the SECS sentence by sentence (variant, id, secs), the sample the verdicts resample, and
    the speaker's own per-clip judgements)."""
    if spk.voice is not None:  # the judged sentences, every one the variants speak: the bounds compare like with like
        own, own_sents = spk.voice, list(sentences)
    else:  # a user's recordings: the speaker's own clips are its validation split, other sentences
        own = RecordedVoice(spk.validation)
        own_sents = [Sentence(r.id, r.text) for r in spk.validation]
    target = writer.about("target-speaker", Technique.TARGET,
                          backend="ort-cpu" if spk.voice is not None else "recorded")
    own_clips = evaluate.evaluate_quality(own, own_sents, judges, target)
    own_dir = "target-speaker__ort-cpu" if spk.voice is not None else "target-speaker__recorded"
    n = max(2, min(secs_sentences, len(sentences), len(own_sents)))  # SECS compares the first n clips of each
    ids = [s.id for s in sentences[:n]]
    secs, secs_self = speaker_similarity_per_clip(
        {v.name: _clips(writer, evaluate.clip_dir_name(v.name, v.backend), ids) for v in variants},
        _clips(writer, own_dir, [s.id for s in own_sents[:n]]))
    subjects = {v.name: v.subject(writer.model) for v in variants}
    subjects["target-speaker"] = target.subject
    per_sentence = {**secs, "target-speaker": secs_self}
    for name, value in per_sentence.items():
        writer.add(subjects[name], "secs", float(value.mean()), reference="target-speaker (other sentences)",
                   n=len(ids))
    return pd.DataFrame([{"variant": name, "id": i, "secs": float(x)}
                         for name, values in per_sentence.items() for i, x in zip(ids, values)]), own_clips


def record_training(train_table: pd.DataFrame, writer: ResultWriter, *, threads: int) -> None:
    """Each method's training costs as result rows (peak memory only where it was measured; a long run's pack has
    only its trainable parameters and their share of full's)."""
    for _, tr in train_table.iterrows():
        for metric in TRAINING_METRICS:
            if metric not in tr or np.isnan(tr[metric]):  # memory_probe off, or a long run's pack
                continue
            writer.about(tr["method"], Technique.FINETUNE, parent="teacher", backend="torch-cpu",
                         threads=threads).add(metric, float(tr[metric]))


def evaluate_all(variants: Sequence, sentences: Sequence[Sentence], judges: Judges, writer: ResultWriter, *,
                 spk: Speaker, train_table: pd.DataFrame, settings: dict, threads: int, train_threads: int,
                 reference_limit: int, secs_sentences: int, **timing) -> tuple:
    """The harness on every variant (quality with noise off, reference metrics against the teacher, `rtf_ratio` to
    the teacher; `timing`: speed_sentences, warmup, repeats, memory), then the pitch shifts, the speaker
    similarities and the training costs as rows. Returns (per-clip table, speed table, SECS per sentence)."""
    unmerged = [v.name for v in variants if (v.adapted or {}).get("merged") is False]  # timed only: its twin is judged
    per_clip, speed = evaluate.evaluate_variants(variants, sentences, judges, writer, baseline="teacher",
                                                 settings=settings, threads=threads, reference_limit=reference_limit,
                                                 paired=True, speed_baseline="teacher", timed_only=unmerged, **timing)
    spoken = [v for v in variants if v.name not in unmerged]
    pitch_shifts(spoken, writer, [s.id for s in sentences[:reference_limit]], threads=threads)
    secs_clips, own_clips = speaker_similarities(spoken, sentences, spk, judges, writer,
                                                 secs_sentences=secs_sentences)
    record_training(train_table, writer, threads=train_threads)
    own_clips = own_clips.assign(variant="target-speaker") if isinstance(own_clips, pd.DataFrame) else None
    return pd.concat([per_clip, own_clips], ignore_index=True), speed, secs_clips


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
        writer.about("track-b", Technique.FINETUNE, model=hub_model, backend="torch-cpu").absent(
            ["trainable_params", "mcd_db"], f"Track B needs the hub: {exc}")
        _LOGGER.info("Track B absent here: %s", exc)
        return None, None, None
    quality = clips.groupby("variant")[[c for c in ["mcd_db", "f0_rmse_cents", "pesq_wb", "dnsmos_p808", "wer"]
                                        if c in clips]].mean()
    return table, curves, table.set_index("variant").join(quality, how="outer")


def training_curves(curves: dict) -> pd.DataFrame:
    """Every method's losses by step in one table (column `method`)."""
    return pd.concat([frame.assign(method=n) for n, frame in curves.items()], ignore_index=True)


def method_summaries(table: pd.DataFrame, plan: dict) -> dict:
    """For the findings: each trained method's SECS, share of full's trainable parameters (%), F0 shift and WER."""
    t = table.set_index("variant")
    return {m: t.loc[m, ["secs", "trainable_pct_of_full", "f0_shift_semitones", "wer"]] for m in plan if m in t.index}


def transcripts(per_clip: pd.DataFrame, sentences: Sequence[Sentence], names: Sequence[str]) -> pd.DataFrame:
    """What the ASR judge heard of `sentences` from each of the variants `names` that spoke them (variant, id, text,
    heard, WER), in the order of `names`."""
    if "asr_hyp" not in per_clip:
        return pd.DataFrame(columns=["variant", "id", "text", "heard", "wer"])
    texts = {s.id: s.text for s in sentences}
    rows = per_clip[per_clip["id"].isin(texts) & per_clip["variant"].isin(names)].copy()
    rows["order"] = rows["variant"].map({n: i for i, n in enumerate(names)})
    rows = rows.sort_values(["id", "order"])
    return pd.DataFrame({"variant": rows["variant"], "id": rows["id"], "text": rows["id"].map(texts),
                         "heard": rows["asr_hyp"], "wer": rows.get("wer")}).reset_index(drop=True)


def nf4_kernel_check(teacher, frontend, spk: Speaker, phonemes: int = 0) -> dict:
    """QLoRA's 4-bit base checked on the speaker's first training sentence, or its first `phonemes` ids (bitsandbytes'
    CPU kernel takes half a minute on a whole sentence) (finetune.nf4_kernel_check on the flow): where that kernel is
    far off while the same NF4 weights in a float product are close, QLoRA here keeps NF4 storage and computes with
    the float product."""
    ids = frontend.phoneme_ids(spk.train[0].text)[0]
    return finetune.nf4_kernel_check(teacher, ids[: phonemes or None], scope=("flow.",))


# The described runs of the registry (outputs/recorded/registry.yaml) notebook 02's findings name: the diagnosis of
# issue 50 (one recipe on three folders), the arms after it, the arms judged in one run, and the same recipe on a
# speaker at the teacher's pitch
DIAGNOSIS, ARMS, ARMS_JUDGED, DISTANCE = ("adaptation-diagnosis", "adaptation-arms", "adaptation-arms-judged",
                                          "adaptation-distance")


DIAGNOSIS_COLUMNS = ["run", "folder", "path", "durations", "frozen", "steps", "machine_hours", "validation_wer",
                     "folder_own_wer", "validation_secs", "heldout_mel_l1", "train_mel_l1"]


def diagnosis(runs: str = DIAGNOSIS, root: Path = RECORDED / "training",
              registry_file: str | Path = registry.REGISTRY) -> pd.DataFrame:
    """The described runs `runs` of the registry side by side, from what each pack recorded (config.json's
    validation judges, curve.csv's last held-out mel L1): which of data, durations and path the lost words follow. A
    missing pack is left out."""
    rows = []
    for run, what in registry.load(registry_file).runs(runs).items():
        try:
            info = json.loads((Path(root) / run / "config.json").read_text())
            curve = pd.read_csv(Path(root) / run / "curve.csv")
        except (OSError, ValueError) as exc:
            _LOGGER.warning("diagnostic pack %s left out: %s", run, exc)
            continue
        judged, mel = info.get("judged") or {}, curve["heldout_mel"].dropna()
        spec = info.get("run") or {}
        rows.append({"run": run, "folder": what, "path": spec.get("path"), "durations": spec.get("durations"),
                     "frozen": info.get("frozen"), "steps": info.get("steps"), "machine_hours": info.get("hours"),
                     "validation_wer": judged.get("heldout_wer"), "folder_own_wer": judged.get("speaker_wer"),
                     "validation_secs": judged.get("heldout_secs"),
                     "heldout_mel_l1": float(mel.iloc[-1]) if len(mel) else np.nan,
                     # the training segments' mel L1 over the last 250 steps: beside the held-out one, memorisation
                     "train_mel_l1": (float(curve.loc[curve["step"] > curve["step"].max() - 250, "loss_mel"].mean())
                                      if "loss_mel" in curve else np.nan)})
    return pd.DataFrame(rows, columns=DIAGNOSIS_COLUMNS)  # the columns even where every pack is missing


def word_gap(folder: str | Path) -> pd.DataFrame:
    """Every gap.csv of `folder` (tts-lab study adaptation-gap): the long runs' WER on sentences they trained on and
    on held-out ones, each beside the speaker's own WER on the same sentences (`excess`: the difference). Empty,
    with a warning, where the folder holds none."""
    files = sorted(Path(folder).glob("**/gap.csv")) if str(folder) else []
    if not files:
        _LOGGER.warning("no word-gap study under %r: its line is left out", str(folder))
        return pd.DataFrame(columns=["work", "steps", "split", "noise_scale", "wer", "speaker_wer", "excess"])
    frame = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    frame["noise_scale"] = frame["noise_scale"].fillna(0.0) if "noise_scale" in frame else 0.0
    return frame.assign(excess=frame["wer"] - frame["speaker_wer"])


def parts(folder: str | Path) -> pd.DataFrame:
    """Every parts.csv of `folder` (tts-lab study adaptation-parts): speaker runs judged at their predictor's timing
    and at their recordings' own, and with flow and decoder swapped with the teacher's. Empty, with a warning, where
    the folder holds none."""
    files = sorted(Path(folder).glob("**/parts.csv")) if str(folder) else []
    if not files:
        _LOGGER.warning("no adaptation-parts study under %r: its lines are left out", str(folder))
        return pd.DataFrame(columns=["run", "steps", "split", "voice", "timing", "wer", "secs", "speaker_wer"])
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def long_run_ledger() -> pd.DataFrame:
    """The long adaptation runs' packed checkpoints (outputs/recorded/training_ledger.csv rows of adapters judged on
    a validation split: validation SECS and WER against machine-hours)."""
    book = ledger.read()
    return book[(book["part"] == "adapter") & book["heldout_wer"].notna()].reset_index(drop=True)
