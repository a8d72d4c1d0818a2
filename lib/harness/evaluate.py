"""The one evaluation harness every notebook uses: synthesise a sentence set, judge it (DNSMOS, ASR WER/CER,
reference metrics against a parent), time variants interleaved, and write tidy rows."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd

from lib.core import machine, quiet
from lib.core.audio import Audio, DEFAULT_SAMPLE_RATE, snr_db, write_wav
from lib.core.machine import PrecisionUnavailable
from lib.core.results import METRICS, ResultWriter, Scoped
from lib.core.subject import ADAPTATION_FACTS, Subject, Technique
from lib.core.text import Sentence
from lib.data import varied_text
from lib.harness import bench, metrics
from lib.harness.judges import Judges, PendingJudgement
from lib.voices import hub
from lib.voices.artefacts import save_voice_module
from lib.voices.synth import PiperOnnxVoice, load_voice, piper_label

if TYPE_CHECKING:
    from torch.nn import Module

_LOGGER = logging.getLogger(__name__)
QUALITY_METRICS = ["dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "distillmos", "wer", "cer"]
REFERENCE_METRICS = ["pesq_wb", "stoi", "mcd_db", "f0_rmse_cents"]
SPEED_METRICS = ["rtf", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput_xrt", "peak_rss_mb"]


def run_voice_spec(spec: dict, texts: Sequence[str]) -> None:
    """Load a voice from `load_voice` keyword arguments (`module_dir`: a saved torch variant, see `torch_variant`)
    and speak `texts` (the body of a memory probe)."""
    quiet.silence_known()
    spec = dict(spec)
    if "module_dir" in spec:
        from lib.techniques.variants import load_variant  # deferred: torch (compress), not for an ONNX voice's probe
        spec["module"] = load_variant(spec.pop("module_dir"))
    voice = load_voice(**spec)
    for t in texts:
        voice.synthesize(t)


def clip_dir_name(variant: str, backend: str = "") -> str:
    """Folder name for a variant's clips under <notebook>/audio/ (the report finds clips by it)."""
    return f"{variant}__{backend}" if backend else variant


def synthesize_set(voice, sentences: Sequence[Sentence], audio_dir: Path | None = None,
                   progress: str | None = None) -> dict[str, Audio]:
    """Audio for each sentence (written to audio_dir/<id>.wav when given)."""
    from tqdm.auto import tqdm
    out = {}
    for s in tqdm(sentences, desc=progress, disable=progress is None, leave=False):
        a = voice.synthesize(s.text)
        out[s.id] = a
        if audio_dir is not None:
            write_wav(Path(audio_dir) / f"{s.id}.wav", a.samples, a.sample_rate)
    return out


def aggregate(per_clip: pd.DataFrame, texts: dict[str, str]) -> dict[str, float]:
    """Mean DNSMOS and reference metrics, corpus-level WER/CER."""
    out = {}
    for m in ["dnsmos_p808", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "distillmos"] + REFERENCE_METRICS:
        if m in per_clip and per_clip[m].notna().any():
            out[m] = float(per_clip[m].mean())
    if "asr_hyp" in per_clip:
        out.update(metrics.corpus_wer([texts[c] for c in per_clip["id"]], per_clip["asr_hyp"].fillna("").tolist()))
    if "audio_s" in per_clip:
        out["audio_s"] = float(per_clip["audio_s"].sum())
    return out


class PendingQuality:
    """A variant's clips synthesised and handed to the judges (`start_quality`); `finish()` waits for the scores,
    adds the aggregate rows to the writer and returns the per-sentence table."""

    def __init__(self, pending, clips: dict[str, Audio], texts: dict[str, str], ref_rows: dict | None,
                 out: Scoped, suffix: str = ""):
        self._pending, self._clips, self._texts, self._ref_rows = pending, clips, texts, ref_rows
        self._out, self._suffix = out, suffix

    def finish(self) -> pd.DataFrame:
        df = self._pending.result()
        texts, clips = self._texts, self._clips
        df.insert(1, "text", [texts[c] for c in df["id"]])
        df["audio_s"] = [clips[c].duration for c in df["id"]]
        if self._ref_rows is not None:
            for m in REFERENCE_METRICS:
                df[m] = [self._ref_rows[c][m] if c in self._ref_rows else np.nan for c in df["id"]]
        df["variant"] = self._out.subject.variant
        scores = aggregate(df, texts)
        if self._suffix:  # a second judged set: the metrics the vocabulary names with its suffix
            scores = {m + self._suffix: x for m, x in scores.items() if m + self._suffix in METRICS}
        self._out.add_many(scores, n=len(df))
        return df


