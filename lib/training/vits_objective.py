"""The objective piper trains a voice with, on a speaker's own recordings: piper's `SynthesizerTrn.forward` (text
encoder, posterior encoder over the recording's linear spectrogram, monotonic alignment search, flow, duration
predictor, decoder on a random segment), its `kl_loss` and duration loss, with mel L1 and piper's discriminators
added by the one training loop (lib.training.loop.Trainer's waveform mode)."""
from __future__ import annotations

import importlib
import json
import logging
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.training.losses import mel_l1
from lib.voices.parts import fold_weight_norm

_LOGGER = logging.getLogger(__name__)

N_FFT, WIN = 1024, 1024  # piper's filter_length and win_length; the hop is the voice's upsampling product
KL_WEIGHT, DURATION_WEIGHT = 1.0, 1.0  # piper's c_kl and its unweighted duration loss (lightning.py)


def vits_maximum_path_c(paths, values, t_ys, t_xs) -> None:
    """VITS's compiled MAS entry point (values and paths [b, frames, text], in place) through the Glow-TTS one that
    monotonic-alignment-search ships, whose arrays are [b, text, frames]: the same algorithm, transposed."""
    glow = importlib.import_module("monotonic_alignment_search.core")
    values_t = np.ascontiguousarray(np.asarray(values).transpose(0, 2, 1))
    paths_t = np.zeros(values_t.shape, dtype=np.int32)
    glow.maximum_path_c(paths_t, values_t, np.asarray(t_xs, dtype=np.int32), np.asarray(t_ys, dtype=np.int32))
    np.asarray(paths)[...] = paths_t.transpose(0, 2, 1)


def supply_mas_core() -> None:
    """piper's wheel ships `monotonic_align` without its compiled core (`monotonic_align.core.maximum_path_c`);
    monotonic-alignment-search, Enno Hermann's maintained build of the Glow-TTS Cython function, supplies it
    (vits_maximum_path_c), so piper's own `SynthesizerTrn.forward` runs unchanged."""
    name = "piper.train.vits.monotonic_align.monotonic_align"
    if name + ".core" in sys.modules:
        return
    package, core = types.ModuleType(name), types.ModuleType(name + ".core")
    package.__path__ = []
    core.maximum_path_c = vits_maximum_path_c
    package.core = core
    sys.modules[name], sys.modules[name + ".core"] = package, core


def linear_spectrogram(wav: torch.Tensor, hop: int, sample_rate: int) -> torch.Tensor:
    """piper's linear magnitude spectrogram [513, frames] of a waveform [T] (frames = T // hop), as its dataset
    computes it for the posterior encoder."""
    from piper.train.vits.mel_processing import spectrogram_torch
    return spectrogram_torch(wav.reshape(1, -1).float().clamp(-1, 1), N_FFT, sample_rate, hop, WIN, center=False)[0]


@dataclass
class Utterances:
    """Per utterance: its id, phoneme ids, the recording (trimmed to whole frames) and its linear spectrogram."""
    ids: list[str]
    phonemes: list  # LongTensor [T_x]
    wav: list  # FloatTensor [T_y * hop]
    spec: list  # FloatTensor [513, T_y]
    hop: int
    sample_rate: int

    def save(self, path: Path) -> Path:
        """One safetensors file, never a pickle (spectrograms are recomputed on load)."""
        from safetensors.torch import save_file
        tensors = {f"{k}.{i}": t.contiguous() for k in ("phonemes", "wav") for i, t in enumerate(getattr(self, k))}
        tmp = Path(path).with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(self.ids), "hop": str(self.hop),
                                               "sample_rate": str(self.sample_rate)})
        tmp.replace(path)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "Utterances":
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            ids = json.loads(meta["ids"])
            phon = [f.get_tensor(f"phonemes.{i}") for i in range(len(ids))]
            wav = [f.get_tensor(f"wav.{i}") for i in range(len(ids))]
        return build(ids, phon, wav, int(meta["hop"]), int(meta["sample_rate"]))


