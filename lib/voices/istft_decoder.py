"""A frame-rate decoder for the 5x voice (Vocos-style): ConvNeXt blocks at the latent's own frame rate (86 Hz for a
22.05 kHz voice with hop 256) predict a magnitude and a phase per STFT bin, and an inverse STFT makes the waveform.
No time-domain upsampling: the HiFi-GAN decoder's 8x8x4 transposed convolutions, most of the voice's compute, are gone.

The inverse STFT is written as one matrix product (the inverse real DFT with the synthesis window folded in) plus an
overlap-add of hop-long pieces (pads and adds), then divided by the summed squared window.
It exports to ONNX with plain MatMul/Pad/Add (no `STFT` op, no complex tensors) and matches `torch.istft`
(center=True, Hann window) within 1e-4. Written by hand because torch.istft does not export to ONNX and neither
Vocos nor piper ship an exportable one as a package."""
from __future__ import annotations

import math

import torch
from torch import nn


def stft(y: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """The complex STFT [B, n_fft/2+1, T/hop + 1] of waveforms [B, 1, T] (Hann, centred) that `MatmulISTFT`
    inverts, frame t centred on sample t * hop: a frame-rate decoder's dense, phase-aligned targets."""
    window = torch.hann_window(n_fft, periodic=True, device=y.device, dtype=torch.float32)
    return torch.stft(y.reshape(y.shape[0], -1).float(), n_fft, hop, window=window, center=True, return_complex=True)


class MatmulISTFT(nn.Module):
    """Inverse STFT of (magnitude, phase) spectra [B, n_fft/2+1, frames] -> waveform [B, (frames-1)*hop], equal to
    `torch.istft(mag * exp(i*phase), n_fft, hop, window=hann(n_fft), center=True)`."""

    def __init__(self, n_fft: int = 1024, hop: int = 256):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        bins = n_fft // 2 + 1
        window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
        n = torch.arange(n_fft, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)
        angle = 2 * math.pi * k[:, None] * n[None, :] / n_fft
        scale = torch.full((bins, 1), 2.0, dtype=torch.float64)
        scale[0] = scale[-1] = 1.0  # DC and Nyquist appear once in the one-sided spectrum
        self.register_buffer("cos", (scale * torch.cos(angle) / n_fft * window).float(), persistent=False)
        self.register_buffer("sin", (-scale * torch.sin(angle) / n_fft * window).float(), persistent=False)
        if n_fft % hop:
            raise ValueError(f"n_fft ({n_fft}) must be a multiple of hop ({hop}) for the overlap-add")
        self.register_buffer("win_sq", (window ** 2).float().reshape(1, n_fft // hop, hop, 1), persistent=False)

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [B, R*hop, T] -> [B, (T+R-1)*hop]: each frame cut into its R hop-long pieces, piece j of frame t
        added at hop index t+j. Pads and adds only, O(n_fft) per frame (a transposed convolution with an identity
        kernel, the usual export trick, costs n_fft^2 multiply-adds per frame)."""
        r = self.n_fft // self.hop
        pieces = frames.reshape(frames.shape[0], r, self.hop, frames.shape[-1])
        out = sum(nn.functional.pad(pieces[:, j], (j, r - 1 - j)) for j in range(r))  # [B, hop, T+R-1]
        return out.transpose(1, 2).reshape(frames.shape[0], -1)

    def forward(self, mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        real, imag = mag * torch.cos(phase), mag * torch.sin(phase)
        frames = torch.matmul(real.transpose(1, 2), self.cos) + torch.matmul(imag.transpose(1, 2), self.sin)
        frames = frames.transpose(1, 2)  # [B, n_fft, T] windowed time frames
        audio = self.overlap_add(frames)
        norm = self.overlap_add(self.win_sq.expand(1, -1, -1, frames.shape[-1]).reshape(1, self.n_fft, -1))
        pad = self.n_fft // 2
        length = (frames.shape[-1] - 1) * self.hop
        return (audio / norm.clamp_min(1e-11))[:, pad:pad + length]


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP (x3) with a learned layer scale, residual (Vocos)."""

    def __init__(self, dim: int, mult: int = 3, scale: float = 1e-2):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1, self.pw2 = nn.Linear(dim, dim * mult), nn.Linear(dim * mult, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x):
        y = self.dw(x).transpose(1, 2)
        y = self.pw2(nn.functional.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class FrameRateDecoder(nn.Module):
    """Latent z [B, C, frames] -> waveform [B, 1, frames * hop]: a drop-in for the VITS decoder (same input, same
    output length), so `distill.with_parts` and the training stack take it as they take a HiFi-GAN student.

    `mag_hidden` > 0 adds a GELU MLP beside the linear head's log-magnitudes (not its phases): a linear head of
    `dim` inputs puts every frame's log-magnitudes in one `dim`-dimensional affine subspace, and the teacher's
    projected onto 192 dimensions already lose DNSMOS P.808 (issue 66's magnitude study). Its last layer starts at
    zero, so a decoder grown from a linear-head pack speaks as that pack did (GROWN: the keys such a pack lacks)."""
    GROWN = ("mag_mlp.",)

    def __init__(self, in_channels: int = 192, dim: int = 256, blocks: int = 6, n_fft: int = 1024, hop: int = 256,
                 mag_hidden: int = 0):
        super().__init__()
        self.config = dict(in_channels=in_channels, dim=dim, blocks=blocks, n_fft=n_fft, hop=hop)
        if mag_hidden:  # only where it is used: the packs written before it keep their config
            self.config["mag_hidden"] = mag_hidden
        self.embed = nn.Conv1d(in_channels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.Sequential(*[ConvNeXtBlock(dim) for _ in range(blocks)])
        self.final = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_fft + 2)  # log-magnitude and phase per bin
        self.mag_mlp = None
        if mag_hidden:
            self.mag_mlp = nn.Sequential(nn.Linear(dim, mag_hidden), nn.GELU(), nn.Linear(mag_hidden, n_fft // 2 + 1))
            nn.init.zeros_(self.mag_mlp[-1].weight)
            nn.init.zeros_(self.mag_mlp[-1].bias)
        self.istft = MatmulISTFT(n_fft, hop)
        self.hop = hop

    def spectra(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted log-magnitude and phase [B, n_fft/2+1, frames], one STFT frame per latent frame (frame t
        centred on sample t * hop): the regression recipe's dense targets are the teacher's STFT at these frames."""
        x = self.norm(self.embed(z).transpose(1, 2)).transpose(1, 2)
        x = self.final(self.blocks(x).transpose(1, 2))
        logmag, phase = self.head(x).transpose(1, 2).chunk(2, dim=1)
        if self.mag_mlp is not None:
            logmag = logmag + self.mag_mlp(x).transpose(1, 2)
        return logmag, phase

    def forward(self, z: torch.Tensor, g=None) -> torch.Tensor:
        return self.synthesize(*self.spectra(z))

    def synthesize(self, logmag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """(log-magnitude, phase) at the latent's frames -> waveform [B, 1, frames * hop]."""
        return spectra_to_wave(self.istft, logmag, phase)


def spectra_to_wave(istft: MatmulISTFT, logmag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """(log-magnitude, phase) [B, n_fft/2+1, T] -> waveform [B, 1, T * hop] through `istft`: the magnitude exp'd
    (clamped), one frame repeated at the end so that T frames give T * hop samples, as the HiFi-GAN decoder's."""
    mag = torch.exp(logmag.clamp(max=6.0))
    mag = nn.functional.pad(mag, (0, 1), mode="replicate")
    phase = nn.functional.pad(phase, (0, 1), mode="replicate")
    return istft(mag, phase).unsqueeze(1).clamp(-1.0, 1.0)  # Vocos clips; tanh would bend the waveform
