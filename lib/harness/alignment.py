"""A yardstick for alignment: how many frames a method of alignment gives each phoneme of a recording, against the
true frames (the teacher's own attention when it speaks; Kokoro's own durations for the default speaker).

Frames per phoneme. piper's ids are ^ _ (phoneme _)* $; its pads belong to no phoneme of the text, so a phoneme's
frames here are its id's and its following pad's (`per_phoneme`), ^ with its pad being the leading silence and $ the
trailing one. The agreement (`agreement`) leaves those two out: silence at the edges is easy to place and would
lift the correlation.

Methods (each: frames per piper id for (audio, phoneme ids)):
- MAS on the bootstrapped posterior's latents of the recording, a sample z ~ q(z|x) as piper's training draws it
  (`mas_frames(..., mean=False)`) or its mean (`mean=True`), against the voice's prior through its flow;
- Whisper's forced alignment of the transcript's tokens (faster-whisper's `find_alignment`, base model shipped on
  PyPI): each word's frames spread over its phonemes as the teacher's own noise-free durations spread them, the
  frames between words over the spaces and punctuation there (`whisper_frames`)."""
from __future__ import annotations

import logging
import string
from dataclasses import dataclass
from difflib import SequenceMatcher

import numpy as np
import torch

from lib.core.audio import resample

_LOGGER = logging.getLogger(__name__)

GAP = set(" " + string.punctuation + "…¡¿—–")  # phoneme characters that are no sound of a word
STRESS = "ˈˌ"


# --- frames per phoneme and agreement --------------------------------------------------------------------------

def per_phoneme(frames_per_id) -> np.ndarray:
    """Frames per piper id [2n + 3] -> frames per phoneme [n + 2]: ^ with its pad, each phoneme with its pad, $."""
    f = np.asarray(frames_per_id, dtype=np.float64).reshape(-1)
    if f.size % 2 == 0:
        raise ValueError(f"{f.size} ids: piper's ids are ^ _ (phoneme _)* $, an odd count")
    return np.append(f, 0.0).reshape(-1, 2).sum(1)


def agreement(estimate, truth, edges: bool = False) -> dict:
    """Pearson correlation of frames per phoneme (`per_phoneme` of each, or lists of them to pool), the share of
    phonemes within +-1 frame, the mean absolute error in frames and the count; ^ and $ left out unless `edges`."""
    est, tru = _pooled(estimate, edges), _pooled(truth, edges)
    if est.shape != tru.shape:
        raise ValueError(f"{est.size} estimated phonemes against {tru.size} true ones")
    corr = float(np.corrcoef(est, tru)[0, 1]) if est.size > 1 and est.std() > 0 and tru.std() > 0 else float("nan")
    err = np.abs(est - tru)
    return {"correlation": corr, "within_1_frame": float(np.mean(err <= 1.0)) if err.size else float("nan"),
            "mae_frames": float(err.mean()) if err.size else float("nan"), "n": int(err.size)}


def _pooled(frames, edges: bool) -> np.ndarray:
    parts = frames if isinstance(frames, (list, tuple)) else [frames]
    return np.concatenate([np.asarray(p, dtype=np.float64)[slice(None) if edges else slice(1, -1)] for p in parts])


# --- MAS on the bootstrapped posterior -------------------------------------------------------------------------

