"""The objectives a voice is adapted to a speaker's own recordings with, each a module the one training loop trains
(lib.training.loop.Trainer's waveform mode, which adds mel L1 x45 and piper's discriminators) and its forward:

- the posterior path (`TrainPath`, `vits_forward`): piper's `SynthesizerTrn.forward` (text encoder, posterior encoder
  over the recording's linear spectrogram, monotonic alignment search, flow, duration predictor, decoder on a random
  segment), its `kl_loss` and duration loss;
- the inference path (`InferencePath`, `inference_forward`): what the voice runs when it speaks, on the recording's
  own durations given from outside (frames per phoneme id, `Utterances.durations`): text encoder -> each id's prior
  repeated over its frames -> z_p = m_p + noise * exp(logs_p) * noise_scale -> flow reversed -> decoder on a random
  segment, against the recording's same segment; the duration predictor's loss on those durations where it trains.
  No posterior encoder: the decoder learns from the latents it decodes when it speaks.

Durations that need an aligner (Whisper, a posterior) are computed above this package (lib.harness.durations) and
handed down as plain arrays."""
from __future__ import annotations

import importlib
import json
import logging
import sys
import types
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.training.losses import mel_l1
from lib.voices.scales import NOISE_SCALE
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
    """Per utterance: its id, phoneme ids, the recording (trimmed to whole frames) and its linear spectrogram; with
    `durations`, its frames per phoneme id (LongTensor [T_x], adding up to T_y), which the inference path needs."""
    ids: list[str]
    phonemes: list  # LongTensor [T_x]
    wav: list  # FloatTensor [T_y * hop]
    spec: list  # FloatTensor [513, T_y]
    hop: int
    sample_rate: int
    durations: list | None = None  # LongTensor [T_x] per utterance (with_durations), or None
    durations_method: str = ""  # how they were found (e.g. 'dtw', 'mas'): recorded with them

    @property
    def frames(self) -> list[int]:
        """T_y of each utterance: its recording's whole frames."""
        return [int(s.shape[-1]) for s in self.spec]

    def save(self, path: Path) -> Path:
        """One safetensors file, never a pickle (spectrograms are recomputed on load); durations where there are."""
        from safetensors.torch import save_file
        keys = ("phonemes", "wav") + (("durations",) if self.durations is not None else ())
        tensors = {f"{k}.{i}": t.contiguous() for k in keys for i, t in enumerate(getattr(self, k))}
        tmp = Path(path).with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(self.ids), "hop": str(self.hop),
                                               "sample_rate": str(self.sample_rate),
                                               "durations_method": self.durations_method})
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
            dur = [f.get_tensor(f"durations.{i}") for i in range(len(ids))] if "durations.0" in f.keys() else None
        data = build(ids, phon, wav, int(meta["hop"]), int(meta["sample_rate"]))
        return with_durations(data, dur, meta.get("durations_method", "")) if dur is not None else data


def with_durations(data: Utterances, durations: Sequence, method: str = "") -> Utterances:
    """`data` with each utterance's frames per phoneme id (arrays or tensors of whole, non-negative frames), found by
    `method`; a ValueError names an utterance whose durations do not have one value per id or do not add up to its
    recording's frames."""
    if len(durations) != len(data.ids):
        raise ValueError(f"{len(durations)} durations for {len(data.ids)} utterances")
    out = []
    for uid, ids, frames, d in zip(data.ids, data.phonemes, data.frames, durations):
        d = torch.as_tensor(np.rint(np.asarray(d, dtype=np.float64)), dtype=torch.long).reshape(-1)
        if d.numel() != ids.numel() or int(d.sum()) != frames or bool((d < 0).any()):
            raise ValueError(f"durations of {uid!r}: {d.numel()} values adding up to {int(d.sum())} frames, for "
                             f"{ids.numel()} phoneme ids and {frames} frames of its recording")
        out.append(d)
    return replace(data, durations=out, durations_method=method)


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
    waveforms [B, 1, T_y * hop]), and frames per phoneme id [B, T_x] (zero on the padding) where `data` has them."""
    tx = max(data.phonemes[i].numel() for i in picks)
    ty = max(data.spec[i].shape[-1] for i in picks)
    pad = torch.nn.functional.pad
    x = torch.stack([pad(data.phonemes[i], (0, tx - data.phonemes[i].numel())) for i in picks])
    spec = torch.stack([pad(data.spec[i], (0, ty - data.spec[i].shape[-1])) for i in picks])
    wav = torch.stack([pad(data.wav[i], (0, ty * data.hop - data.wav[i].numel())) for i in picks]).unsqueeze(1)
    out = (x, torch.tensor([data.phonemes[i].numel() for i in picks]), spec,
           torch.tensor([data.spec[i].shape[-1] for i in picks]), wav)
    if data.durations is None:
        return out
    return out + (torch.stack([pad(data.durations[i], (0, tx - data.durations[i].numel())) for i in picks]),)


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
    x, x_len, spec, spec_len, wav = batch[:5]  # durations, where the batch has them, are MAS's to find here
    y_hat, l_length, _, ids_slice, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = path(x, x_len, spec, spec_len)
    hop = wav.shape[-1] // spec.shape[-1]
    y = slice_segments(wav, ids_slice * hop, y_hat.shape[-1])
    terms = {"loss_kl": (KL_WEIGHT, kl_loss(z_p, logs_q, m_p, logs_p, z_mask))}
    # the decoder also learns from what it gets at inference: the aligned prior's mean through the flow
    if path.prior_mel:
        z_prior = path.voice.flow(m_p * z_mask, z_mask, reverse=True)
        y_prior = path.voice.dec(slice_segments(z_prior, ids_slice, y_hat.shape[-1] // hop))
        terms["loss_prior_mel"] = (path.prior_mel, mel_l1(y_prior, y, path.sample_rate))
    if l_length.requires_grad:  # a frozen duration predictor has nothing to learn
        terms["loss_dur"] = (DURATION_WEIGHT, torch.sum(l_length.float()))
    return y_hat, y, terms


def prior_at(voice, x, x_len, durations, frames):
    """The text's prior at given durations: (h, x_mask, w [B, 1, T_x], the expansion [B, 1, T_y, T_x], y_mask,
    m_p and logs_p repeated over each id's frames [B, C, T_y])."""
    from piper.train.vits import commons
    h, m_p, logs_p, x_mask = voice.enc_p(x, x_len)
    y_mask = commons.sequence_mask(frames, int(frames.max())).unsqueeze(1).to(x_mask.dtype)
    w = durations.unsqueeze(1).to(x_mask.dtype) * x_mask  # [B, 1, T_x]
    attn = commons.generate_path(w, x_mask.unsqueeze(2) * y_mask.unsqueeze(-1))  # [B, 1, T_y, T_x]
    m_p = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
    return h, x_mask, w, attn, y_mask, m_p, logs_p


