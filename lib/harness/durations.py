"""The aligners: how many frames each phoneme of a recording takes, by MAS, DTW or Whisper's forced alignment, and
the durations adaptation trains with (studies.alignment measures them against true frames: the yardstick).

Frames per phoneme. piper's ids are ^ _ (phoneme _)* $; its pads belong to no phoneme of the text, so a phoneme's
frames here are its id's and its following pad's (`per_phoneme`), ^ with its pad being the leading silence and $ the
trailing one. Agreement (`agreement`) is measured over `units` of a level, which leave those two out: silence at the
edges is easy to place and would lift the correlation.

Methods (each: frames per piper id for (audio, phoneme ids)):
- MAS on the bootstrapped posterior's latents of the recording, a sample z ~ q(z|x) as piper's training draws it
  (`mas_frames(..., mean=False)`) or its mean (`mean=True`), against the voice's prior through its flow;
- DTW of the recording against the teacher's own noise-free rendition of the same ids, whose frames are known
  (`dtw_frames`), on MFCCs or on Whisper's encoder output (`WhisperAligner.encoder_features`);
- Whisper's forced alignment of the transcript's tokens (faster-whisper's `find_alignment`, base model shipped on
  PyPI): each word's frames spread over its phonemes as the teacher's own noise-free durations spread them, the
  frames between words over the spaces and punctuation there (`whisper_frames`).

Durations for any folder (`utterance_durations`, `recording_durations`): what adaptation trains the inference path
with, per recording its frames per piper id adding up to its frames at the voice's hop. The method is chosen from the
yardstick's evidence (`YARDSTICK`): DTW against the teacher's rendition on Whisper's encoder output agrees with the
true durations on the teacher's own audio as MAS does, and is the only method that agrees on another speaker, which
a user's folder is; MAS on a posterior sample stays an option."""
from __future__ import annotations

import json
import logging
import os
import string
import time
import unicodedata
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import torch

from lib.core import pause
from lib.core.audio import resample
from lib.voices import piper_torch

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


LEVELS = ("phoneme", "sound", "word")
BEFORE, AFTER = "ˈˌ", "ːˑ"  # stress marks belong to the sound after them, length marks to the one before


def units(phonemes: list[str], level: str) -> list[list[int]]:
    """The units agreement is measured over, as phoneme slots (`per_phoneme`'s indices: 0 is ^, 1..n the
    phonemes, n + 1 is $). 'phoneme': each phoneme. 'sound': a stress mark joined to the sound after it, a length
    mark or combining diacritic to the sound before (a voice may put a stressed vowel's time on its marks or on the
    vowel; only the vowel's time can be heard), spaces and punctuation their own units. 'word': each word's sounds,
    the spaces and punctuation between words left out (how well word boundaries are placed).
    Left out at every level, as ^ and $ are: the unit that ends the sentence, with the punctuation after it. The
    sentence's final silence is one stretch that voices book on either (Kokoro gives it to the last phoneme, piper
    to the full stop), and a long stretch every method places would lift the correlation."""
    words = phoneme_words(phonemes)
    end = words[-1][-1] + 1 if words else len(phonemes) + 1  # the last sounding phoneme's slot: the end unit's
    if level == "phoneme":
        return [[i] for i in range(1, end)]
    if level == "word":
        return [[i + 1 for i in w] for w in words[:-1]]
    if level != "sound":
        raise ValueError(f"unknown level {level!r}: use one of {LEVELS}")
    out, pending = [], []
    for i, ph in enumerate(phonemes[: end - 1], start=1):
        trailing = all(c in AFTER or unicodedata.combining(c) for c in ph)
        if ph and all(c in BEFORE for c in ph):
            pending.append(i)
        elif trailing and out and not pending and not all(c in GAP for c in phonemes[out[-1][-1] - 1]):
            out[-1].append(i)
        else:
            out.append(pending + [i])
            pending = []
    # the end unit (left out) is the last sound with its marks: stress marks still pending go with it, and where
    # the last phoneme is a length mark, so does the vowel before it
    last = phonemes[end - 1] if end - 1 < len(phonemes) else ""
    if out and not pending and last and all(c in AFTER or unicodedata.combining(c) for c in last):
        out.pop()
    return out


def grouped(frames_per_phoneme, unit_slots: list[list[int]]) -> np.ndarray:
    """Frames per unit: the slots of each unit added up."""
    f = np.asarray(frames_per_phoneme, dtype=np.float64)
    return np.array([f[u].sum() for u in unit_slots])


