"""How to train (lib.training.loop trains by it): the Recipe with piper's defaults, its cosine schedule and the
EMA's warm-up. Data, not behaviour: a run's config records it whole."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

# the discriminators a recipe may name (lib.training.discriminators.REGISTRY builds each); here, so that a Recipe and
# the options that default to it import no torch
DiscriminatorName = Literal["mpd", "mrd", "mpd-235", "mpd-2", "wave-unet", "wave-unet-small"]
DISCRIMINATORS = get_args(DiscriminatorName)


@dataclass
class Recipe:
    """How to train. Defaults are piper's (lightning.py): lr 2e-4 (discriminator 1e-4), betas (0.8, 0.99), decay
    0.999875 (0.9999 for the discriminator), mel x45, feature matching x2 (in piper's feature_loss). The decay is
    applied per step here (piper steps it per epoch), so long runs decay faster than piper's."""
    steps: int
    lr: float = 2.0e-4
    lr_d: float = 1.0e-4
    betas: tuple = (0.8, 0.99)
    eps: float = 1.0e-9
    lr_decay: float = 0.999875
    lr_decay_d: float = 0.9999
    mel_weight: float = 45.0
    stft_weight: float = 0.0
    wave_weight: float = 0.0  # L1 on the waveform: well-posed here, the target is the teacher's own, phase-aligned
    cstft_weight: float = 0.0  # L1 on the real and imaginary parts of a multi-resolution STFT (phase included)
    adversarial: bool = True
    warmup_steps: int = 0
    disc_warmup_steps: int = 0  # after warmup_steps, steps where only fresh discriminators learn (the generator held)
    discriminators: tuple = ("mpd",)
    grad_clip: float | None = 100.0
    checkpoint_every: int = 100
    eval_every: int = 0
    log_every: int = 10
    mixed_precision: str = "no"
    seed: int = 0
    schedule: str = "exponential"  # piper's per-step decay, or "cosine": linear warm-up, then cosine over `steps`
    lr_warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    ema_decay: float = 0.0  # >0: an exponential moving average of the generator's weights, evaluated and packed
    # steps trained before this run (resumed from packed files): either schedule goes on from there
    schedule_offset: int = 0
    disc_bf16: bool = False  # the discriminators' passes under bf16 autocast (on a CPU only where it has native bf16)
    disc_segment: int = 0  # >0: the discriminators see a random window of this many samples of each segment
    amp_weight: float = 0.0  # APNet's log-amplitude loss (45 in APNet), on a forward's PredictedSpectra
    phase_weight: float = 0.0  # APNet's anti-wrapping phase losses, instantaneous + group delay + frequency (100)
    gan_objective: bool = False  # with the discriminators on, HiFi-GAN's generator loss only (mel x45, adversarial,
    # feature matching): the waveform-exact regression terms, which outweigh the adversarial ones 50 to 1, stop
    # the adversarial and feature-matching terms' weight in the generator's loss (piper's: 1): a GAN-weighted
    # objective gives the discriminators a larger share of what the generator learns from
    adv_weight: float = 1.0
    stop_step: int = 0  # >0: stop (checkpointed) at this step of the run, before its schedule ends (equal-step arms)

    @classmethod
    def adversarial_tail(cls, steps: int, adversarial_steps: int, **kw) -> "Recipe":
        """`steps` of reconstruction whose last `adversarial_steps` add the discriminators (fresh ones warm up)."""
        return cls(steps=steps, warmup_steps=max(0, steps - adversarial_steps), **kw)

    def __post_init__(self):
        if self.schedule not in ("exponential", "cosine"):
            raise ValueError(f"schedule {self.schedule!r}: use 'exponential' or 'cosine'")
        bad = [d for d in self.discriminators if d not in DISCRIMINATORS]
        if bad:
            raise ValueError(f"discriminators {bad}: use {DISCRIMINATORS}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"mixed_precision {self.mixed_precision!r}: use 'no', 'bf16' or 'fp16'")
        if self.gan_objective and not (self.adversarial and self.discriminators and self.warmup_steps < self.steps):
            raise ValueError("gan_objective switches the generator's loss once the discriminators start: "
                             "it needs adversarial steps")
        if self.disc_warmup_steps < 0 or self.stop_step < 0:
            raise ValueError(f"disc_warmup_steps {self.disc_warmup_steps}, stop_step {self.stop_step}: steps, >= 0")
        if self.adv_weight <= 0:
            raise ValueError(f"adv_weight {self.adv_weight}: a positive weight (1: piper's)")
        if self.disc_segment < 0:
            raise ValueError(f"disc_segment {self.disc_segment}: a number of samples, or 0 for the whole segment")
        self.discriminators, self.betas = tuple(self.discriminators), tuple(self.betas)


def cosine_factor(step: int, r: "Recipe") -> float:
    """The learning rate's factor at `step`: linear warm-up over `lr_warmup_steps`, then a cosine down to
    `min_lr_ratio` at `steps` (the run's whole budget, fixed when it starts); a run resumed from packed files counts
    its earlier steps in `schedule_offset`."""
    step, total = step + r.schedule_offset, r.steps + r.schedule_offset
    if step < r.lr_warmup_steps:
        return (step + 1) / r.lr_warmup_steps
    t = min(1.0, (step - r.lr_warmup_steps) / max(1, total - r.lr_warmup_steps))
    return r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def ema_with_warmup(decay: float):
    """An EMA update for torch's AveragedModel whose decay grows as min(decay, (1 + n) / (10 + n)) with the
    number of updates n (as timm's and TensorFlow's EMA do): a fixed 0.999 from step 0 would keep a third of the
    initial weights after 1000 steps. Written here because torch's get_ema_multi_avg_fn has no warm-up."""
    import torch

    def update(ema_params, params, n):
        d = min(decay, (1 + int(n)) / (10 + int(n)))
        torch._foreach_lerp_(ema_params, params, 1 - d)
    return update
