"""The regression-first distillation recipe for a channel-pruned decoder student (issue 25), beside the adversarial
one: the student learns the teacher's own waveform for the same latent, which is deterministic and phase-aligned,
so cheap dense losses are well-posed: waveform L1, a complex multi-resolution STFT, mel, and each stage's output
against the teacher's on the kept channels (channel_prune). A cosine schedule over the run's budget and an EMA of
the weights; piper's discriminators come only as a short, last phase, where they win at equal machine time."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from lib.core.pause import yield_point
from lib.techniques.channel_prune import stage_outputs
from lib.training.batches import Latents
from lib.training.loop import Recipe
from lib.voices.istft_decoder import stft

# The recipe's loss weights (beside mel x45, piper's): each term ~1-10 at the start of a pruned student's run.
WEIGHTS = {"wave": 50.0, "cstft": 5.0, "stft": 2.5, "feature": 5.0, "spectral": 5.0}


@dataclass
class StageTargets:
    """Per utterance: the teacher's output of each stream (conv_pre, then each stage) on the kept channels (fp16,
    to halve the memory), and each stream's samples per latent frame."""
    feats: list  # [utterance][stream] -> tensor [1, kept, frames * rate]
    rates: list[int]


@torch.no_grad()
def stage_targets(teacher_dec, lat: Latents, keep) -> StageTargets:
    """Run the teacher's decoder (weight norm folded) once over each utterance's latent."""
    feats = []
    for z in lat.z:
        yield_point()
        _, fs = stage_outputs(teacher_dec, z)
        feats.append([f.index_select(1, k).half() for f, k in zip(fs, keep)])
    rates = [1] + [int(np.prod([u.stride[0] for u in teacher_dec.ups][:i + 1])) for i in range(len(teacher_dec.ups))]
    return StageTargets(feats, rates)


def segments(lat: Latents, targets: StageTargets, batch: int, frames: int, rng: np.random.Generator):
    """A batch of aligned (z, waveform, stream 0, stream 1, ...) segments of `frames` latent frames (zero-padded
    where an utterance is shorter)."""
    out = None
    for _ in range(batch):
        i = int(rng.integers(len(lat.z)))
        n = lat.z[i].shape[-1]
        s = int(rng.integers(n - frames)) if n > frames else 0
        pad = max(0, frames - n)
        items = [(lat.z[i], 1), (lat.wav[i], lat.hop)] + [(f, r) for f, r in zip(targets.feats[i], targets.rates)]
        cut = [torch.nn.functional.pad(t[..., s * r:(s + frames) * r].float(), (0, pad * r)) for t, r in items]
        out = [[c] for c in cut] if out is None else [o + [c] for o, c in zip(out, cut)]
    return tuple(torch.cat(o) for o in out)


@torch.no_grad()
def with_stage_targets(teacher_dec, keep, batch: tuple) -> tuple:
    """A (z, waveform) batch with the teacher's stage outputs on the kept channels appended, computed on the batch's
    own segments (a streamed corpus holds no per-utterance targets; at a segment's edges they see the segment's
    zero context, as the student does), where the teacher's decoder is (a GPU's, on a lent one)."""
    device = next(teacher_dec.parameters()).device
    z, y = (t.to(device) for t in batch)
    _, feats = stage_outputs(teacher_dec, z)
    return (z, y, *[f.index_select(1, k.to(device)) for f, k in zip(feats, keep)])


def feature_forward(weight: float):
    """The Trainer's forward for this recipe: (student waveform, teacher waveform, {'loss_feat': (weight, L1 of
    each stage's output against the teacher's, over the teacher's mean magnitude, averaged over stages)})."""
    def forward(dec, batch):
        z, y, *teacher_feats = batch
        y_hat, feats = stage_outputs(dec, z)
        if not teacher_feats or not weight:
            return y_hat, y
        loss = sum((f - t).abs().mean() / t.abs().mean().clamp_min(1e-6) for f, t in zip(feats, teacher_feats))
        return y_hat, y, {"loss_feat": (weight, loss / len(feats))}
    return forward


def recipe(steps: int, lr: float = 5e-4, warmup: int = 200, ema: float = 0.999, adversarial_steps: int = 0, **kw):
    """The regression-first Recipe over `steps` (its cosine runs to the end of the budget); `adversarial_steps` > 0
    turns on piper's discriminators for the last steps."""
    return Recipe.adversarial_tail(steps, adversarial_steps, lr=lr, betas=(0.9, 0.99), schedule="cosine",
                                   lr_warmup_steps=warmup, ema_decay=ema, wave_weight=WEIGHTS["wave"],
                                   cstft_weight=WEIGHTS["cstft"], stft_weight=WEIGHTS["stft"],
                                   adversarial=adversarial_steps > 0, grad_clip=10.0, **kw)


def spectral_terms(dec, logmag: torch.Tensor, phase: torch.Tensor, y: torch.Tensor, edge: int = 2,
                   floor: float = 1e-4) -> torch.Tensor:
    """L1 of the log-magnitudes + the magnitude-weighted phase distance 1 - cos(phase error), wrap-free, of an iSTFT
    decoder's spectra against the teacher waveform `y`'s STFT, leaving out `edge` frames at each end of a segment
    (there the cut and the padding change the frame)."""
    frames = logmag.shape[-1]
    target = stft(y, dec.istft.n_fft, dec.hop)[..., :frames]
    inner = slice(edge, frames - edge) if frames > 2 * edge + 1 else slice(None)
    mag = target.abs()[..., inner]
    l_mag = (logmag[..., inner].clamp_min(math.log(floor)) - mag.clamp_min(floor).log()).abs().mean()
    w = mag / mag.mean().clamp_min(1e-8)
    l_phase = (w * (1 - torch.cos(phase[..., inner] - target.angle()[..., inner]))).mean()
    return l_mag + l_phase


def spectral_forward(weight: float):
    """The Trainer's forward for a frame-rate (iSTFT) decoder: its waveform plus {'loss_spec': (weight,
    spectral_terms)} against the teacher's STFT."""
    def forward(dec, batch):
        z, y = batch[:2]
        logmag, phase = dec.spectra(z)
        y_hat = dec.synthesize(logmag, phase)
        if not weight:
            return y_hat, y
        return y_hat, y, {"loss_spec": (weight, spectral_terms(dec, logmag, phase, y))}
    return forward


def hybrid_forward(spectral_weight: float, feature_weight: float):
    """The Trainer's forward for a hybrid decoder (teacher stages, then an iSTFT head): its waveform, the spectral
    terms of its head, and its kept stages' outputs against the teacher's (as feature_forward's)."""
    def forward(dec, batch):
        z, y, *teacher_feats = batch
        x, feats = dec.stages(z)
        logmag, phase = dec.head(x)
        y_hat = dec.synthesize(logmag, phase)
        extra = {"loss_spec": (spectral_weight, spectral_terms(dec, logmag, phase, y))}
        if teacher_feats and feature_weight:
            loss = sum((f - t).abs().mean() / t.abs().mean().clamp_min(1e-6) for f, t in zip(feats, teacher_feats))
            extra["loss_feat"] = (feature_weight, loss / len(teacher_feats))
        return y_hat, y, extra
    return forward
