"""The lighter front end of the 5x voice (issue 16): piper's own `TextEncoder` at x_low widths (hidden 96, filter
384) and piper's deterministic `DurationPredictor` in place of the teacher's stochastic one, fitted by regression on
the teacher's own prior statistics (m_p, logs_p per phoneme) and log-durations. It speaks into the teacher's latent
space, so the teacher's flow and decoder, or students of them, take its output unchanged; the teacher's timing is
what it learns, so the alignment stays the teacher's. A technique: it builds and trains, it never measures.

Each training example is one whole sentence (the text encoder's attention sees the sentence), padded in a batch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lib.training.loop import Trainer
from lib.voices.frontend import FrontEnd
from lib.voices.parts import build_part


def frontend_build(teacher_model, hidden: int = 96, filter_channels: int = 384, n_layers: int | None = None,
                   dp_filter_channels: int | None = None) -> dict:
    """The arguments that rebuild a front-end student (voices.parts' 'frontend'): the teacher's vocabulary,
    latent width, heads and kernel; `hidden`/`filter_channels` (piper's x_low: 96/384); layers as the teacher's."""
    enc = teacher_model.enc_p
    return {"n_vocab": int(teacher_model.n_vocab), "out_channels": int(enc.out_channels),
            "hidden_channels": int(hidden), "filter_channels": int(filter_channels), "n_heads": int(enc.n_heads),
            "n_layers": int(n_layers or enc.n_layers), "kernel_size": int(enc.kernel_size),
            "dp_filter_channels": int(dp_filter_channels or hidden), "dp_kernel_size": 3}


def frontend_student(teacher_model, hidden: int = 96, filter_channels: int = 384,
                     n_layers: int | None = None) -> FrontEnd:
    return build_part("frontend", frontend_build(teacher_model, hidden, filter_channels, n_layers))


@dataclass
class FrontendTargets:
    """Per sentence: phoneme ids [1, T], the teacher's m_p and logs_p [1, C, T] and log-durations [1, 1, T]
    (its duration predictor with noise off, before the ceil that makes frames)."""
    ids: list
    m_p: list
    logs_p: list
    logw: list


def teacher_outputs(model, x: torch.Tensor, lengths: torch.Tensor, speaker: int = 0):
    """The teacher's front end on padded phoneme ids `x` [B, T]: (m_p, logs_p, log-durations with noise off, mask),
    each zero past its sentence's length (the masks keep every sentence's outputs its own)."""
    model = model.eval()
    with torch.no_grad():
        h, m_p, logs_p, x_mask = model.enc_p(x, lengths)
        g = (model.emb_g(torch.full((x.shape[0],), speaker)).unsqueeze(-1) if getattr(model, "n_speakers", 1) > 1
             else None)
        logw = (model.dp(h, x_mask, g=g, reverse=True, noise_scale=0.0) if getattr(model, "use_sdp", True)
                else model.dp(h, x_mask, g=g))
    return m_p * x_mask, logs_p * x_mask, logw * x_mask, x_mask


def teacher_targets(model, phoneme_ids: Sequence[list[int]], speaker: int = 0) -> FrontendTargets:
    """The teacher's front-end outputs on the given sentences (the training data of the student; no audio needed)."""
    ids_, m_, s_, w_ = [], [], [], []
    for ids in phoneme_ids:
        x = torch.tensor([list(ids)], dtype=torch.long)
        m_p, logs_p, logw, _ = teacher_outputs(model, x, torch.tensor([x.shape[1]]), speaker)
        ids_.append(x)
        m_.append(m_p)
        s_.append(logs_p)
        w_.append(logw)
    return FrontendTargets(ids_, m_, s_, w_)


def frontend_batch(t: FrontendTargets, batch: int, rng: np.random.Generator | None):
    """`batch` whole sentences drawn at random (every sentence once, in order, where `rng` is None: a held-out
    batch), padded to the longest: (ids, lengths, m_p, logs_p, logw)."""
    pick = list(range(len(t.ids))) if rng is None else [int(rng.integers(len(t.ids))) for _ in range(batch)]
    n = max(t.ids[i].shape[1] for i in pick)
    pad = lambda a: nn.functional.pad(a, (0, n - a.shape[-1]))
    return (torch.cat([pad(t.ids[i]) for i in pick]), torch.tensor([t.ids[i].shape[1] for i in pick]),
            torch.cat([pad(t.m_p[i]) for i in pick]), torch.cat([pad(t.logs_p[i]) for i in pick]),
            torch.cat([pad(t.logw[i]) for i in pick]))


def streamed_batch(model, phoneme_ids: Sequence[list[int]], batch: int, rng: np.random.Generator, speaker: int = 0):
    """frontend_batch of `batch` sentences drawn from `phoneme_ids`, the teacher's targets computed for them alone,
    in one padded pass (its masks keep each sentence's targets its own): a corpus of ten thousand sentences is never
    held as targets (their statistics took 7 GB here)."""
    pick = [list(phoneme_ids[int(rng.integers(len(phoneme_ids)))]) for _ in range(batch)]
    lengths = torch.tensor([len(p) for p in pick])
    x = torch.stack([nn.functional.pad(torch.tensor(p, dtype=torch.long), (0, int(lengths.max()) - len(p)))
                     for p in pick])
    return x, lengths, *teacher_outputs(model, x, lengths, speaker)[:3]


def frontend_loss(student: FrontEnd, batch, duration_weight: float = 1.0) -> torch.Tensor:
    """Masked L1 on the prior statistics (per channel) plus `duration_weight` x masked MSE on log-durations, the
    loss VITS' deterministic duration predictor trains with."""
    ids, lengths, m_t, logs_t, logw_t = batch
    m_p, logs_p, logw, mask = student(ids, lengths)
    n = mask.sum().clamp_min(1.0)
    stats = (((m_p - m_t).abs() + (logs_p - logs_t).abs()) * mask).sum() / (n * m_t.shape[1])
    dur = (((logw - logw_t) ** 2) * mask).sum() / n
    return stats + duration_weight * dur


def train_frontend(student: FrontEnd, targets: FrontendTargets, recipe, work_dir: Path, batch: int = 8,
                   heldout: FrontendTargets | None = None, device: str = "cpu", threads: int = 2,
                   progress: str | None = "front end"):
    """Fit the student with the shared training stack in regression mode (no discriminator acts on statistics);
    resumes from `work_dir`; `heldout` sentences give the held-out loss in the curve."""
    held = [frontend_batch(heldout, len(heldout.ids), None)] if heldout is not None and heldout.ids else []
    return Trainer(student, lambda rng: frontend_batch(targets, batch, rng), recipe, work_dir, loss_fn=frontend_loss,
                   eval_batches=held, device=device, threads=threads, progress=progress).fit()


def predicted_frames(student_or_model, ids: Sequence[int], length_scale: float = 1.0) -> np.ndarray:
    """Frames per phoneme as the voice would speak them (ceil of exp(logw) x length_scale, noise off), for a
    FrontEnd or a piper SynthesizerTrn: how durations are compared."""
    x = torch.tensor([list(ids)], dtype=torch.long)
    lengths = torch.tensor([x.shape[1]])
    with torch.no_grad():
        if isinstance(student_or_model, FrontEnd):
            logw = student_or_model.eval()(x, lengths)[2]
        else:
            logw = teacher_targets(student_or_model, [list(ids)]).logw[0]
    return torch.ceil(torch.exp(logw) * length_scale).reshape(-1).numpy()
