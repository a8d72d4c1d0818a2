"""APNet's explicit amplitude and phase losses (Ai and Ling, 2023, arXiv 2305.07952), the discriminator-free arm
of issue 39: a frame-rate decoder's own predicted log-amplitude and phase against the STFT of the teacher's
waveform, which is deterministic and phase-aligned here, so the losses are well-posed.

- amplitude: the mean squared error of the log-amplitudes;
- phase: the anti-wrapping function |x - 2 pi round(x / 2 pi)| of the instantaneous phase error, of the group delay
  error (phase differences along frequency) and of the instantaneous angular frequency error (differences along
  time).
Written here because no maintained package ships them (auraloss has magnitude and complex STFT losses only).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lib.voices.istft_decoder import stft


@dataclass
class PredictedSpectra:
    """What a frame-rate decoder predicted: log-amplitude and phase [B, n_fft/2+1, frames], frame t centred on
    sample t * hop, as its inverse STFT reads them; `edge` frames at each end of a segment are left out of the
    losses (there the cut and the padding change the frame)."""
    logmag: torch.Tensor
    phase: torch.Tensor
    n_fft: int
    hop: int
    edge: int = 2


def anti_wrap(x: torch.Tensor) -> torch.Tensor:
    """APNet's anti-wrapping function: the distance of an angle difference to the nearest multiple of 2 pi."""
    return (x - 2 * math.pi * torch.round(x / (2 * math.pi))).abs()


def apnet_losses(pred: PredictedSpectra, y: torch.Tensor, floor: float = 1e-5) -> dict[str, torch.Tensor]:
    """{'loss_amp', 'loss_ip', 'loss_gd', 'loss_iaf'} of `pred` against the STFT of `y` (amplitudes floored at
    `floor` before the log, on both sides)."""
    frames = pred.logmag.shape[-1]
    target = stft(y, pred.n_fft, pred.hop)[..., :frames]
    inner = slice(pred.edge, frames - pred.edge) if frames > 2 * pred.edge + 1 else slice(None)
    target = target[..., inner]
    logmag, phase = pred.logmag[..., inner].float(), pred.phase[..., inner].float()
    amp = torch.nn.functional.mse_loss(logmag.clamp_min(math.log(floor)), target.abs().clamp_min(floor).log())
    truth = target.angle()
    return {"loss_amp": amp,
            "loss_ip": anti_wrap(phase - truth).mean(),
            "loss_gd": anti_wrap(torch.diff(phase, dim=1) - torch.diff(truth, dim=1)).mean(),
            "loss_iaf": anti_wrap(torch.diff(phase, dim=2) - torch.diff(truth, dim=2)).mean()}


def spectra_forward(edge: int = 2):
    """The Trainer's forward for a frame-rate decoder (`spectra(z)`, `synthesize(logmag, phase)`, `istft`, `hop`)
    whose recipe weighs APNet's losses: (waveform, target waveform, no own terms, its PredictedSpectra)."""
    def forward(dec, batch):
        z, y = batch[:2]
        logmag, phase = dec.spectra(z)
        return dec.synthesize(logmag, phase), y, {}, PredictedSpectra(logmag, phase, dec.istft.n_fft, dec.hop, edge)
    return forward