@torch.no_grad()
def speak_at(voice, ids: torch.Tensor, durations: torch.Tensor) -> np.ndarray:
    """One utterance spoken noise-free by `voice` (an inference SynthesizerTrn) at given frames per phoneme id (e.g.
    a recording's own), not its duration predictor's: the waveform [T_y * hop]."""
    frames = durations.sum().reshape(1)
    _, _, _, _, y_mask, m_p, _ = prior_at(voice, ids.reshape(1, -1), torch.tensor([ids.numel()]),
                                          durations.reshape(1, -1), frames)
    z = voice.flow(m_p * y_mask, y_mask, reverse=True) * y_mask
    return voice.dec(z)[0, 0].float().numpy()


class InferencePath(torch.nn.Module):
    """The path the voice speaks with, on the recording's own durations (frames per phoneme id from outside): text
    encoder -> each id's prior (m_p, logs_p) repeated over its frames -> z_p = m_p + noise * exp(logs_p) * noise_scale
    -> the flow reversed (the whole utterance: its convolutions see the frames around the segment) -> the decoder on a
    random segment of `voice.segment_size` frames, as piper's training decodes one. Where the duration predictor
    trains (a method that trains the text path), its loss on the same durations (piper's, per phoneme id)."""

    def __init__(self, voice, noise_scale: float = NOISE_SCALE, sample_rate: int = 22050):
        super().__init__()
        self.voice, self.noise_scale, self.sample_rate = voice, float(noise_scale), sample_rate

    def forward(self, x, x_len, durations, frames):
        """(decoded segment [B, 1, segment * hop], duration loss or None, the expansion [B, 1, T_y, T_x], each
        segment's first frame [B], (z, z_p, m_p, logs_p) over all frames)."""
        from piper.train.vits import commons
        v = self.voice
        h, x_mask, w, attn, y_mask, m_p, logs_p = prior_at(v, x, x_len, durations, frames)
        z_p = (m_p + torch.randn_like(m_p) * torch.exp(logs_p) * self.noise_scale) * y_mask
        z = v.flow(z_p, y_mask, reverse=True) * y_mask
        z_slice, ids_slice = commons.rand_slice_segments(z, frames, v.segment_size)
        o = v.dec(z_slice)
        l_length = None
        # a frozen duration predictor has nothing to learn, nor one evaluated without gradients
        if torch.is_grad_enabled() and any(p.requires_grad for p in v.dp.parameters()):
            if getattr(v, "use_sdp", True):  # the stochastic predictor's bound (it detaches the encoder's output)
                l_length = torch.sum(v.dp(h, x_mask, w)) / torch.sum(x_mask)
            else:
                logw = v.dp(h, x_mask)
                l_length = torch.sum((logw - torch.log(w + 1e-6) * x_mask) ** 2) / torch.sum(x_mask)
        return o, l_length, attn, ids_slice, (z, z_p, m_p, logs_p)


def inference_forward(path: InferencePath, batch):
    """Waveform mode of the Trainer for the inference path: (segment of the voice's output, the recording's same
    segment, {dur} where the duration predictor trains); the loop adds mel x45 and, after its warm-up, the
    discriminators. The batch must carry durations (batch_of of Utterances with_durations)."""
    from piper.train.vits.commons import slice_segments
    if len(batch) < 6:
        raise ValueError("the inference path needs each recording's durations: Utterances with_durations")
    x, x_len, spec, spec_len, wav, durations = batch[:6]
    y_hat, l_length, _, ids_slice, _ = path(x, x_len, durations, spec_len)
    hop = wav.shape[-1] // spec.shape[-1]
    y = slice_segments(wav, ids_slice * hop, y_hat.shape[-1])
    terms = {} if l_length is None else {"loss_dur": (DURATION_WEIGHT, l_length.float())}
    return y_hat, y, terms


def forward_of(path: torch.nn.Module):
    """The Trainer's forward for an objective's module: inference_forward or vits_forward."""
    return inference_forward if isinstance(path, InferencePath) else vits_forward


def posterior_encoder(hp: dict, folded: bool = True) -> torch.nn.Module:
    """piper's PosteriorEncoder for the architecture `hp` (piper_torch.piper_hparams), as SynthesizerTrn builds it,
    its weight norm folded as the voice's flow and decoder are (a weight-normed module cannot be copied)."""
    from piper.train.vits.models import PosteriorEncoder
    enc_q = PosteriorEncoder(hp["spec_channels"], hp["inter_channels"], hp["hidden_channels"], 5, 1, 16,
                             gin_channels=hp["gin_channels"])
    return fold_weight_norm(enc_q) if folded else enc_q
