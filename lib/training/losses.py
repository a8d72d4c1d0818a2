"""The reconstruction losses of the one training stack: mel L1 as piper computes it, the multi-resolution STFT loss
(auraloss's) and a phase-aware complex STFT loss."""
from __future__ import annotations

import contextlib
import functools
import io

import auraloss
import torch

from lib.core.audio import DEFAULT_SAMPLE_RATE


def mel_l1(y_hat: torch.Tensor, y: torch.Tensor, sample_rate: int = DEFAULT_SAMPLE_RATE, n_fft: int = 1024,
           hop: int = 256, n_mels: int = 80) -> torch.Tensor:
    """L1 between log-mel spectrograms as piper computes them (`mel_spectrogram_torch`), in float32. piper prints a
    line for every waveform past [-1, 1], which a decoder's output often is by a hair: that print is swallowed."""
    from piper.train.vits.mel_processing import mel_spectrogram_torch
    with contextlib.redirect_stdout(io.StringIO()):
        a = mel_spectrogram_torch(y_hat.reshape(-1, y_hat.shape[-1]).float(), n_fft, n_mels, sample_rate, hop, n_fft,
                                  0.0, None)
        b = mel_spectrogram_torch(y.reshape(-1, y.shape[-1]).float(), n_fft, n_mels, sample_rate, hop, n_fft, 0.0, None)
    return torch.nn.functional.l1_loss(a, b)



@functools.lru_cache(maxsize=1)
def _mr_stft() -> auraloss.freq.MultiResolutionSTFTLoss:
    return auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[512, 1024, 2048], hop_sizes=[128, 256, 512],
                                                 win_lengths=[512, 1024, 2048], w_sc=1.0, w_log_mag=1.0, w_lin_mag=0.0)


def mr_stft_loss(y_hat, y):
    """Multi-resolution STFT loss (Parallel WaveGAN: spectral convergence + log-magnitude L1, averaged over three
    resolutions), auraloss's."""
    return _mr_stft()(y_hat.reshape(-1, 1, y_hat.shape[-1]).float(), y.reshape(-1, 1, y.shape[-1]).float())


def complex_stft_loss(y_hat, y, resolutions=((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))):
    """L1 between the real and imaginary parts of multi-resolution STFTs, over the target's mean magnitude: a
    phase-aware spectral loss, which makes sense only where the target is phase-aligned (a teacher's own output)."""
    total = 0.0
    for n_fft, hop, win in resolutions:
        window = torch.hann_window(win, device=y.device)
        a = torch.stft(y_hat.reshape(-1, y_hat.shape[-1]).float(), n_fft, hop, win, window=window, return_complex=True)
        b = torch.stft(y.reshape(-1, y.shape[-1]).float(), n_fft, hop, win, window=window, return_complex=True)
        total = total + (torch.view_as_real(a) - torch.view_as_real(b)).abs().mean() / b.abs().mean().clamp_min(1e-7)
    return total / len(resolutions)