def build(ids: Sequence[str], phonemes: Sequence, wavs: Sequence, hop: int, sample_rate: int) -> Utterances:
    """Utterances from phoneme id lists and waveforms (numpy or torch), each trimmed to whole hops."""
    phon, wav, spec = [], [], []
    for p, w in zip(phonemes, wavs):
        w = torch.as_tensor(np.asarray(w, dtype=np.float32)).reshape(-1)
        w = w[: (w.numel() // hop) * hop]
        phon.append(torch.as_tensor(p, dtype=torch.long).reshape(-1))
        wav.append(w)
        spec.append(linear_spectrogram(w, hop, sample_rate))
    return Utterances(list(ids), phon, wav, spec, hop, sample_rate)


def from_recordings(recordings: Sequence, frontend, hop: int) -> Utterances:
    """Utterances of a speaker's recordings (lib.data.ljspeech.Recording) with their transcripts' phoneme ids (all
    of a transcript's sentences joined, as the recording says them all)."""
    phon = []
    for r in recordings:
        pieces = frontend.phoneme_ids(r.text)
        phon.append([i for piece in pieces for i in piece])
    return build([r.id for r in recordings], phon, [r.samples for r in recordings], hop, recordings[0].sample_rate)


def batch_of(data: Utterances, picks: Sequence[int]):
    """Padded batch of utterances `picks`: (phonemes [B, T_x], lengths, spectrograms [B, 513, T_y], frames,
    waveforms [B, 1, T_y * hop])."""
    tx = max(data.phonemes[i].numel() for i in picks)
    ty = max(data.spec[i].shape[-1] for i in picks)
    pad = torch.nn.functional.pad
    x = torch.stack([pad(data.phonemes[i], (0, tx - data.phonemes[i].numel())) for i in picks])
    spec = torch.stack([pad(data.spec[i], (0, ty - data.spec[i].shape[-1])) for i in picks])
    wav = torch.stack([pad(data.wav[i], (0, ty * data.hop - data.wav[i].numel())) for i in picks]).unsqueeze(1)
    return (x, torch.tensor([data.phonemes[i].numel() for i in picks]), spec,
            torch.tensor([data.spec[i].shape[-1] for i in picks]), wav)


def random_batch(data: Utterances, batch: int, rng: np.random.Generator):
    """`batch` utterances drawn at random (with replacement), padded (batch_of)."""
    return batch_of(data, [int(rng.integers(len(data.ids))) for _ in range(batch)])


class TrainPath(torch.nn.Module):
    """What piper's training forward needs: the voice's SynthesizerTrn with a posterior encoder beside it. The
    posterior encoder is a training-only part (the exported voice has none), so it stays outside the voice."""

    def __init__(self, voice, enc_q, prior_mel: float = 0.0, sample_rate: int = 22050):
        super().__init__()
        self.voice, self.enc_q = voice, enc_q
        self.prior_mel, self.sample_rate = prior_mel, sample_rate  # vits_forward's inference-path term

    def forward(self, x, x_len, spec, spec_len):
        supply_mas_core()
        from piper.train.vits.models import SynthesizerTrn
        self.voice.enc_q = self.enc_q  # piper's forward reads self.enc_q
        try:
            return SynthesizerTrn.forward(self.voice, x, x_len, spec, spec_len)
        finally:
            del self.voice.enc_q


def vits_forward(path: TrainPath, batch):
    """Waveform mode of the Trainer for piper's objective: (segment of the voice's output, the recording's same
    segment, {kl, duration}); the loop adds mel x45 and, after its warm-up, the discriminators."""
    from piper.train.vits.commons import slice_segments
    from piper.train.vits.losses import kl_loss
    x, x_len, spec, spec_len, wav = batch
    y_hat, l_length, _, ids_slice, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = path(x, x_len, spec, spec_len)
    hop = wav.shape[-1] // spec.shape[-1]
    y = slice_segments(wav, ids_slice * hop, y_hat.shape[-1])
    terms = {"loss_kl": (KL_WEIGHT, kl_loss(z_p, logs_q, m_p, logs_p, z_mask))}
    if path.prior_mel:  # the decoder also learns from what it gets at inference: the aligned prior's mean through the flow
        z_prior = path.voice.flow(m_p * z_mask, z_mask, reverse=True)
        y_prior = path.voice.dec(slice_segments(z_prior, ids_slice, y_hat.shape[-1] // hop))
        terms["loss_prior_mel"] = (path.prior_mel, mel_l1(y_prior, y, path.sample_rate))
    if l_length.requires_grad:  # a frozen duration predictor has nothing to learn
        terms["loss_dur"] = (DURATION_WEIGHT, torch.sum(l_length.float()))
    return y_hat, y, terms


def posterior_encoder(hp: dict, folded: bool = True) -> torch.nn.Module:
    """piper's PosteriorEncoder for the architecture `hp` (piper_torch.piper_hparams), as SynthesizerTrn builds it,
    its weight norm folded as the voice's flow and decoder are (a weight-normed module cannot be copied)."""
    from piper.train.vits.models import PosteriorEncoder
    enc_q = PosteriorEncoder(hp["spec_channels"], hp["inter_channels"], hp["hidden_channels"], 5, 1, 16,
                             gin_channels=hp["gin_channels"])
    return fold_weight_norm(enc_q) if folded else enc_q
