"""The discriminators a run can select by name, each a small frozen spec that builds a fresh module with piper's
interface (`d(y, y_hat) -> (real outputs, fake outputs, real feature maps, fake feature maps)`), so piper's
`discriminator_loss`, `generator_loss` and `feature_loss` apply to every one of them:

- `mpd`, `mrd`: piper's own MultiPeriodDiscriminator and MultiResolutionDiscriminator, as piper trains with them;
- `mpd-235`, `mpd-2`: piper's period discriminators for fewer periods and without the scale discriminator (issue 39:
  an adversarial step the CPU can afford);
- `wave-unet`, `wave-unet-small`: the Wave-U-Net discriminator (Kaneko et al., ICASSP 2023, arXiv 2303.13909), one
  sample-wise encoder-decoder in place of an ensemble. No maintained package ships it (none on PyPI, the authors
  published no code), so it is written here from the paper's description (figures 2-3). At the recipe's
  discriminator rate (1e-4) it stays at chance, on a clean-vs-noisy probe and over a 10,008-step arm of issue 39
  (tests/test_training.py); it learns at 1e-3. The CPU arms use `mrd` or `mpd-2`, which learn at 1e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn



@dataclass(frozen=True)
class PeriodDiscriminators:
    """piper's MultiPeriodDiscriminator kept to `periods` (and its scale discriminator where `scale`)."""
    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    scale: bool = True

    def build(self) -> nn.Module:
        from piper.train.vits.models import MultiPeriodDiscriminator  # piper's training code: deferred, as loop's
        mpd = MultiPeriodDiscriminator()
        if self.periods != (2, 3, 5, 7, 11) or not self.scale:
            subs = list(mpd.discriminators)
            mpd.discriminators = nn.ModuleList(([subs[0]] if self.scale else [])
                                               + [d for d in subs[1:] if d.period in self.periods])
        return mpd


@dataclass(frozen=True)
class ResolutionDiscriminators:
    """piper's MultiResolutionDiscriminator (three STFT resolutions), as it is."""

    def build(self) -> nn.Module:
        from piper.train.vits.models import MultiResolutionDiscriminator
        return MultiResolutionDiscriminator()


@dataclass(frozen=True)
class WaveUNet:
    """A Wave-U-Net discriminator with these encoder widths (the paper's: 32 ... 512, five levels of stride 3)."""
    channels: tuple[int, ...] = (32, 64, 128, 256, 512)

    def build(self) -> nn.Module:
        return WaveUNetDiscriminator(self.channels)


REGISTRY: dict[str, PeriodDiscriminators | ResolutionDiscriminators | WaveUNet] = {
    "mpd": PeriodDiscriminators(),
    "mrd": ResolutionDiscriminators(),
    "mpd-235": PeriodDiscriminators((2, 3, 5), scale=False),
    "mpd-2": PeriodDiscriminators((2,), scale=False),
    "wave-unet": WaveUNet(),
    "wave-unet-small": WaveUNet((16, 32, 64, 128, 256)),
}


def build(names) -> nn.ModuleDict:
    """Fresh discriminators for `names` (keys of REGISTRY), in that order."""
    return nn.ModuleDict({n: REGISTRY[n].build() for n in names})


# --- the Wave-U-Net discriminator ------------------------------------------------------------------------------

STRIDE, SLOPE, RESIDUAL_SCALE = 3, 0.1, 0.4


def global_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The paper's normalisation: each item divided by the RMS of all its features (channels x time), no
    parameters; it keeps the deep, unnormalised discriminator's features from collapsing."""
    return x * torch.rsqrt(x.float().pow(2).mean(dim=(1, 2), keepdim=True) + eps).to(x.dtype)


class _Down(nn.Module):
    """Length / 3, channels c_in -> c_out: a pooled shortcut (1x1 conv) plus a residual branch (strided conv k6
    beside the pooled input repeated to c_out channels, then conv k5), scaled by 0.4, then global norm."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % c_in:
            raise ValueError(f"Wave-U-Net down block {c_in} -> {c_out}: c_out must be a multiple of c_in")
        self.repeat = c_out // c_in
        self.short = nn.Conv1d(c_in, c_out, 1)
        self.down = nn.Conv1d(c_in, c_out, 6, STRIDE, padding=2)
        self.conv = nn.Conv1d(c_out, c_out, 5, padding=2)

    def forward(self, x):
        pooled = nn.functional.avg_pool1d(x, STRIDE)
        h = nn.functional.leaky_relu(x, SLOPE)
        h = self.down(h) + nn.functional.avg_pool1d(h, STRIDE).repeat(1, self.repeat, 1)
        h = self.conv(nn.functional.leaky_relu(h, SLOPE))
        return global_norm(self.short(pooled) + RESIDUAL_SCALE * h)


class _Up(nn.Module):
    """Length x 3, channels c_in -> c_out: an upsampled shortcut (1x1 conv) plus a residual branch (transposed conv
    k6 beside the upsampled input's first c_out channels, then conv k5), scaled by 0.4, then global norm."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.c_out = c_out
        self.short = nn.Conv1d(c_in, c_out, 1)
        self.up = nn.ConvTranspose1d(c_in, c_out, 6, STRIDE, padding=2, output_padding=1)
        self.conv = nn.Conv1d(c_out, c_out, 5, padding=2)

    def forward(self, x):
        h = nn.functional.leaky_relu(x, SLOPE)
        h = self.up(h) + h.repeat_interleave(STRIDE, dim=-1)[:, : self.c_out]
        h = self.conv(nn.functional.leaky_relu(h, SLOPE))
        return global_norm(self.short(x).repeat_interleave(STRIDE, dim=-1) + RESIDUAL_SCALE * h)


class WaveUNetDiscriminator(nn.Module):
    """One sample-wise discriminator: an encoder of stride-3 blocks, a mirrored decoder fed the encoder's outputs
    by skip connections, and a conv to one logit per input sample. Every block's output is a feature map for the
    feature-matching loss. Called as piper's ensembles are, `(y, y_hat)`, it returns one-element lists."""

    def __init__(self, channels=(32, 64, 128, 256, 512)):
        super().__init__()
        ch = tuple(channels)
        n = len(ch)
        self.multiple = STRIDE ** n
        self.downs = nn.ModuleList(_Down(1 if i == 0 else ch[i - 1], ch[i]) for i in range(n))
        ins = [ch[-1]] + [2 * ch[n - 1 - j] for j in range(1, n)]
        outs = [ch[n - 2 - j] for j in range(n - 1)] + [ch[0]]
        self.ups = nn.ModuleList(_Up(a, b) for a, b in zip(ins, outs))
        self.out = nn.Conv1d(ch[0], 1, 5, padding=2)

    def judge(self, x: torch.Tensor) -> tuple[torch.Tensor, list]:
        """Waveform [B, 1, T] -> (logits [B, T], feature maps)."""
        length = x.shape[-1]
        x = nn.functional.pad(x, (0, -length % self.multiple))  # every level divides by 3 exactly
        skips, fmap = [], []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        fmap += skips
        for j, up in enumerate(self.ups):
            if j:
                x = torch.cat([x, skips[-1 - j]], dim=1)
            x = up(x)
            fmap.append(x)
        logits = self.out(x)[..., :length]
        fmap.append(logits)
        return logits.flatten(1), fmap

    def forward(self, y, y_hat):
        (r, fr), (g, fg) = self.judge(y), self.judge(y_hat)
        return [r], [g], [fr], [fg]