@torch.no_grad()
def mas_frames(voice, enc_q, ids, audio: np.ndarray, sample_rate: int, mean: bool = True, seed: int = 0) -> np.ndarray:
    """Frames per piper id that monotonic alignment search gives the recording `audio` (at the voice's rate) for
    the phoneme ids `ids`: the posterior's latents (its mean, or a sample as training draws it) through the voice's
    flow, scored under the text's prior as piper's SynthesizerTrn.forward scores them."""
    from lib.training.vits_objective import linear_spectrogram, supply_mas_core
    supply_mas_core()
    from piper.train.vits import monotonic_align
    hop = int(np.prod(voice.hparams["upsample_rates"]))
    wav = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)
    wav = wav[: (wav.numel() // hop) * hop]
    spec = linear_spectrogram(wav, hop, sample_rate).unsqueeze(0)
    x = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    _, m_p, logs_p, x_mask = voice.enc_p(x, torch.tensor([x.shape[1]]))
    torch.manual_seed(seed)
    z, m_q, _, y_mask = enc_q(spec, torch.tensor([spec.shape[-1]]))
    z_p = voice.flow(m_q if mean else z, y_mask)
    s_p_sq_r = torch.exp(-2 * logs_p)
    neg_cent = (torch.sum(-0.5 * np.log(2 * np.pi) - logs_p, [1], keepdim=True)
                + torch.matmul(-0.5 * (z_p ** 2).transpose(1, 2), s_p_sq_r)
                + torch.matmul(z_p.transpose(1, 2), m_p * s_p_sq_r)
                + torch.sum(-0.5 * (m_p ** 2) * s_p_sq_r, [1], keepdim=True))
    attn_mask = torch.unsqueeze(x_mask, 2) * torch.unsqueeze(y_mask, -1)
    attn = monotonic_align.maximum_path(neg_cent, attn_mask.squeeze(1))
    return attn[0].sum(0).numpy().astype(np.float64)


@torch.no_grad()
def teacher_frames(voice, ids) -> np.ndarray:
    """The voice's own noise-free frames per id for `ids` (its duration predictor's mean timing)."""
    x = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    return voice.infer(x, torch.tensor([x.shape[1]]), noise_scale=0.0, noise_scale_w=0.0)[1][0, 0].sum(0).numpy()


# --- Whisper's forced alignment --------------------------------------------------------------------------------

@dataclass
class Word:
    text: str
    start: float  # seconds
    end: float


class WhisperAligner:
    """faster-whisper's cross-attention alignment (DTW over its alignment heads) of a known transcript's tokens."""

    def __init__(self, model: str = "base", threads: int = 1):
        from faster_whisper.tokenizer import Tokenizer
        from lib.harness.metrics import WhisperAsr
        self.model = WhisperAsr(model, threads=threads).model
        self.tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task="transcribe",
                                   language="en")

    def words(self, audio: np.ndarray, sample_rate: int, transcript: str) -> list[Word]:
        """The transcript's words (punctuation dropped) with their start and end in seconds."""
        from faster_whisper.audio import pad_or_trim
        x = resample(audio, sample_rate, 16000)
        features = self.model.feature_extractor(x)
        frames = features.shape[-1] - 1
        encoded = self.model.encode(pad_or_trim(features[:, :frames]))
        tokens = self.tokenizer.encode(" " + transcript.strip())
        found = self.model.find_alignment(self.tokenizer, [tokens], encoded, frames)[0]
        return [Word(w["word"].strip(), float(w["start"]), float(w["end"])) for w in found
                if w["word"].strip().strip(string.punctuation)]


def phoneme_words(phonemes: list[str]) -> list[list[int]]:
    """Indices (into `phonemes`) of each word's sounding phonemes: runs without spaces or punctuation."""
    words, cur = [], []
    for i, ph in enumerate(phonemes):
        if all(c in GAP for c in ph):
            if cur:
                words.append(cur)
            cur = []
        else:
            cur.append(i)
    return words + ([cur] if cur else [])


def match_words(spoken: list[str], written: list[str]) -> list[tuple[list[int], list[int]]]:
    """Monotonic groups (espeak words, transcript words) of 1-3 on each side whose phoneme strings match best:
    espeak joins some words ('of the' -> ʌvðə) that Whisper keeps apart. `spoken`: espeak's words, `written`: each
    transcript word phonemized alone; stress marks are ignored."""
    def flat(words):
        return "".join("".join(w) for w in words).translate({ord(c): None for c in STRESS + "".join(GAP)})

    def cost(a, b):
        sa, sb = flat(a), flat(b)
        return 1.0 - SequenceMatcher(None, sa, sb).ratio() + 0.05 * (len(a) + len(b) - 2)
    n, m = len(spoken), len(written)
    best = np.full((n + 1, m + 1), np.inf)
    back = {}
    best[0, 0] = 0.0
    for i in range(n + 1):
        for j in range(m + 1):
            if not np.isfinite(best[i, j]):
                continue
            for a in range(1, 4):
                for b in range(1, 4):
                    if i + a <= n and j + b <= m and (a == 1 or b == 1):
                        c = best[i, j] + cost(spoken[i:i + a], written[j:j + b])
                        if c < best[i + a, j + b]:
                            best[i + a, j + b], back[(i + a, j + b)] = c, (i, j)
    if not np.isfinite(best[n, m]):
        raise ValueError(f"cannot match {n} spoken words with {m} written ones")
    out, ij = [], (n, m)
    while ij != (0, 0):
        i, j = back[ij]
        out.append((list(range(i, ij[0])), list(range(j, ij[1]))))
        ij = (i, j)
    return out[::-1]


def spread(total: int, weights) -> np.ndarray:
    """`total` whole frames over slots in proportion to `weights` (evenly where they are all zero), rounded at the
    cumulative boundaries so that they add up."""
    w = np.maximum(np.asarray(weights, dtype=np.float64), 0.0)
    if w.size == 0:
        return w
    w = w if w.sum() > 0 else np.ones_like(w)
    edges = np.round(np.concatenate([[0.0], np.cumsum(w)]) / w.sum() * max(total, 0))
    return np.diff(edges)


def whisper_frames(words: list[Word], phonemes: list[str], written: list[list[str]], prior, n_frames: int,
                   frame_s: float) -> np.ndarray:
    """Frames per piper id from Whisper's word timings: `phonemes` the sentence's piper phonemes (ids are
    ^ _ (phoneme _)* $), `written` each Whisper word phonemized alone, `prior` the teacher's noise-free frames per id,
    `n_frames` the recording's frames of `frame_s` seconds. A word's frames go to its phonemes (each with its pad)
    in proportion to `prior`; the frames before, between and after words to ^, the spaces and punctuation, and $."""
    groups = per_phoneme(prior)  # per phoneme slot: 0 = ^, 1..n = phonemes, n + 1 = $
    spoken = phoneme_words(phonemes)
    pairs = match_words([[phonemes[i] for i in w] for w in spoken], written)
    # each matched span: its phoneme slots (1-based: slot 0 is ^) and its time, whole frames from the start
    spans = []
    for sp, wr in pairs:
        slots = [i + 1 for s in sp for i in spoken[s]]
        start = int(round(words[wr[0]].start / frame_s))
        end = int(round(words[wr[-1]].end / frame_s))
        spans.append((slots, start, end))
    out = np.zeros(groups.size)
    cursor, prev_slot = 0, 0  # frames placed so far; the slot after which gaps begin
    bounds = [(s[0][0], min(max(s[1], 0), n_frames), min(max(s[2], 0), n_frames)) for s in spans]
    for (slots, _, _), (first, start, end) in zip(spans, bounds):
        start = max(start, cursor)
        end = max(end, start)
        gap = list(range(prev_slot, first))  # ^ (first time) or the spaces and punctuation before this word
        out[gap] += spread(start - cursor, groups[gap])
        out[slots] += spread(end - start, groups[slots])
        cursor, prev_slot = end, slots[-1] + 1
    tail = list(range(prev_slot, groups.size))  # trailing punctuation and $
    out[tail] += spread(n_frames - cursor, groups[tail])
    # back to ids: a phoneme's frames on its id, its pad none (per_phoneme adds them up again)
    per_id = np.zeros(2 * groups.size - 1)
    per_id[0::2] = out
    return per_id