def start_quality(voice, sentences: Sequence[Sentence], judges: Judges, out: Scoped, *, audio_dir: Path | None = None,
                  reference: dict[str, Audio] | None = None, quiet_voice=None,
                  reference_limit: int | None = None, suffix: str = "") -> PendingQuality:
    """`evaluate_quality` up to the judges' scores: synthesise, hand the clips to the judge processes, and compute
    the reference metrics while they judge. The caller may start the next variant before calling `finish()`.
    `out` writes the rows about the variant judged. `suffix` marks a second judged set: its clips go to a folder
    of their own and its scores are written as the vocabulary's `<metric><suffix>` (e.g. `wer_varied`)."""
    subject = out.subject
    audio_dir = Path(audio_dir) if audio_dir else (out.writer.dir / "audio"
                                                   / clip_dir_name(subject.variant + suffix, subject.backend))
    clips = synthesize_set(voice, sentences, audio_dir, progress=f"synth {subject.variant}")
    texts = {s.id: s.text for s in sentences}
    pending = PendingJudgement(clips, texts, judges, audio_dir, progress=f"judge {subject.variant}")
    ref_rows = None
    if reference is not None:
        ids = [s.id for s in sentences if s.id in reference][:reference_limit]
        compared = (synthesize_set(quiet_voice, [s for s in sentences if s.id in ids]) if quiet_voice is not None
                    else clips)
        ref_rows = {c: metrics.reference_metrics(reference[c].samples, compared[c].samples, compared[c].sample_rate)
                    for c in ids}
    return PendingQuality(pending, clips, texts, ref_rows, out, suffix)


def evaluate_quality(voice, sentences: Sequence[Sentence], judges: Judges, out: Scoped, **kw) -> pd.DataFrame:
    """Synthesise, judge and (when `reference` is given) compare sentences to their reference clips.

    The comparison uses `quiet_voice` (the same variant with sampling noise off) when given, else the judged
    clips; `reference_limit` compares only the first sentences. Adds the aggregate rows to `writer` and returns
    the per-sentence table. Keywords as `start_quality`.
    """
    return start_quality(voice, sentences, judges, out, **kw).finish()


