"""The options of the speaker commands (`tts-lab speaker posterior`, `tts-lab speaker adapt`), in a module light
enough that their --help imports no runtime (issue 69 item 3): what a run needs beyond its numbers (its recipe, the
paths and aligners it checks against) is imported when the run is built, not when its options are shown."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lib.data.splits import CORPUS_LISTS
from lib.voices.scales import NOISE_SCALE

if TYPE_CHECKING:
    from lib.training.loop import Recipe

FOLDER_DURATIONS = "folder"  # a run's durations from the folder's own durations.json


@dataclass
class PosteriorRun:
    """The posterior encoder's bootstrap on the teacher's own (audio, latent) pairs."""
    work: str  # the full state, on this machine's disk
    out: str = ""  # the pack: model.safetensors + config.json + curve.csv (committed)
    steps: int = 3000  # the cosine's whole budget
    lr: float = 1.0e-3  # AdamW's peak learning rate (after a warm-up of a tenth of the steps, at most 100)
    batch: int = 8  # (audio, latent) pairs a step
    draws: int = 2  # noisy syntheses of each training sentence (piper's default noise)
    pitch_shifts: list[float] = field(  # semitones: each adds every recording pitch-shifted, same latent
        default_factory=list)
    corpus_lists: list = field(default_factory=lambda: list(CORPUS_LISTS))  # Harvard lists the teacher reads
    corpus_limit: int = 0  # >0: only the first this many sentences of those lists
    threads: int = 1  # torch threads
    checkpoint_every: int = 250  # steps between saved states (a run resumes from the last)
    eval_every: int = 250  # steps between held-out losses (Harvard list 31)
    log_every: int = 25  # steps between lines of the curve
    duration_steps: int = 1000  # then the duration predictor's training-only parts, on the teacher's durations

    def recipe(self, steps: int | None = None) -> Recipe:
        from lib.training.loop import Recipe
        steps = steps or self.steps
        return Recipe(steps=steps, lr=self.lr, schedule="cosine", lr_warmup_steps=min(100, steps // 10),
                      adversarial=False, checkpoint_every=self.checkpoint_every, eval_every=self.eval_every,
                      log_every=self.log_every)


TARGET_LISTS = list(range(11, 32))  # the default speaker folder: Harvard lists 11-31 (list 31 its validation split)
VALIDATION = 10  # recordings of the folder kept for checkpoint choice (its last ones); lists 1-10 are judged elsewhere


@dataclass
class SpeakerRun:
    """One adaptation method trained on a speaker's LJSpeech folder, on the inference path (the recordings' own
    durations) or piper's posterior path."""
    work: str  # the full state, on this machine's disk
    dataset: str  # the speaker's LJSpeech folder
    method: str = "full"  # full, full-acoustic, lora-r8, lora-attention-r16, qlora-r8, ...
    voice: str = ""  # the voice adapted: a piper .onnx with its .onnx.json beside it ('': the lab's en_US-joe-medium)
    # what the acoustic loss goes through: the path the voice speaks with (text encoder, the recordings' durations,
    # flow reversed from the prior, decoder), or piper's training forward (posterior encoder, MAS, KL)
    path: Literal["inference", "posterior"] = "inference"
    # the inference path's durations: DTW against the teacher's rendition on Whisper's encoder output (the yardstick's
    # best, 0.89 per sound on another speaker), MAS on a sample of the posterior encoder (0.36 there), or the folder's
    # own (its durations.json: the speaker's true ones, `tts-lab speaker folder --timed`, or a forced aligner's)
    durations: Literal["dtw", "mas", "folder"] = "dtw"
    noise_scale: float = NOISE_SCALE  # the inference path's prior noise (piper's inference default, 0.667)
    posterior: str = "outputs/recorded/training/posterior/joe-medium"  # the bootstrapped posterior encoder's pack
    out: str = ""  # where pack writes the adapter (committed)
    steps: int = 6000  # the run's whole budget
    adversarial_steps: int = 0  # piper's discriminators on the last steps (fresh: the voice ships none)
    discriminators: list = field(default_factory=lambda: ["mpd"])  # piper's: mpd, mrd (with adversarial steps)
    disc_warmup_steps: int = 0  # steps where only the fresh discriminators learn before they judge the voice (each
    # start from a pack builds fresh ones: the packs keep no discriminators)
    disc_segment: int = 0  # >0: the discriminators see a random window of this many samples of each segment
    lr: float = 1.0e-4  # AdamW's learning rate (LoRA and QLoRA take about 1e-3)
    # >0: the multi-resolution STFT loss beside mel L1, this weight (its 2,048-point resolution sees the harmonics,
    # which the 80-band mel barely does: on +8 semitones mel-only runs left F0 where the teacher had it)
    stft_weight: float = 0.0
    train_posterior: bool = True  # posterior path, off: the bootstrapped posterior encoder stays frozen
    prior_mel: float = 0.0  # posterior path, >0: also mel L1 of the aligned prior mean -> flow -> decoder, this weight
    batch: int = 4  # recordings a step
    validation: int = VALIDATION  # the folder's last recordings kept for checkpoint choice, never trained on
    clips: int = 0  # >0: train on the folder's first this many training recordings (the ladder's data arm)
    device: str = "cpu"  # cpu or cuda (a GPU run's time counts as device-hours)
    init_from: str = ""  # a committed pack of this method to go on from where `work` holds no state
    patience: int = 3  # packs in a row without a better validation score before the run stops (0: never)
    threads: int = 1  # torch threads
    checkpoint_every: int = 250  # steps between saved states (a run resumes from the last)
    eval_every: int = 250  # steps between validation losses
    log_every: int = 25  # steps between lines of the curve

    def __post_init__(self):
        from lib.harness import durations  # the checks' vocabularies, loaded when a run is built, not for --help
        from lib.techniques import speaker_adapt
        if self.voice:  # kept resolved, so that a pack from another folder reads the same file
            self.voice = str(Path(self.voice).expanduser().resolve())
        if self.path not in speaker_adapt.PATHS:
            raise ValueError(f"path {self.path!r}: use one of {speaker_adapt.PATHS}")
        if self.durations not in (*durations.DURATION_METHODS, FOLDER_DURATIONS):
            raise ValueError(f"durations {self.durations!r}: "
                             f"use one of {(*durations.DURATION_METHODS, FOLDER_DURATIONS)}")
        if self.path == "inference" and self.prior_mel:
            raise ValueError("prior_mel is a term of the posterior path: give path 'posterior' with it")

    @property
    def recipe_name(self) -> str:
        """The ledger's name of what this run trains with: method, learning rate, the path with its durations and
        prior noise (the inference path) or a frozen posterior encoder (the posterior path)."""
        window = f" on {self.disc_segment} samples" if self.disc_segment else ""
        data = f" clips={self.clips}" if self.clips else ""
        adv = data + (f" adversarial={self.adversarial_steps}({'+'.join(self.discriminators)}{window}, "
               f"{self.disc_warmup_steps} discriminator-only)" if self.adversarial_steps else "")
        if self.path == "inference":
            noise = "" if self.noise_scale == NOISE_SCALE else f" noise={self.noise_scale:g}"  # the default unsaid
            stft = f" stft={self.stft_weight:g}" if self.stft_weight else ""
            return f"speaker-{self.method} lr={self.lr:g} inference-path durations={self.durations}{noise}{stft}{adv}"
        return (f"speaker-{self.method} lr={self.lr:g}" + ("" if self.train_posterior else " frozen-posterior")
                + (f" prior-mel={self.prior_mel:g}" if self.prior_mel else "") + adv)

    def recipe(self, before: int = 0) -> Recipe:
        """The recipe for the steps left after `before` packed ones (the learning rate goes on from there)."""
        from lib.training.loop import Recipe
        return Recipe.adversarial_tail(max(1, self.steps - before), self.adversarial_steps, lr=self.lr,
                                       schedule_offset=before, adversarial=self.adversarial_steps > 0,
                                       discriminators=tuple(self.discriminators),
                                       disc_warmup_steps=self.disc_warmup_steps, disc_segment=self.disc_segment,
                                       stft_weight=self.stft_weight, checkpoint_every=self.checkpoint_every,
                                       eval_every=self.eval_every, log_every=self.log_every)