def agreement(estimate, truth) -> dict:
    """Pearson correlation of frames per unit (arrays, or lists of them to pool), the share of units within
    +-1 frame, the mean absolute error in frames and the count."""
    est, tru = _pooled(estimate), _pooled(truth)
    if est.shape != tru.shape:
        raise ValueError(f"{est.size} estimated units against {tru.size} true ones")
    corr = float(np.corrcoef(est, tru)[0, 1]) if est.size > 1 and est.std() > 0 and tru.std() > 0 else float("nan")
    err = np.abs(est - tru)
    return {"correlation": corr, "within_1_frame": float(np.mean(err <= 1.0)) if err.size else float("nan"),
            "mae_frames": float(err.mean()) if err.size else float("nan"), "n": int(err.size)}


def _pooled(frames) -> np.ndarray:
    parts = frames if isinstance(frames, (list, tuple)) else [frames]
    return np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1) for p in parts])


# --- MAS on the bootstrapped posterior -------------------------------------------------------------------------

@torch.no_grad()
def mas_frames(voice, enc_q, ids, audio: np.ndarray, sample_rate: int, mean: bool = True, seed: int = 0) -> np.ndarray:
    """Frames per piper id that monotonic alignment search gives the recording `audio` (at the voice's rate) for
    the phoneme ids `ids`: the posterior's latents (its mean, or a sample as training draws it) through the voice's
    flow, scored under the text's prior as piper's SynthesizerTrn.forward scores them."""
    from lib.training.vits_objective import linear_spectrogram, supply_mas_core
    supply_mas_core()
    from piper.train.vits import monotonic_align
    hop = piper_torch.hop_length(voice)
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
def teacher_rendition(voice, ids) -> tuple[np.ndarray, np.ndarray]:
    """The voice saying `ids` with its noise off: (audio, frames per id: its duration predictor's mean timing)."""
    x = torch.as_tensor(ids, dtype=torch.long).reshape(1, -1)
    o, attn, _, _ = voice.infer(x, torch.tensor([x.shape[1]]), noise_scale=0.0, noise_scale_w=0.0)
    return o.reshape(-1).numpy(), attn[0, 0].sum(0).numpy().astype(np.float64)


# --- DTW against the teacher's own rendition -------------------------------------------------------------------

def dtw_frames(reference_features: np.ndarray, reference_frames, features: np.ndarray) -> np.ndarray:
    """Frames per piper id of a recording (its `features` [D, T], one column per voice frame) by dynamic time
    warping against the teacher's rendition of the same ids (`reference_features` [D, T_ref], whose frames per id
    `reference_frames` are known): each reference boundary goes to the first recording frame the path pairs with
    it. Cosine distance, so loudness does not count."""
    import librosa
    n_ref, n = reference_features.shape[1], features.shape[1]
    _, path = librosa.sequence.dtw(reference_features, features, metric="cosine")
    first = np.full(n_ref + 1, n)
    for r, t in path:
        first[r] = min(first[r], t)
    edges = np.concatenate([[0], np.cumsum(reference_frames)]).astype(int)
    bounds = np.array([0 if e <= 0 else n if e >= n_ref else first[e] for e in edges])
    return np.diff(np.maximum.accumulate(bounds)).astype(np.float64)