def measure_speed(voices: dict[str, object], sentences: Sequence[Sentence], writer: ResultWriter, *,
                  baseline: str, subjects: dict[str, Subject], warmup: int = 2, repeats: int = 1,
                  specs: dict[str, dict] | None = None, memory_sentences: int = 3,
                  record: Sequence[str] | None = None) -> pd.DataFrame:
    """Time variants interleaved on the same sentences; rows with absolute numbers and `rtf_ratio` to the variant's
    subject's `parent` when that was timed in the same run (else to `baseline`; the row's parent names which),
    written for the names in `record` (all by default: a baseline whose rows another section wrote is timed, not
    written twice). `subjects[name]` is what the rows of the voice `name` are about (needed for those written).

    For each name in `specs` (load_voice keyword arguments), peak RSS is measured in a fresh process that loads
    that variant alone and speaks the first `memory_sentences` sentences (once all are timed, one process per CPU at
    a time).
    """
    texts = [s.text for s in sentences]
    fns = {name: v.synthesize for name, v in voices.items()}
    threads = max([int(m.threads or 1) for m in subjects.values()] or [1])
    timings = bench.time_interleaved(fns, texts, lambda a: a.duration, warmup=warmup, repeats=repeats,
                                     progress="timing " + ", ".join(voices), threads=threads)
    load = next(iter(timings.values())).load
    status, reason = next(iter(timings.values())).status
    if load is not None:
        writer.scalars.setdefault("timing_load", []).append({"variants": list(voices), **load.as_dict()})
        if load.contended:
            _LOGGER.warning("timing of %s: %s -- rows marked contended", ", ".join(voices), load.reason())
    summary = {name: t.summary() for name, t in timings.items()}
    base_rtf = summary[baseline]["rtf"]
    probed = [n for n in summary if specs and n in specs and (record is None or n in record)]
    peaks = bench.peak_rss_in_subprocesses(run_voice_spec, {n: (specs[n], texts[:memory_sentences]) for n in probed},
                                           workers=len(machine.allowed_cpus())) if probed else {}
    rows = []
    for name, s in summary.items():
        parent = subjects[name].parent if name in subjects else ""
        against = parent if parent in summary else baseline
        s["rtf_ratio"] = s["rtf"] / summary[against]["rtf"] if against in summary else s["rtf"] / base_rtf
        if record is not None and name not in record:
            continue
        subject = subjects[name]
        out = writer.scoped(subject.but(parent=against))
        out.add_many(s, n=len(timings[name].latencies_s), status=status, reason=reason)
        if name in peaks:
            s["peak_rss_mb"] = peaks[name]
            out.add("peak_rss_mb", s["peak_rss_mb"], n=memory_sentences)
        rows.append({"name": name, **subject.fields(), **s, "status": status})
    return pd.DataFrame(rows)


def other_models(names: Sequence[str], sentences: Sequence[Sentence], judges: Judges, writer: ResultWriter, *,
                 reference_voice, speed_sentences: Sequence[Sentence], warmup: int = 1, threads: int = 1,
                 ground_truth: str = "", ground_truth_limit: int = 0, ground_truth_source: str | None = None,
                 reference_model: str = "") -> tuple[pd.DataFrame, pd.DataFrame, dict[str, str]]:
    """Other voices in the same harness as the reference voice: each loaded (an absent row with the reason when it
    cannot be), judged on `sentences`, timed interleaved with `reference_voice` (rtf_ratio against it, same run),
    and, with `ground_truth` (a hub.HUB_DATASETS name), compared to that corpus's recordings together with the
    reference voice. Returns per-clip quality, speed rows, and the reasons of the absent ones."""
    reference_model = reference_model or writer.model  # the notebook's voice, unless named
    loaded, absent = {}, {}
    for name in names:
        try:
            loaded[name] = hub.any_voice(name, threads=threads)
        except (hub.HubUnavailable, ImportError) as exc:
            absent[name] = str(exc)
            writer.absent(Subject(name, "pretrained", backend=hub.voice_backend(name), threads=threads),
                          ["dnsmos_p808", "wer", "rtf"], str(exc))
    per_clip = []
    for name, voice in loaded.items():
        backend = hub.voice_backend(name)
        df = evaluate_quality(voice, sentences, judges,
                              writer.scoped(Subject(name, "pretrained", backend=backend, threads=threads)),
                              audio_dir=writer.dir / "audio" / clip_dir_name(name, backend))
        per_clip.append(df.assign(model=name))
    if ground_truth:
        for name, voice in {reference_model: reference_voice, **loaded}.items():
            backend = hub.voice_backend(name)
            truth = writer.scoped(Subject(name, f"vs-{ground_truth}", Technique.GROUND_TRUTH, backend=backend,
                                          threads=threads))
            try:
                gt_sentences, refs = hub.reference_set(ground_truth, ground_truth_limit or 20,
                                                       source=ground_truth_source, sample_rate=voice.sample_rate)
            except hub.HubUnavailable as exc:
                absent[f"{ground_truth} references"] = str(exc)
                truth.absent(REFERENCE_METRICS, str(exc))
                break
            df = evaluate_quality(voice, gt_sentences, judges, truth, reference=refs,
                                  audio_dir=writer.dir / "audio_ground_truth" / clip_dir_name(name, backend))
            per_clip.append(df.assign(model=name))
    speed = pd.DataFrame()
    if loaded:
        subjects = {n: Subject(n, "pretrained", parent=reference_model, backend=hub.voice_backend(n),
                               threads=threads) for n in loaded}
        speed = measure_speed({reference_model: reference_voice, **loaded}, speed_sentences, writer,
                              baseline=reference_model, subjects=subjects, warmup=warmup, record=list(loaded))
        speed = speed[speed["name"].isin(loaded)].drop(columns=["name", "variant"]).reset_index(drop=True)
        speed["size_mb"] = [loaded[n].size_bytes / 2**20 for n in speed["model"]]
        for n, mb in zip(speed["model"], speed["size_mb"]):
            writer.add(subjects[n], "size_mb", mb)
    return (pd.concat(per_clip) if per_clip else pd.DataFrame()), speed, absent


