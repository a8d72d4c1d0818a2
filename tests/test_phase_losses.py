"""APNet's amplitude and phase losses (lib.training.phase_losses), the discriminator-free arm: zero for the
teacher's own spectra, growing with a phase shift, blind to whole turns of 2 pi, and a few steps of a tiny
frame-rate decoder trained on them through the one training stack."""
import math

import numpy as np
import pytest
import torch

from lib.training import loop as training
from lib.training import phase_losses as pl
from lib.voices.istft_decoder import FrameRateDecoder, stft

N_FFT, HOP, FRAMES = 256, 64, 40


def _signal(seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(FRAMES * HOP) / 8000
    tone = sum(torch.sin(2 * math.pi * f * t + p) for f, p in ((220, 0.3), (470, 1.1), (1330, 2.0)))
    return (0.2 * tone + 0.01 * torch.randn(FRAMES * HOP, generator=g)).reshape(1, 1, -1).repeat(2, 1, 1)


def _exact(y):
    spec = stft(y, N_FFT, HOP)[..., :FRAMES]
    return spec.abs().clamp_min(1e-12).log(), spec.angle()


def test_the_losses_are_zero_for_the_teachers_own_spectra_and_blind_to_whole_turns():
    y = _signal()
    logmag, phase = _exact(y)
    for p in (phase, phase + 2 * math.pi, phase - 4 * math.pi):
        losses = pl.apnet_losses(pl.PredictedSpectra(logmag, p, N_FFT, HOP), y)
        assert set(losses) == {"loss_amp", "loss_ip", "loss_gd", "loss_iaf"}
        assert all(v.item() < 1e-4 for v in losses.values()), losses
    x = torch.tensor([0.3, -0.3 + 2 * math.pi, 0.3 - 6 * math.pi, math.pi])
    assert torch.allclose(pl.anti_wrap(x), torch.tensor([0.3, 0.3, 0.3, math.pi]), atol=1e-5)


def test_the_phase_losses_grow_with_a_phase_shift_and_a_delay():
    y = _signal()
    logmag, phase = _exact(y)
    ip = [pl.apnet_losses(pl.PredictedSpectra(logmag, phase + d, N_FFT, HOP), y)["loss_ip"].item()
          for d in (0.0, 0.2, 0.6, 1.2)]
    assert ip[0] < 1e-4 and ip == sorted(ip) and ip[-1] == pytest.approx(1.2, abs=1e-3)
    # a constant shift leaves the phase's differences alone; a delay tilts the phase along frequency and time
    const = pl.apnet_losses(pl.PredictedSpectra(logmag, phase + 1.0, N_FFT, HOP), y)
    assert const["loss_gd"].item() < 1e-4 and const["loss_iaf"].item() < 1e-4
    bins = torch.arange(phase.shape[1]).reshape(1, -1, 1)
    delayed = phase - 2 * math.pi * bins * 3 / N_FFT  # three samples late
    late = pl.apnet_losses(pl.PredictedSpectra(logmag, delayed, N_FFT, HOP), y)
    assert late["loss_gd"].item() == pytest.approx(2 * math.pi * 3 / N_FFT, rel=1e-3)
    assert late["loss_ip"].item() > 0.5
    louder = pl.apnet_losses(pl.PredictedSpectra(logmag + 0.5, phase, N_FFT, HOP), y)["loss_amp"].item()
    assert louder == pytest.approx(0.25, rel=0.05)


def test_a_recipe_with_apnet_weights_refuses_a_forward_without_spectra(tmp_path):
    dec = FrameRateDecoder(4, 8, 1, n_fft=N_FFT, hop=HOP)
    recipe = training.Recipe(steps=1, adversarial=False, amp_weight=1.0, log_every=1)
    batch = (torch.randn(1, 4, 16), torch.randn(1, 1, 16 * HOP) * 0.1)
    with pytest.raises(ValueError, match="PredictedSpectra"):
        training.Trainer(dec, lambda rng: batch, recipe, tmp_path, forward=training.decoder_forward, threads=1,
                         progress=None).fit()


def test_a_tiny_frame_rate_decoder_trains_on_the_apnet_losses(tmp_path):
    """The arm end to end: a few steps through the Trainer, every APNet term in the curve and falling."""
    torch.manual_seed(0)
    dec = FrameRateDecoder(4, 16, 1, n_fft=N_FFT, hop=HOP)
    z = torch.randn(2, 4, FRAMES)
    y = _signal()
    recipe = training.Recipe(steps=12, adversarial=False, amp_weight=45.0, phase_weight=100.0, lr=3e-3,
                             log_every=1, checkpoint_every=100)
    curve = training.Trainer(dec, lambda rng: (z, y), recipe, tmp_path, forward=pl.spectra_forward(), threads=1,
                             progress=None, mel_hop=HOP).fit()
    frame = curve.frame
    for name in ("loss_amp", "loss_ip", "loss_gd", "loss_iaf"):
        assert np.isfinite(frame[name]).all(), name
    assert frame["loss_amp"].iloc[-1] < frame["loss_amp"].iloc[0]
    assert frame["loss_g"].iloc[-1] < frame["loss_g"].iloc[0]
