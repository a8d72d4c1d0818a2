"""The x_low front end of the 5x voice as a part of the voice: piper's own `TextEncoder` at x_low widths and its
deterministic `DurationPredictor`, and how a voice speaks through one. How it is trained:
techniques.frontend_student."""
from __future__ import annotations

import copy

import torch
from torch import nn


class FrontEnd(nn.Module):
    """Phoneme ids -> (m_p, logs_p, log-durations, mask), all per phoneme, the teacher's shapes. `enc_p` and `dp`
    are the attributes a SynthesizerTrn uses, so `with_frontend` can put them into a voice as they are."""

    def __init__(self, n_vocab: int, out_channels: int = 192, hidden_channels: int = 96, filter_channels: int = 384,
                 n_heads: int = 2, n_layers: int = 6, kernel_size: int = 3, dp_filter_channels: int = 256,
                 dp_kernel_size: int = 3):
        super().__init__()
        from piper.train.vits.models import DurationPredictor, TextEncoder
        self.config = dict(n_vocab=n_vocab, out_channels=out_channels, hidden_channels=hidden_channels,
                           filter_channels=filter_channels, n_heads=n_heads, n_layers=n_layers, kernel_size=kernel_size,
                           dp_filter_channels=dp_filter_channels, dp_kernel_size=dp_kernel_size)
        self.enc_p = TextEncoder(n_vocab, out_channels, hidden_channels, filter_channels, n_heads, n_layers,
                                 kernel_size, 0.0)
        self.dp = DurationPredictor(hidden_channels, dp_filter_channels, dp_kernel_size, 0.0)

    def forward(self, x: torch.Tensor, x_lengths: torch.Tensor):
        h, m_p, logs_p, x_mask = self.enc_p(x, x_lengths)
        return m_p, logs_p, self.log_durations(h, x_mask), x_mask

    def log_durations(self, h: torch.Tensor, x_mask: torch.Tensor) -> torch.Tensor:
        """piper's DurationPredictor.forward without its `detach`: in training the duration loss shapes the small
        encoder too (the teacher's encoder was shaped by its own losses); at inference the output is the same."""
        dp = self.dp
        y = dp.norm_1(torch.relu(dp.conv_1(h * x_mask)))
        y = dp.norm_2(torch.relu(dp.conv_2(y * x_mask)))
        return dp.proj(y * x_mask) * x_mask


def voice_frontend_build(voice) -> dict:
    """The FrontEnd arguments of a voice that speaks through one (`with_frontend` keeps its enc_p and dp, not its
    config): read off those two modules."""
    enc, dp = voice.enc_p, voice.dp
    return {"n_vocab": enc.n_vocab, "out_channels": enc.out_channels, "hidden_channels": enc.hidden_channels,
            "filter_channels": enc.filter_channels, "n_heads": enc.n_heads, "n_layers": enc.n_layers,
            "kernel_size": enc.kernel_size, "dp_filter_channels": dp.filter_channels, "dp_kernel_size": dp.kernel_size}


def frontend_of(voice) -> FrontEnd:
    """The front end a voice speaks through (one made by `with_frontend`), as a FrontEnd sharing its enc_p and dp."""
    if getattr(voice, "use_sdp", True):
        raise ValueError("this voice speaks through its own stochastic duration predictor, not a front-end student")
    fe = FrontEnd(**voice_frontend_build(voice))
    fe.enc_p, fe.dp = voice.enc_p, voice.dp
    return fe.eval()


def with_frontend(model, frontend: FrontEnd):
    """A copy of the voice that speaks through `frontend`: its text encoder and its deterministic duration predictor
    (the voice's `use_sdp` off, so piper's `infer` calls it as VITS' DurationPredictor). Flow and decoder stay."""
    out = copy.deepcopy(model)
    fe = copy.deepcopy(frontend).eval()
    out.enc_p, out.dp, out.use_sdp = fe.enc_p, fe.dp, False
    return out.eval()