@dataclass
class Variant:
    """A voice plus what was done to it: `make(**settings)` builds its Synthesizer (so the harness can ask for
    sampling noise on or off); `artefact` is the file or folder whose size is reported; `module` the torch module
    whose parameters are counted, when there is one; `spec` the `load_voice` arguments that rebuild it in a fresh
    process for its peak memory; `extra` more metric rows."""
    name: str
    technique: Technique
    backend: str
    make: Callable[..., object]  # make(**settings) -> a Synthesizer
    parent: str = "fp32"
    artefact: Path | None = None
    module: Module | None = None
    spec: dict[str, object] | None = None  # load_voice keyword arguments
    extra: dict[str, float] | None = None
    adapted: dict | None = None  # an adapted voice's Subject facts: method, rank, merged, run (ADAPTATION_FACTS)

    def __post_init__(self):
        self.technique = Technique.of(self.technique)
        unknown = set(self.adapted or {}) - set(ADAPTATION_FACTS)
        if unknown:
            raise ValueError(f"variant {self.name!r}: {sorted(unknown)} are not facts of an adapted voice "
                             f"({', '.join(ADAPTATION_FACTS)})")

    def subject(self, model: str, threads: int | None = None) -> Subject:
        """What this variant's result rows are about."""
        return Subject(model, self.name, self.technique, self.parent, self.backend, threads=threads,
                       **(self.adapted or {}))


def onnx_variant(name: str, technique: Technique | str, path: Path, parent: str = "fp32", extra: dict | None = None,
                 backend: str = "ort-cpu", artefact: Path | None = None, **voice_kwargs) -> Variant:
    """A variant that is an ONNX file with the Piper interface, run by ONNX Runtime (or `backend`) on the CPU;
    `artefact` names what is measured on disk when it is more than that file (a split voice's folder)."""
    voice_kwargs = {k: str(v) if isinstance(v, Path) else v for k, v in voice_kwargs.items()}
    return Variant(name, technique, backend,
                   lambda **kw: load_voice(backend=backend, model_path=path, **voice_kwargs, **kw),
                   parent=parent, artefact=Path(artefact or path),
                   spec={"name": piper_label(), "backend": backend, "model_path": str(path), **voice_kwargs},
                   extra=extra)


def torch_variant(name: str, technique: Technique | str, module, save_dir: Path, parent: str = "fp32",
                  extra: dict | None = None, convert: dict | None = None, adapted: dict | None = None,
                  **voice_kwargs) -> Variant:
    """A variant that is a PyTorch SynthesizerTrn; it is saved as safetensors + config.json (artefacts.
    save_voice_module; `convert` for a variant that is a conversion of the ONNX weights), whose size is the
    variant's size and which the memory probe loads in a fresh process."""
    path = save_voice_module(module, Path(save_dir) / name, convert=convert)
    return Variant(name, technique, "torch-cpu",
                   lambda **kw: load_voice(backend="torch-cpu", module=module, **voice_kwargs, **kw),
                   parent=parent, artefact=path, module=module,
                   spec={"name": piper_label(), "backend": "torch-cpu", "module_dir": str(path), **voice_kwargs},
                   extra=extra, adapted=adapted)