def mfcc_features(audio: np.ndarray, sample_rate: int, hop: int, n_mfcc: int = 20) -> np.ndarray:
    """MFCCs 1..n_mfcc-1 (energy left out) per voice frame, normalised per utterance: [n_mfcc - 1, len // hop]."""
    import librosa
    n = len(audio) // hop
    m = librosa.feature.mfcc(y=np.asarray(audio, dtype=np.float32), sr=sample_rate, n_mfcc=n_mfcc, n_fft=4 * hop,
                             hop_length=hop, center=True)[1:, :n]
    return (m - m.mean(1, keepdims=True)) / (m.std(1, keepdims=True) + 1e-6)


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

    def encoder_features(self, audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
        """Whisper's encoder output (20 ms frames, a representation of what is said more than of who says it),
        interpolated onto the voice's frames: [d_model, len // hop]."""
        from faster_whisper.audio import pad_or_trim
        features = self.model.feature_extractor(resample(audio, sample_rate, 16000))
        frames = features.shape[-1] - 1
        encoded = np.array(self.model.encode(pad_or_trim(features[:, :frames])))[0][: (frames + 1) // 2]
        voice_t = (np.arange(len(audio) // hop) + 0.5) * hop / sample_rate
        whisper_t = (np.arange(encoded.shape[0]) + 0.5) * 0.02
        return np.stack([np.interp(voice_t, whisper_t, encoded[:, d]) for d in range(encoded.shape[1])])

    def frames(self, audio: np.ndarray, sample_rate: int, transcript: str, phonemes: list[str], prior, frontend,
               hop: int) -> np.ndarray:
        """Frames per piper id of `audio` (whole frames of `hop` samples) for the transcript whose piper phonemes
        are `phonemes` (`whisper_frames`; `frontend` phonemizes each word alone to match words)."""
        words = self.words(audio, sample_rate, transcript)
        written = [[ph for piece in frontend.phonemes(w.text) for ph in piece] for w in words]
        return whisper_frames(words, phonemes, written, prior, len(audio) // hop, hop / sample_rate)


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


def match_words(spoken: list[list[str]], written: list[list[str]]) -> list[tuple[list[int], list[int]]]:
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
    out = np.zeros(groups.size)
    cursor, prev_slot = 0, 0  # frames placed so far; the first slot not yet given frames
    for sp, wr in pairs:
        slots = [i + 1 for k in sp for i in spoken[k]]  # this span's phoneme slots (slot 0 is ^)
        gap = list(range(prev_slot, slots[0]))  # ^ (the first time), or the spaces and punctuation before the span
        start = min(max(round(words[wr[0]].start / frame_s), cursor), n_frames) if gap else cursor
        end = min(max(round(words[wr[-1]].end / frame_s), start), n_frames)
        out[gap] += spread(start - cursor, groups[gap])
        out[slots] += spread(end - start, groups[slots])
        cursor, prev_slot = end, slots[-1] + 1
    tail = list(range(prev_slot, groups.size))  # trailing punctuation and $
    out[tail] += spread(n_frames - cursor, groups[tail])
    # back to ids: a phoneme's frames on its id, its pad none (per_phoneme adds them up again)
    per_id = np.zeros(2 * groups.size - 1)
    per_id[0::2] = out
    return per_id


# --- durations for any folder ----------------------------------------------------------------------------------

# The yardstick (lib.studies.alignment; outputs/recorded/intel-xeon-amx-2c/31_alignment_yardstick, which a test holds
# these figures to): correlation with the true durations per sound (stress and length marks joined), pooled over 12
# Harvard sentences (lists 31-32).
YARDSTICK = {"dtw": {"method": "dtw-whisper", "teacher": 0.967, "jf_alpha": 0.893},
             "mas": {"method": "mas-sample", "teacher": 0.963, "jf_alpha": 0.359}}
DURATION_METHODS = tuple(YARDSTICK)
WHISPER_SECONDS = 30.0  # Whisper's encoder hears one 30 s window: a longer recording cannot be aligned by it


def best_duration_method() -> str:
    """The method whose agreement on the speaker that is not the teacher is highest (a user's folder is another
    speaker): 'dtw'."""
    return max(YARDSTICK, key=lambda m: YARDSTICK[m]["jf_alpha"])


def at_least_one(frames) -> np.ndarray:
    """Frames per id with every id given at least one frame (as piper's MAS and the voice's own durations give
    each), each taken from the nearest id that has more than one; the total is kept. Unchanged where the total is
    below the number of ids."""
    f = np.asarray(frames, dtype=np.float64).copy()
    if f.sum() < f.size:
        return f
    for i in np.flatnonzero(f < 1):
        donors = np.flatnonzero(f > 1)
        j = donors[np.argmin(np.abs(donors - i) - 1e-3 * f[donors])]  # nearest, the longer of two as near
        f[j] -= 1
        f[i] += 1
    return f


def utterance_durations(data, teacher, method: str = "dtw", *, enc_q=None, aligner: WhisperAligner | None = None,
                        seed: int = 0, threads: int = 1) -> list[np.ndarray]:
    """Frames per piper id of each utterance of `data` (lib.training.vits_objective.Utterances: its phoneme ids and
    its recording in whole frames at the voice's rate), adding up to its frames, each id at least one frame
    (`at_least_one`). 'dtw': the recording against `teacher`'s own noise-free rendition of the same ids on
    Whisper's encoder output (`aligner`, a base WhisperAligner on `threads` where none is given); 'mas': monotonic
    alignment search on a sample of the posterior encoder `enc_q` (seeded `seed` + the utterance's index)."""
    if method not in DURATION_METHODS:
        raise ValueError(f"durations {method!r}: use one of {DURATION_METHODS}")
    if method == "mas" and enc_q is None:
        raise ValueError("durations 'mas' need the posterior encoder (enc_q)")
    if method == "dtw" and aligner is None:
        aligner = WhisperAligner("base", threads=threads)
    hop, sr = data.hop, data.sample_rate
    out, started = [], time.perf_counter()
    for k, (uid, ids, wav) in enumerate(zip(data.ids, data.phonemes, data.wav)):
        pause.yield_point()  # a long run's setup (200 recordings: 15 minutes) pauses for a timing, as its steps do
        if k and k % 25 == 0:
            left = (time.perf_counter() - started) / k * (len(data.ids) - k)
            _LOGGER.info("durations (%s): %d of %d recordings, about %.0f s left", method, k, len(data.ids), left)
        audio = wav.reshape(-1).numpy()
        if method == "mas":
            frames = mas_frames(teacher, enc_q, ids.tolist(), audio, sr, mean=False, seed=seed + k)
        else:
            reference, prior = teacher_rendition(teacher, ids.tolist())
            longest = max(len(audio), len(reference)) / sr
            if longest > WHISPER_SECONDS:
                raise ValueError(f"recording {uid!r}: {longest:.1f} s (it or the teacher's rendition of its text) is "
                                 f"longer than Whisper's {WHISPER_SECONDS:.0f} s window; "
                                 f"split it, or use durations 'mas'")
            frames = dtw_frames(aligner.encoder_features(reference, sr, hop), prior,
                                aligner.encoder_features(audio, sr, hop))
        frames = at_least_one(frames)
        if int(frames.sum()) != len(audio) // hop:
            raise RuntimeError(f"{method} gave {uid!r} {frames.sum():g} frames of {len(audio) // hop}")
        out.append(frames)
    _LOGGER.info("durations (%s) of %d recordings in %.0f s", method, len(out), time.perf_counter() - started)
    return out


def recording_durations(recordings, teacher, frontend, method: str = "dtw", **kw) -> list[np.ndarray]:
    """`utterance_durations` of a speaker's recordings (lib.data.ljspeech.Recording, at the voice's rate) with their
    transcripts' piper ids (every sentence of a transcript joined, as vits_objective.from_recordings joins them):
    per recording, frames per id adding up to its whole frames at the voice's hop."""
    from lib.training.vits_objective import from_recordings
    return utterance_durations(from_recordings(recordings, frontend, piper_torch.hop_length(teacher)),
                               teacher, method, **kw)


def durations_key(data, teacher, method: str, enc_q=None, seed: int = 0) -> str:
    """What a folder's durations depend on, as a sha256: the method, the voice's weights (and for MAS the posterior
    encoder's and the seed) and each utterance's id, phoneme ids and recording."""
    import hashlib
    h = hashlib.sha256(f"{method} {data.hop} {data.sample_rate}".encode())
    modules = [teacher] + ([enc_q] if method == "mas" and enc_q is not None else [])
    if method == "mas":
        h.update(f"seed {seed}".encode())
    for name, t in [kv for m in modules for kv in sorted(m.state_dict().items())]:
        h.update(name.encode())
        h.update(t.detach().cpu().float().contiguous().numpy().tobytes())
    for uid, ids, wav in zip(data.ids, data.phonemes, data.wav):
        h.update(uid.encode())
        h.update(ids.numpy().astype(np.int64).tobytes())
        h.update(wav.numpy().astype(np.float32).tobytes())
    return h.hexdigest()


def durations_cache() -> Path:
    """Where found durations are kept: the lab's cache, durations/."""
    from lib.harness.metrics import CACHE_DIR
    return Path(CACHE_DIR) / "durations"


def cached_durations(data, teacher, method: str = "dtw", *, cache_dir: Path | None = None, **kw) -> list[np.ndarray]:
    """`utterance_durations`, kept in `cache_dir` (`durations_cache()` where none is given) under `durations_key`:
    found once per folder, voice and method, whichever runs train on them."""
    from safetensors.numpy import load_file, save_file
    folder = Path(cache_dir or durations_cache())
    path = folder / f"{method}-{durations_key(data, teacher, method, kw.get('enc_q'), kw.get('seed', 0))}.safetensors"
    if path.exists():
        kept = load_file(str(path))
        return [kept[str(i)].astype(np.float64) for i in range(len(data.ids))]
    found = utterance_durations(data, teacher, method, **kw)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({str(i): np.asarray(d, dtype=np.int64) for i, d in enumerate(found)}, str(tmp),
              metadata={"method": method, "ids": json.dumps(list(data.ids)),
                        "yardstick": json.dumps(YARDSTICK[method])})
    tmp.replace(path)
    return found
