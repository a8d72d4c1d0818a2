"""A hybrid decoder for the decoder-alone target (iSTFTNet's recipe, arXiv 2203.02395): the teacher's HiFi-GAN decoder
(piper's Generator) up to its first `keep_stages` upsampling stages, then an iSTFT head in place of the last ones.

The kept stages are piper's own layers (conv_pre, transposed convolutions, residual blocks) at the student's width, so
the teacher's weights pruned to that width (techniques.channel_prune.hybrid_student) start them. The head is one
convolution that predicts a log-magnitude and a phase per STFT bin at the kept stages' rate; the inverse STFT
(istft_decoder.MatmulISTFT, hop = the dropped stages' upsampling factor, n_fft = 4 x hop by default) makes the
waveform. For en_US-joe-medium (rates 8, 8, 4) the default split keeps 8 x 8 and inverts with hop 4, n_fft 16:
iSTFTNet's C8C8I. Same input and output length as the teacher's decoder, so it drops into the voice as a decoder."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lib.voices.istft_decoder import MatmulISTFT, spectra_to_wave

LRELU_SLOPE = 0.1  # piper's Generator.LRELU_SLOPE; before the head, F.leaky_relu's default 0.01 as before conv_post
HEAD_KERNEL = 7  # iSTFTNet's conv_post



def run_stages(dec, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """piper's Generator.forward up to its last stage, step by step, for any decoder with its conv_pre, ups and
    resblocks (the teacher's, a pruned one, the hybrid): (last stage's output, [conv_pre output, each stage's])."""
    x = dec.conv_pre(z)
    feats = [x]
    for i, up in enumerate(dec.ups):
        x = up(F.leaky_relu(x, LRELU_SLOPE))
        blocks = dec.resblocks[i * dec.num_kernels:(i + 1) * dec.num_kernels]
        x = sum(b(x) for b in blocks) / dec.num_kernels
        feats.append(x)
    return x, feats

class HybridDecoder(nn.Module):
    """Latent z [B, C, frames] -> waveform [B, 1, frames * prod(upsample_rates)]. The arguments are piper's Generator's
    (a decoder part's build: `parts.decoder_build`) plus `keep_stages` and `n_fft`; `config` rebuilds it."""

    def __init__(self, inter_channels: int, resblock: str, resblock_kernel_sizes, resblock_dilation_sizes,
                 upsample_rates, upsample_initial_channel: int, upsample_kernel_sizes, keep_stages: int = 2,
                 n_fft: int | None = None):
        super().__init__()
        from piper.train.vits.models import Generator  # deferred like parts': piper is heavy
        rates, kernels = [int(u) for u in upsample_rates], [int(k) for k in upsample_kernel_sizes]
        if not 0 < keep_stages < len(rates):
            raise ValueError(f"keep_stages={keep_stages}: keep at least one of the {len(rates)} stages and replace one")
        self.hop = math.prod(rates[keep_stages:])  # the iSTFT's hop: what the dropped stages upsampled
        n_fft = int(n_fft or 4 * self.hop)
        self.config = dict(inter_channels=int(inter_channels), resblock=str(resblock),
                           resblock_kernel_sizes=[int(k) for k in resblock_kernel_sizes],
                           resblock_dilation_sizes=[[int(d) for d in ds] for ds in resblock_dilation_sizes],
                           upsample_rates=rates, upsample_initial_channel=int(upsample_initial_channel),
                           upsample_kernel_sizes=kernels, keep_stages=int(keep_stages), n_fft=n_fft)
        # piper's own layers for the kept stages, weight-normed as piper builds them (parts.fold_weight_norm folds
        # them, as it folds a decoder student's, before a pruned teacher's weights go in)
        body = Generator(inter_channels, resblock, tuple(resblock_kernel_sizes),
                         [tuple(d) for d in resblock_dilation_sizes],
                         tuple(rates[:keep_stages]), upsample_initial_channel, tuple(kernels[:keep_stages]))
        self.conv_pre, self.ups, self.resblocks, self.num_kernels = (body.conv_pre, body.ups, body.resblocks,
                                                                     body.num_kernels)
        channels = upsample_initial_channel // 2 ** keep_stages
        self.conv_post = nn.Conv1d(channels, n_fft + 2, HEAD_KERNEL, padding=HEAD_KERNEL // 2)  # log-magnitude, phase
        nn.init.normal_(self.conv_post.weight, 0.0, 0.01)  # piper's / iSTFTNet's init_weights
        nn.init.zeros_(self.conv_post.bias)
        self.istft = MatmulISTFT(n_fft, self.hop)

    def stages(self, z: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The kept stages, as channel_prune.stage_outputs runs the teacher's: (last stage's output, [conv_pre
        output, each kept stage's output]), the streams a pruned start's stage targets are taken on."""
        return run_stages(self, z)

    def head(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logmag, phase = self.conv_post(F.leaky_relu(x)).chunk(2, dim=1)
        return logmag, phase

    def spectra(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-magnitude and phase [B, n_fft/2+1, frames * kept rate], STFT frame t centred on sample t * hop (as
        FrameRateDecoder.spectra, so the frame-rate decoder's spectral loss applies unchanged)."""
        return self.head(self.stages(z)[0])

    def synthesize(self, logmag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        return spectra_to_wave(self.istft, logmag, phase)

    def forward(self, z: torch.Tensor, g=None) -> torch.Tensor:
        return self.synthesize(*self.spectra(z))