def _with_settings(voice, variant: Variant, threads: int, settings: dict):
    """The variant's voice, built once for judging, speaking with `settings` (its session or compiled model shared:
    building a voice twice costs a session set-up or an OpenVINO compile each time); a voice that cannot change
    those settings in place is built again."""
    if hasattr(voice, "with_settings") and set(settings) <= set(getattr(voice, "CALL_SETTINGS", ())):
        return voice.with_settings(**settings)
    return variant.make(threads=threads, **settings)


CONFIRM = "_confirm"  # the metrics' suffix of the confirmation set (lib.core.results: wer_confirm, ...)


def judge_set(variants: Sequence[Variant], names: Sequence[str], sentences: Sequence[Sentence], judges: Judges,
              writer: ResultWriter, *, settings: dict, threads: int, suffix: str, title: str) -> pd.DataFrame:
    """The variants named in `names` spoken noise-free on `sentences`, a judged set other than the screen's, judged
    as the screen is and written as the vocabulary's `<metric><suffix>`; per-clip rows naming the set (`judged_set`:
    `title`), which the verdicts quote."""
    if not sentences:
        return pd.DataFrame(columns=["id", "variant", "dnsmos_p808", "wer", "judged_set"])
    unknown = [n for n in names if n not in {v.name for v in variants}]
    if unknown:
        raise ValueError(f"judge_set: {unknown} are not variants of this run")
    quiet = noise_off(settings)
    pending = [start_quality(v.make(threads=threads, **quiet), sentences, judges,
                             writer.scoped(v.subject(writer.model, threads)), suffix=suffix)
               for v in variants if v.name in set(names)]
    return pd.concat([p.finish() for p in pending], ignore_index=True).assign(judged_set=title)


VARIED = "_varied"  # the metrics' suffix for the varied judged set (lib.core.results: wer_varied, ...)


def judge_varied(variants: Sequence[Variant], names: Sequence[str], n: int, judges, writer: ResultWriter, *,
                 settings: dict, threads: int, family: str) -> pd.DataFrame:
    """The first `n` sentences of the held-out `family` of lib.data.varied_text (by name: text no training step saw)
    spoken noise-free by each variant in `names`, judged as the Harvard lists are, written as the `_varied` metrics;
    each row names its set (`judged_set`, the family's title), which the verdicts quote."""
    held_out = [f.name for f in varied_text.Family if f is not varied_text.Family.TRAIN]
    if family not in held_out:  # TRAIN is the front end's training text
        raise ValueError(f"varied_family={family!r}: a held-out family of lib.data.varied_text, one of {held_out}")
    sentences = varied_text.varied_sentences(varied_text.Family[family], n)
    known = [name for name in names if name in {v.name for v in variants}]
    if sentences and not known:
        raise ValueError(f"judge_varied: none of {list(names)} is a variant of this run")
    return judge_set(variants, known, sentences, judges, writer, settings=settings, threads=threads,
                              suffix=VARIED,
                              title=varied_text.Family[family].title)


def noise_off(settings: dict) -> dict:
    """A voice's `settings` with VITS's sampling noise off, so that two variants differ only by what was done to
    them."""
    return {**settings, "noise_scale": 0.0, "noise_w": 0.0}


