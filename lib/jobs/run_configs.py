"""What each long training job is, as data: one dataclass per `tts-lab train` command and study step-costs (tyro
builds the command line from their fields and one-line comments), handed to the job instead of an argparse Namespace;
each builds its Recipe, and `RunConfig` is what one of its parts is, written when the part starts and read back by
`pack`. Light, so that --help imports no runtime (issue 69 item 3): the work is imported when a job runs."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, get_args

import tyro

from lib.data import corpus_text
from lib.data.splits import CORPUS_LISTS, HELDOUT_LISTS, JUDGED_SENTENCES
from lib.training.recipe import DiscriminatorName, Recipe
from lib.voices.parts import PARTS
from lib.voices.scales import LONG_RUN_NOISE

CONFIG = "config.json"  # a part's RunConfig under --work/<part>/, beside its training state

Precision = Literal["no", "bf16", "fp16"]


@dataclass
class Run:
    """What every decoder-training job takes: where its state lives, its corpus, its bookkeeping."""
    work: str  # folder for the full training state (the machine's own disk)
    voice: str = ""  # the teacher: a piper voice's .onnx (its .onnx.json beside it); empty: the lab's en_US-joe-medium
    init_from: str = ""  # a committed folder of packed runs (outputs/recorded/training/<work>) to resume from
    # the packed part under --init-from to start from (empty: the part's own name, else its regression run's)
    init_part: str = ""
    device: str = "cpu"  # cpu or cuda
    batch: int = 4  # segments per batch
    frames: int = 32  # latent frames per segment
    corpus_limit: int = 0  # use only the first N corpus sentences (0: all)
    # a teacher corpus written by `tts-lab corpus` to stream from (empty: Harvard lists 11-30 in memory)
    corpus: str = ""
    corpus_hours: float = 0.0  # with --corpus, its first shards holding at least this many hours (0: all of it)
    noise_scale: float = 0.0  # the teacher's sampling noise for the corpus
    noise_w: float = 0.0  # the teacher's duration noise for the corpus
    draws: int = 1  # latents drawn per training sentence
    checkpoint_every: int = 500  # steps between checkpoints
    eval_every: int = 250  # steps between held-out checks
    log_every: int = 50  # steps between curve rows
    threads: int = 1  # CPU threads (a share of the machine's cores: the run's machine-hours)
    command: tyro.conf.Suppress[str] = ""  # how the run was started (set by the entry point, kept in run.json)
    NAME: ClassVar[str] = ""

    def record(self, work: Path, **extra) -> None:
        """Write work/run.json, what pack needs to account for the run: threads, cores, device, the corpus's noise,
        the command, where it started (`extra`: the recipe's name, `before`)."""
        from lib.core.results import atomic_write_json  # deferred, as all the work: --help shows numbers only
        from lib.jobs.run_state import gpu_name, read_json
        old = read_json(work / "run.json", {})
        from lib.voices.teacher_bundle import teacher_identity  # deferred: it loads the voice package
        atomic_write_json(work / "run.json", {**old, "voice": self.voice, "teacher": teacher_identity(),
                                              "threads": self.threads, "cores": os.cpu_count(),
                                              "device": self.device, "gpu": gpu_name(self.device),
                                              "noise_scale": self.noise_scale, "noise_w": self.noise_w,
                                              "draws": self.draws, "command": self.command, **extra})

    def packed_start(self, name: str, fallback: str = "") -> Path | None:
        """The --init-from folder the part `name` starts from: its own pack, else (an adversarial phase starting from
        the regression run) `fallback`'s; None where neither is packed there."""
        if self.init_part and self.init_from:
            path = Path(self.init_from) / self.init_part
            if not (path / CONFIG).exists():
                from lib.voices.artefacts import ArtefactError
                raise ArtefactError(f"--init-part {self.init_part}: {path / CONFIG} is missing")
            return path
        packed = [Path(self.init_from) / n for n in (name, fallback) if n and self.init_from]
        return next((p for p in packed if (p / CONFIG).exists()), None)

    def part(self, name: str, kind: str, build: dict, recipe: Recipe, recipe_name: str) -> "RunConfig":
        """The RunConfig of this run's part `name`."""
        return RunConfig(name, kind, build, recipe_name, recipe, self.NAME, asdict(self))


@dataclass
class Students(Run):
    """Train the decoder chain, the flow student and the pruned decoder's recovery (a lent GPU's job)."""
    device: str = "cuda"  # cuda (a lent GPU) or cpu
    batch: int = 16  # segments per batch
    threads: int = 8  # CPU threads of the data and the CPU parts
    eval_every: int = 500  # steps between held-out checks
    mixed_precision: Precision = "bf16"  # autocast of the forward passes (no, bf16, fp16)
    widths: list[int] = field(default_factory=lambda: [128, 64])  # decoder students' widths, each from the last
    decoder_steps: int = 20000  # each decoder student's budget
    adversarial_steps: int = 18000  # piper's discriminators on the last steps
    discriminators: list[DiscriminatorName] = field(default_factory=lambda: ["mpd", "mrd"])  # piper's pair
    flow_hidden: int = 96  # the flow student's hidden channels (the teacher's: 192)
    flow_steps: int = 10000  # the flow student's budget
    recovery_steps: int = 20000  # the pruned decoder's recovery budget
    structured_ratio: float = 0.5  # the share of the decoder's channels pruned before its recovery
    istft_steps: int = 0  # also train the 5x voice's frame-rate iSTFT decoder
    istft_adversarial_steps: int = 0  # its steps with the discriminators, the last ones
    istft_dim: int = 256  # its channels
    istft_blocks: int = 6  # its ConvNeXt blocks
    lr: float = 2.0e-4  # AdamW's learning rate (piper's)
    NAME: ClassVar[str] = "students"

    def recipe_name(self) -> str:
        """The ledger's name of its recipe: piper's adversarial one."""
        return "adversarial"

    def recipe(self, steps: int, adversarial_steps: int = 0, **kw) -> Recipe:
        """A part's Recipe: `steps` whose last `adversarial_steps` add the discriminators; `kw` overrides (the flow's
        learning rate)."""
        return Recipe.adversarial_tail(steps, adversarial_steps, **{
            "lr": self.lr, "mixed_precision": self.mixed_precision, "discriminators": tuple(self.discriminators),
            "checkpoint_every": self.checkpoint_every, "eval_every": self.eval_every, "log_every": self.log_every,
            **kw})


@dataclass
class Regression(Run):
    """The regression-first recipe's options, the same for every part it trains."""
    steps: int = 100000  # the cosine schedule's whole budget, fixed at the start
    adversarial_steps: int = 0  # piper's discriminators on the last steps
    discriminators: list[DiscriminatorName] = field(default_factory=lambda: ["mpd"])  # lib.training.discriminators
    disc_bf16: bool = False  # the discriminators under bf16 autocast (a CPU with AMX or AVX-512 BF16, or a GPU)
    disc_segment: int = 0  # samples of each segment the discriminators see, a random window (0: all of it)
    lr_d: float = Recipe.lr_d  # the discriminators' AdamW rate (piper's); a lighter one may need more to learn at all
    lr: float = 5.0e-4  # the cosine's peak learning rate
    lr_warmup: int = 200  # its linear warm-up steps
    ema: float = 0.999  # the weights' moving average packed beside them (its decay)
    # a new cosine from lr over the steps left: for an adversarial phase after a finished one
    warm_restart: bool = False
    # in the adversarial phase, HiFi-GAN's generator loss (mel, adversarial, feature matching) only
    gan_objective: bool = False
    disc_warmup: int = 0  # the adversarial phase's first steps train only the fresh discriminators (the generator held)
    # the adversarial and feature-matching terms' weight in the generator's loss (1: piper's): a GAN-weighted arm
    adv_weight: float = 1.0
    # stop (checkpointed) at this many steps, the packed start's counted (0: at --steps): equal-step arms
    stop_at: int = 0

    def recipe(self, done: int, **extra) -> Recipe:
        """The regression-first Recipe of a part whose packed start had `done` steps: the cosine goes on from there,
        or, with --warm-restart, starts again from --lr (its warm-up included) over the steps left: an adversarial
        phase after a finished cosine would otherwise train at its floor. `extra`: more Recipe fields (APNet's).
        --stop-at counts the packed start's steps too (a ValueError where that start has them already)."""
        if self.stop_at and self.stop_at <= done:
            raise ValueError(f"--stop-at {self.stop_at}: the packed start has {done} steps already")
        from lib.techniques import regress_recipe
        return regress_recipe.recipe(
            max(1, self.steps - done), lr=self.lr, warmup=self.lr_warmup, ema=self.ema,
            adversarial_steps=self.adversarial_steps, schedule_offset=0 if self.warm_restart else done,
            discriminators=tuple(self.discriminators), disc_bf16=self.disc_bf16, disc_segment=self.disc_segment,
            lr_d=self.lr_d, gan_objective=self.gan_objective, disc_warmup_steps=self.disc_warmup,
            adv_weight=self.adv_weight,
            stop_step=self.stop_at - done if self.stop_at else 0, checkpoint_every=self.checkpoint_every,
            eval_every=self.eval_every, log_every=self.log_every, **extra)

    def recipe_name(self, apnet: bool = False) -> str:
        """The ledger's name of the recipe: APNet's losses and, with discriminators on the last steps, the adversarial
        phase are named too, with whatever of it is not piper's (lighter discriminators, bf16, a shorter window, the
        discriminators' learning rate)."""
        name = "regression-first" + ("+apnet" if apnet else "")
        if not self.adversarial_steps:
            return name
        detail = self.named_discriminators()
        detail += ["bf16"] * bool(self.disc_bf16) + [f"{self.disc_segment} samples"] * bool(self.disc_segment)
        detail += [f"lr_d {self.lr_d:g}"] * (self.lr_d != Recipe.lr_d) + ["HiFi-GAN objective"] * self.gan_objective
        detail += [f"adversarial weight {self.adv_weight:g}"] * (self.adv_weight != 1.0)
        detail += [f"{self.disc_warmup} discriminator-only steps"] * bool(self.disc_warmup)
        return name + "+adversarial" + (f"({', '.join(detail)})" if detail else "")

    def phase_name(self, base: str) -> str:
        """A part's name (`<student>-regress`), or with --adversarial-steps that of its adversarial phase,
        `<student>-adv` (`-adv-<discriminator>...` with a set other than piper's, `-lrd<rate>` with another
        discriminator rate, `-gan` with HiFi-GAN's objective, `-advw<w>` with another adversarial weight): a run, a
        ledger line and a judged voice of its own."""
        if not self.adversarial_steps:
            return base
        rate = f"-lrd{self.lr_d:.0e}" * (self.lr_d != Recipe.lr_d)  # no dot in a run's name
        gan = "-gan" * self.gan_objective
        weight = f"-advw{self.adv_weight:g}".replace(".", "p") * (self.adv_weight != 1.0)
        return base.replace("-regress", "-adv" + "".join(f"-{d}" for d in self.named_discriminators()) + rate + gan
                            + weight)

    def named_discriminators(self) -> list[str]:
        """The discriminators a name must mention: none for piper's ensemble (MPD, with or without its MRD), else
        every one (MRD alone is not piper's recipe)."""
        piper = "mpd" in self.discriminators and set(self.discriminators) <= {"mpd", "mrd"}
        return [] if piper else list(self.discriminators)


@dataclass
class Regress(Regression):
    """The regression-first recipe on a channel-pruned decoder."""
    width: int = 128  # the pruned decoder's initial channels (the teacher's: 256 in a medium voice)
    ridge: float = 1.0e-3  # the least-squares refit's ridge, relative to its diagonal
    calib_batches: int = 4  # batches of segments for channel choice and refit
    calib_segments: int = 8  # segments per calibration batch
    calib_frames: int = 64  # latent frames per calibration segment
    NAME: ClassVar[str] = "regress"


@dataclass
class RegressIstft(Regression):
    """The regression-first recipe on the 5x voice's frame-rate decoder; with --amp-weight/--phase-weight, its
    spectral term is APNet's amplitude and phase losses instead (the discriminator-free arm, `istft<d>x<b>-apnet`)."""
    dim: int = 256  # the frame-rate decoder's channels (the 5x voice's: 192)
    blocks: int = 6  # its ConvNeXt blocks
    # a GELU MLP of this width beside the head's log-magnitudes (0: the linear head alone); a run grown from a
    # linear-head pack (--init-part) starts speaking as it did (`istft<dim>x<blocks>m<width>`)
    mag_hidden: int = 0
    mag_only: bool = False  # train the magnitude MLP alone (the body, the head and the phases frozen as packed)
    amp_weight: float = 0.0  # APNet's log-amplitude MSE (APNet: 45)
    phase_weight: float = 0.0  # APNet's anti-wrapping phase losses: instantaneous, group delay, frequency (APNet: 100)
    NAME: ClassVar[str] = "regress-istft"

    def recipe_name(self, apnet: bool = False) -> str:
        """The regression-first recipe's name, saying where only the magnitude MLP trains."""
        return super().recipe_name(apnet) + " (magnitude MLP only)" * self.mag_only


@dataclass
class RegressHybrid(Regression):
    """The regression-first recipe on the teacher-initialised hybrid decoder: the teacher's first stages pruned by
    activation and refitted (as the 128-channel decoder), then an iSTFT head (iSTFTNet's recipe)."""
    width: int = 96  # the kept stages' initial channels (the teacher's: 256); 96 with 2 stages: 0.38 of the voice
    keep_stages: int = 2  # teacher upsampling stages kept (2: iSTFTNet's C8C8I, the head at hop 4)
    n_fft: int = 16  # the head's STFT size (4 x its hop)
    ridge: float = 1.0e-3  # the least-squares refit's ridge, relative to its diagonal
    calib_batches: int = 4  # batches of segments for channel choice and refit
    calib_segments: int = 8  # segments per calibration batch
    calib_frames: int = 64  # latent frames per calibration segment
    NAME: ClassVar[str] = "regress-hybrid"

    def part_name(self) -> str:
        """`hybrid<width>s<stages>f<n_fft>`, `-regress` or its adversarial phase's name."""
        return self.phase_name(f"hybrid{self.width}s{self.keep_stages}f{self.n_fft}-regress")


@dataclass
class RegressFlow(Regression):
    """The half-width flow student by regression on the teacher's flow."""
    batch: int = 8  # segments per batch
    hidden: int = 96  # the student flow's hidden channels (the teacher's: 192)
    NAME: ClassVar[str] = "regress-flow"


@dataclass
class RegressFrontend(Regression):
    """The x_low front-end student by regression on the teacher's front end."""
    batch: int = 8  # sentences per batch
    hidden: int = 96  # the text encoder's hidden channels (the teacher's: 192)
    filter: int = 384  # its feed-forward channels (the teacher's: 768)
    # also train on this many sentences of lib.data.varied_text's TRAIN family (`fe<h>-varied`)
    varied_sentences: int = 0
    NAME: ClassVar[str] = "regress-frontend"

    def part_name(self) -> str:
        """`fe<hidden>`, or `fe<hidden>-varied` where varied text joins the Harvard lists."""
        return f"fe{self.hidden}" + ("-varied" if self.varied_sentences else "")


@dataclass
class Bundle:
    """The teacher's weights and phoneme ids for a machine without the voice package."""
    out: str  # the folder TTS_LAB_TEACHER_BUNDLE will name there
    lists: list[int] = field(  # Harvard lists whose ids it holds
        default_factory=lambda: [*CORPUS_LISTS, *HELDOUT_LISTS])
    dtype: Literal["float16", "float32"] = "float16"  # the weights' storage (float16 halves the transfer)
    site: str = ""  # also write piper's training code and a librosa stand-in here (lib.jobs.device_site)
    corpus_seed: int = 0  # also the ids of the teacher corpus's text of this seed (`tts-lab train corpus --seed`)
    wheels: str = ""  # also the wheels a bare GPU machine lacks, at this machine's versions (lib.jobs.device_site)
    bare_gpu: bool = False  # --site and --wheels inside --out, as lib.jobs.device_launch reads them there
    queries: str = ""  # also the query lists notebook 05 speaks on this profile, for lib.jobs.device_run
    NAME: ClassVar[str] = "bundle"


@dataclass
class Pack:
    """Copy the latest generators, curves and env of a run to --out."""
    work: str  # the run's folder (its --work)
    out: str  # the committed folder the packs go to (outputs/recorded/training/<work>)
    device: str = "cuda"  # where the run trained (a GPU's hours are device-hours)
    ledger: str = ""  # append a row per packed decoder (held-out PESQ, mel L1, machine-hours)
    judged_sentences: int = JUDGED_SENTENCES  # with --ledger: held-out sentences the judges score (0: none)
    # pack the discriminators whose weights and moments fit in this many MB (piper's MRD: 3 MB; its MPD, 535 MB at
    # float32, stays in the run's local state); 0: none
    disc_limit_mb: float = 16.0
    disc_dtype: Literal["float32", "float16"] = "float32"  # float16 halves what a GPU slot brings back
    NAME: ClassVar[str] = "pack"


@dataclass
class JudgePacks:
    """Judge committed packs' held-out sentences (DNSMOS, Distill-MOS, WER, paired with the teacher) into the judged
    file beside the ledger, at the steps and hours their configs record: a run's points packed before the judges
    were."""
    packs: list[str]  # pack folders (<run>/<part>, as the ledger names them)
    judged: str  # the judged file (outputs/recorded/training_heldout_judged.csv)
    noise_scale: float = LONG_RUN_NOISE["noise_scale"]  # the corpus noise the judged audio is drawn at
    noise_w: float = LONG_RUN_NOISE["noise_w"]  # the duration noise beside it
    sentences: int = JUDGED_SENTENCES  # of the held-out list
    NAME: ClassVar[str] = "judge-packs"


@dataclass
class CorpusRun:
    """Write the teacher corpus: the teacher speaks every corpus sentence into float16 shards with a manifest."""
    out: str  # the corpus folder on the machine's own disk (not the repository: it holds gigabytes)
    voice: str = ""  # the teacher: a piper voice's .onnx (its .onnx.json beside it); empty: the lab's en_US-joe-medium
    seed: int = 49  # the text's shuffle and every item's sampling
    templated: int = corpus_text.TEMPLATED  # sentences of the templated family
    shard_items: int = 64  # items per shard: a 15-minute corpus is a prefix of a few shards
    limit: int = 0  # speak only the first N sentences (0: all): a small corpus for tests
    threads: int = 1  # torch threads of this process (start a second process to use a second core)
    device: str = "cpu"  # where the teacher speaks (cuda: a lent GPU, from a teacher bundle with the corpus's ids)
    seconds: float = 0.0  # claim no new shard after this many seconds (0: no limit): the corpus is the prefix written
    manifest_out: str = ""  # also copy the manifest here (outputs/recorded/corpus/<name>/manifest.json, committed)
    NAME: ClassVar[str] = "corpus"



StepPrecision = Literal["fp32", "bf16"]  # the step costs' precisions of the discriminators' passes
# the generator's loss beside the discriminators: the recipe's, or HiFi-GAN's alone (whose forward still computes its
# own spectral term and drops it, as a --gan-objective run does)
Objective = Literal["recipe", "gan"]


@dataclass
class StepCosts:
    """Time the frame-rate decoder's regression step and its adversarial steps, interleaved; write a CSV."""
    out: str = "outputs/step_costs/step_costs.csv"  # the CSV; env.json is written beside it
    dim: int = 192  # the frame-rate decoder's channels (the 5x voice's: 192)
    blocks: int = 6  # its ConvNeXt blocks
    batch: int = 4  # segments per batch (the long runs': 4)
    frames: int = 32  # latent frames per segment (the long runs': 32, i.e. 8192 samples)
    threads: int = 1  # CPU threads (the long runs': 1)
    reps: int = 3  # timed steps per option (the median is reported)
    warmup: int = 1  # untimed steps per option first
    # the discriminators timed (all the lab has)
    discriminators: list[DiscriminatorName] = field(default_factory=lambda: list(get_args(DiscriminatorName)))
    pair: bool = True  # also today's students' pair, mpd + mrd
    precisions: list[StepPrecision] = field(default_factory=lambda: ["fp32", "bf16"])  # of the discriminators' passes
    segments: list[int] = field(default_factory=lambda: [0, 4096])  # samples the discriminators see (0: all)
    objectives: list[Objective] = field(default_factory=lambda: ["recipe"])  # gan: --gan-objective's step
    corpus_limit: int = 4  # training sentences whose teacher latents make the batch
    quiet_wait_s: float = 10.0  # before each step, wait up to this long for other processes to leave the cores free
    NAME: ClassVar[str] = "step-costs"



JOBS = (Students, Regress, RegressIstft, RegressHybrid, RegressFlow, RegressFrontend, Bundle, Pack, JudgePacks)


@dataclass(frozen=True)
class RunConfig:
    """What one part of a long run is: written to --work/<part>/config.json when the part starts and read back by
    `pack`, so nothing is guessed from folder names or weight shapes (nanoGPT's `model_args`)."""
    part: str  # its folder under --work and in the pack: dec128-regress, flow96, istft192x6-adv, fe96, ...
    kind: str  # what voices.parts builds: decoder, istft_decoder, flow, frontend
    build: dict  # build_part's arguments: the widths that rebuild it
    recipe_name: str  # the ledger's and pack's name of its recipe: adversarial, regression-first, ...
    recipe: Recipe | None = None  # how it trains: budget `steps` (+ `schedule_offset` before), `seed`; None: legacy
    job: str = ""  # the tts-lab subcommand that trains it
    options: dict = field(default_factory=dict)  # that subcommand's options as parsed

    def __post_init__(self):
        if self.kind not in PARTS:
            raise ValueError(f"part {self.part!r}: kind {self.kind!r} is none of {sorted(PARTS)}")

    def write(self, work: Path) -> Path:
        """Write it to work/<part>/config.json; returns that path."""
        from lib.core.results import atomic_write_json
        path = Path(work) / self.part / CONFIG
        atomic_write_json(path, asdict(self))
        return path

    @classmethod
    def read(cls, run_dir: Path) -> "RunConfig":
        """The RunConfig a part's folder `run_dir` was started with. ArtefactError names the file that is missing or
        wrong."""
        from lib.jobs.run_state import read_json
        from lib.voices.artefacts import ArtefactError
        path = Path(run_dir) / CONFIG
        if not path.exists():
            raise ArtefactError(f"{path} is missing: the part's kind and build are read from the config its run wrote "
                                "when it started")
        data = read_json(path)
        try:
            recipe = Recipe(**data["recipe"]) if data.get("recipe") else None
            config = cls(**{**data, "recipe": recipe})
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtefactError(f"{path} is not a RunConfig ({type(exc).__name__}: {exc})") from None
        if config.part != Path(run_dir).name:
            raise ArtefactError(f"{path} describes part {config.part!r}, not the folder {Path(run_dir).name!r}")
        return config
