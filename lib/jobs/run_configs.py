"""What each long training job is, as data: one dataclass per `tts-lab` training subcommand (tyro builds the command
line from their fields and one-line comments), handed to the job instead of an argparse Namespace."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import tyro

from lib.jobs.run_state import CORPUS_LISTS, HELDOUT_LISTS
from lib.training.discriminators import DiscriminatorName

Precision = Literal["no", "bf16", "fp16"]


@dataclass
class Run:
    """What every decoder-training job takes: where its state lives, its corpus, its bookkeeping."""
    work: str  # folder for the full training state (the machine's own disk)
    init_from: str = ""  # a committed folder of packed runs (outputs/recorded/training/<work>) to resume from
    device: str = "cpu"  # cpu or cuda
    batch: int = 4  # segments per batch
    frames: int = 32  # latent frames per segment
    corpus_limit: int = 0  # use only the first N corpus sentences (0: all)
    noise_scale: float = 0.0  # the teacher's sampling noise for the corpus
    noise_w: float = 0.0  # the teacher's duration noise for the corpus
    draws: int = 1  # latents drawn per training sentence
    checkpoint_every: int = 500  # steps between checkpoints
    eval_every: int = 250  # steps between held-out checks
    log_every: int = 50  # steps between curve rows
    threads: int = 1  # CPU threads (a share of the machine's cores: the run's machine-hours)
    command: tyro.conf.Suppress[str] = ""  # how the run was started (set by the entry point, kept in run.json)
    NAME: ClassVar[str] = ""


@dataclass
class Students(Run):
    """Train the decoder chain, the flow student and the pruned decoder's recovery (a lent GPU's job)."""
    device: str = "cuda"
    batch: int = 16
    threads: int = 8
    eval_every: int = 500
    mixed_precision: Precision = "bf16"
    widths: list[int] = field(default_factory=lambda: [128, 64])  # decoder students' widths, each from the last
    decoder_steps: int = 20000
    adversarial_steps: int = 18000  # piper's discriminators on the last steps
    discriminators: list[DiscriminatorName] = field(default_factory=lambda: ["mpd", "mrd"])
    flow_hidden: int = 96
    flow_steps: int = 10000
    recovery_steps: int = 20000
    structured_ratio: float = 0.5
    istft_steps: int = 0  # also train the 5x voice's frame-rate iSTFT decoder
    istft_adversarial_steps: int = 0
    istft_dim: int = 256
    istft_blocks: int = 6
    lr: float = 2.0e-4
    NAME: ClassVar[str] = "students"


@dataclass
class Regression(Run):
    """The regression-first recipe's options, the same for every part it trains."""
    steps: int = 100000  # the cosine schedule's whole budget, fixed at the start
    adversarial_steps: int = 0  # piper's discriminators on the last steps
    discriminators: list[DiscriminatorName] = field(default_factory=lambda: ["mpd"])  # lib.training.discriminators
    disc_bf16: bool = False  # the discriminators under bf16 autocast (a CPU with AMX or AVX-512 BF16, or a GPU)
    disc_segment: int = 0  # samples of each segment the discriminators see, a random window (0: all of it)
    lr: float = 5.0e-4
    lr_warmup: int = 200
    ema: float = 0.999
    warm_restart: bool = False  # a new cosine from lr over the steps left: for an adversarial phase after a finished one


@dataclass
class Regress(Regression):
    """The regression-first recipe on a channel-pruned decoder."""
    width: int = 128
    ridge: float = 1.0e-3  # the least-squares refit's ridge, relative to its diagonal
    calib_batches: int = 4  # batches of segments for channel choice and refit
    calib_segments: int = 8  # segments per calibration batch
    calib_frames: int = 64  # latent frames per calibration segment
    NAME: ClassVar[str] = "regress"


@dataclass
class RegressIstft(Regression):
    """The regression-first recipe on the 5x voice's frame-rate decoder; with --amp-weight/--phase-weight, its
    spectral term is APNet's amplitude and phase losses instead (the discriminator-free arm, `istft<d>x<b>-apnet`)."""
    dim: int = 256
    blocks: int = 6
    amp_weight: float = 0.0  # APNet's log-amplitude MSE (APNet: 45)
    phase_weight: float = 0.0  # APNet's anti-wrapping phase losses: instantaneous, group delay, frequency (APNet: 100)
    NAME: ClassVar[str] = "regress-istft"


@dataclass
class RegressFlow(Regression):
    """The half-width flow student by regression on the teacher's flow."""
    batch: int = 8
    hidden: int = 96  # the student flow's hidden channels (the teacher's: 192)
    NAME: ClassVar[str] = "regress-flow"


@dataclass
class RegressFrontend(Regression):
    """The x_low front-end student by regression on the teacher's front end."""
    batch: int = 8
    hidden: int = 96  # the text encoder's hidden channels (the teacher's: 192)
    filter: int = 384  # its feed-forward channels (the teacher's: 768)
    NAME: ClassVar[str] = "regress-frontend"


@dataclass
class Bundle:
    """The teacher's weights and phoneme ids for a machine without the voice package."""
    out: str  # the folder TTS_LAB_TEACHER_BUNDLE will name there
    lists: list[int] = field(default_factory=lambda: [*CORPUS_LISTS, *HELDOUT_LISTS])  # Harvard lists whose ids it holds
    dtype: Literal["float16", "float32"] = "float16"
    site: str = ""  # also write piper's training code and a librosa stand-in here (lib.jobs.device_site)
    NAME: ClassVar[str] = "bundle"


@dataclass
class Pack:
    """Copy the latest generators, curves and env of a run to --out."""
    work: str
    out: str
    device: str = "cuda"
    ledger: str = ""  # append a row per packed decoder (held-out PESQ, mel L1, machine-hours)
    NAME: ClassVar[str] = "pack"


JOBS = (Students, Regress, RegressIstft, RegressFlow, RegressFrontend, Bundle, Pack)