def evaluate_variants(variants: Sequence[Variant], sentences: Sequence[Sentence], judges: Judges,
                      writer: ResultWriter, *, baseline: str, settings: dict, threads: int = 1,
                      reference_limit: int | None = None, speed_sentences: int = 10, warmup: int = 1,
                      repeats: int = 1, paired: bool = False, speed_baseline: str | None = None,
                      untimed: Sequence[str] = (), timed_only: Sequence[str] = (),
                      memory: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The whole harness for a set of variants of one voice, on the same sentences and in one run:
    quality, reference metrics against the baseline with noise off, size and parameter counts, and speed
    timed interleaved with `rtf_ratio` to `baseline`, as rows about the writer's model. Returns (per-clip, speed)
    tables.

    A variant that asks for a precision this machine cannot compute natively (bf16 on a CPU without bf16 units)
    becomes absent rows naming the CPU and what it lacks, and the others carry on.

    `paired` judges DNSMOS and WER on the noise-free output too, so that two variants differ only by what was
    done to them: with sampling noise on, two draws of the same voice differ by a few hundredths of WER on tens
    of sentences, more than the bounds a compression is held to. Otherwise they are judged with `settings`.

    `speed_baseline` (default: `baseline`) is what `rtf_ratio` divides by; variants named in `untimed` are judged
    but not timed (a reference that is not a model, such as a signal-processed target), those in `timed_only` timed
    but not judged (a twin whose audio another variant's judging covers, such as an adapter left unmerged); `memory`
    measures each
    variant's peak memory in a fresh process of its own (slow: one process per variant)."""
    quiet = noise_off(settings)
    judged = quiet if paired else settings
    by_name = {v.name: v for v in variants}
    ref_voice = by_name[baseline].make(threads=threads, **quiet)
    ref_ids = [s for s in sentences][:reference_limit]
    reference = synthesize_set(ref_voice, ref_ids, progress="reference")
    per_clip, ran, pending, built = [], [], [], {}
    for v in variants:
        out = writer.scoped(v.subject(writer.model, threads))
        try:
            voice = ref_voice if v.name == baseline and judged == quiet else v.make(threads=threads, **judged)
        except PrecisionUnavailable as exc:
            out.absent(["dnsmos_p808", "wer", "rtf", "rtf_ratio"], str(exc))
            continue
        ran.append(v)
        built[v.name] = voice
        if v.name in set(timed_only):
            _static_rows(v, out)
            continue
        # the judge processes score this variant while the next one is built and spoken; all finish before timing
        pending.append((v, out, start_quality(
            voice, sentences, judges, out, reference=None if v.name == baseline else reference,
            quiet_voice=None if v.name == baseline or paired else v.make(threads=threads, **quiet),
            reference_limit=reference_limit)))
    for v, out, quality in pending:
        per_clip.append(quality.finish().assign(backend=v.backend))
        _static_rows(v, out)
    timed = [v for v in ran if v.name not in set(untimed)]
    voices = {v.name: _with_settings(built[v.name], v, threads, settings) for v in timed}
    built.clear()
    subjects = {v.name: v.subject(writer.model, threads) for v in timed}
    specs = {v.name: {**v.spec, "threads": threads, **settings} for v in timed if v.spec} if memory else {}
    speed = measure_speed(voices, sentences[:speed_sentences], writer, baseline=speed_baseline or baseline,
                          subjects=subjects, warmup=warmup, repeats=repeats, specs=specs)
    return pd.concat(per_clip, ignore_index=True), speed


def _static_rows(v: Variant, out: Scoped) -> None:
    """A variant's size on disk, parameter counts and its own extra rows: what needs no synthesis."""
    if v.artefact is not None:
        out.add("size_mb", bench.size_mb(v.artefact))
    if v.module is not None:
        counts = bench.param_counts(v.module)  # trainable_params belongs to a method's training rows, not here
        out.add_many({k: counts[k] for k in ("params", "nonzero_params")})
    for metric, value in (v.extra or {}).items():
        out.add(metric, value)


def compare_outputs(ref_voice, test_voice, sentences: Sequence[Sentence]) -> pd.DataFrame:
    """Per sentence: length difference, max |difference|, error energy relative to the reference (dB), and PESQ-WB
    of `test_voice` against `ref_voice`. Meant for noise-free voices, where the outputs should coincide."""
    rows = []
    for s in sentences:
        a, b = ref_voice.synthesize(s.text).samples, test_voice.synthesize(s.text).samples
        n = min(len(a), len(b))
        d = a[:n] - b[:n]
        rows.append({"id": s.id, "length_diff_samples": abs(len(a) - len(b)), "max_abs_diff": float(np.abs(d).max()),
                     "rms_diff_db": -snr_db(a, b), "pesq_wb": metrics.pesq_wb(a, b, ref_voice.sample_rate)})
    return pd.DataFrame(rows)


def frames_per_phoneme(voice_model, ids: Sequence[int], length_scale: float = 1.0) -> np.ndarray:
    """Latent frames each phoneme gets when a piper SynthesizerTrn speaks `ids` with sampling noise off (read off
    the alignment its `infer` returns)."""
    import torch
    with torch.no_grad():
        attn = voice_model.infer(torch.tensor([list(ids)]), torch.tensor([len(ids)]), noise_scale=0.0,
                                 length_scale=length_scale, noise_scale_w=0.0)[1]
    return attn[0, 0].sum(0).numpy()


def duration_error(voice_model, reference_model, phoneme_ids: Sequence[Sequence[int]]) -> dict[str, float]:
    """How far `voice_model`'s timing is from `reference_model`'s on the same sentences (noise off): the mean
    absolute difference of frames per phoneme, and the mean relative change of a sentence's length."""
    diffs, lengths = [], []
    for ids in phoneme_ids:
        a, b = frames_per_phoneme(voice_model, ids), frames_per_phoneme(reference_model, ids)
        diffs.append(np.abs(a - b))
        lengths.append(100.0 * (a.sum() - b.sum()) / max(1.0, b.sum()))
    return {"duration_mae_frames": float(np.concatenate(diffs).mean()), "length_change_pct": float(np.mean(lengths))}


def heldout_pesq(heldout, sample_rate: int = DEFAULT_SAMPLE_RATE, limit: int = 4):
    """A training check for the Trainer's `eval_fn`: PESQ-WB of a decoder's output against its target waveform on
    `limit` held-out utterances (a batches.Latents no training touched). The judge stays in the harness; the
    training loop only calls it."""
    import torch
    pairs = list(zip(heldout.z, heldout.wav))[:limit]

    def check(decoder) -> dict:
        device = next(decoder.parameters()).device
        with torch.no_grad():
            scores = [metrics.pesq_wb(y.reshape(-1).numpy(),
                                      decoder(z.to(device)).float().cpu().reshape(-1).numpy()[: y.numel()],
                                      sample_rate) for z, y in pairs]
        return {"heldout_pesq": float(np.nanmean(scores))}

    return check


def int8_group_sensitivity(src: Path, out_dir: Path, calibration: Sequence[list[int]], sentences, reference: dict,
                          config_path: Path, groups: dict[str, Sequence[str]] | None = None, threads: int = 1):
    """Quantize one group of layers at a time (static QDQ int8, the rest float) and measure, against the float
    model's noise-free output: PESQ-WB and MCD, and the RTF on the same sentences. Returns one row per group, with
    the quantized `file` (the sensitivity-guided variant, only the least sensitive group in int8, is one of them)."""
    import pandas as pd

    from lib.techniques.compress import SCOPES, OnnxConversion  # deferred: torch (memory probe)
    groups = groups or SCOPES
    rows = []
    for name in groups:
        tag = name.split()[0]
        dst = OnnxConversion(f"ort-qdq-int8-{tag}", Technique.ORT_GUIDED_INT8, "static", f"qdq_only_{tag}.onnx",
                             groups=(name,)).convert(src, out_dir, calibration, scopes=groups)
        voice = PiperOnnxVoice(dst, config_path, noise_scale=0.0, noise_w=0.0, threads=threads)
        timing = bench.time_calls(voice.synthesize, [s.text for s in sentences], lambda a: a.duration, warmup=1)
        outs = {s.id: voice.synthesize(s.text) for s in sentences}
        scores = [metrics.reference_metrics(reference[i].samples, outs[i].samples, outs[i].sample_rate) for i in outs]
        rows.append({"group": name, "file": str(dst), "rtf": timing.summary()["rtf"],
                     "pesq_wb": float(np.mean([s["pesq_wb"] for s in scores])),
                     "mcd_db": float(np.mean([s["mcd_db"] for s in scores])),
                     "length_diff_samples": float(np.mean([abs(len(outs[i].samples) - len(reference[i].samples))
                                                           for i in outs]))})
    return pd.DataFrame(rows)
