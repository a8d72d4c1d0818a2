"""Kokoro-82M with its own durations: a copy of its ONNX graph whose per-token frame counts (the
`round(...).clamp(min=1)` of its duration predictor) are a second output, and those counts laid onto the piper
voice's phoneme ids and frames, so each Kokoro utterance comes with the true frames per piper phoneme.

Token mapping. The lab drives Kokoro with piper's espeak-ng phoneme list joined into one string, keeping the
characters in Kokoro's vocabulary (KokoroOnnxVoice.tokens); piper's phonemes are that list's characters too, each
followed by piper's pad. So Kokoro's tokens are [0] + (each character of the list that Kokoro knows) + [0], and
piper's ids are ^ _ (phoneme _)* $. The leading 0 maps onto piper's ^, the trailing 0 onto $, each phoneme
character onto its own id; piper's pads get no frames. A character Kokoro drops gets none either; one piper drops
(absent from its id map) gives its frames to the phoneme before it."""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.voices.synth import KokoroOnnxVoice

_LOGGER = logging.getLogger(__name__)

DURATIONS = "/encoder/Gather_output_0"  # int64 [tokens]: Cast(Clip(Round(sum(sigmoid(...)) / speed), min=1))[0]
SAMPLES_PER_FRAME = 600  # Kokoro's audio holds exactly sum(durations) * 600 samples at 24 kHz (40 frames a second)


def timed_model(source: Path, folder: Path | None = None) -> Path:
    """A copy of Kokoro's ONNX file `source` with its per-token durations as a second graph output ('durations'),
    written once beside it (or into `folder`); the shipped file is never touched."""
    import onnx
    from onnx import TensorProto, helper
    source = Path(source)
    st = source.stat()
    tag = hashlib.sha1(f"{source.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    out = Path(folder or source.parent) / f"{source.stem}.durations-{tag}.onnx"
    if out.is_file():
        return out
    model = onnx.load(str(source))
    produced = {o for n in model.graph.node for o in n.output}
    if DURATIONS not in produced:
        raise ValueError(f"{source}: no tensor {DURATIONS} (the durations of Kokoro-82M's encoder): another export?")
    model.graph.node.append(helper.make_node("Identity", [DURATIONS], ["durations"], name="durations_out"))
    model.graph.output.append(helper.make_tensor_value_info("durations", TensorProto.INT64, ["tokens"]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(out)
    _LOGGER.info("Kokoro with durations as an output: %s", out)
    return out


@dataclass
class Timed:
    """One Kokoro utterance: its audio (24 kHz, peak-normalised as the lab's speaker folders are), its phonemes
    (piper's list), Kokoro's tokens and frames per token (40 a second)."""
    audio: np.ndarray
    phonemes: list[str]
    tokens: list[int]
    frames: np.ndarray
    sample_rate: int = 24000


class KokoroTimed:
    """Kokoro-82M (a KokoroOnnxVoice's speaker, style and front end) through the graph with durations."""

    def __init__(self, speaker: str = "jf_alpha", threads: int = 1, folder: Path | None = None):
        from lib.core import onnx_session
        self.voice = KokoroOnnxVoice(speaker=speaker, threads=threads)
        self.path = timed_model(self.voice.model_path, folder)
        self.session = onnx_session.session(self.path, threads, what="Kokoro with durations")

    def speak(self, text: str) -> Timed:
        """The first sentence of `text` as Kokoro says it, with its frames per token."""
        phonemes = self.voice.frontend.phonemes(text)[0]
        ids = self.voice.tokens(phonemes)
        style = self.voice.engine.style[min(len(ids), len(self.voice.engine.style)) - 1].reshape(1, 256)
        audio, frames = self.session.run(None, {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": style,
                                                "speed": np.array([self.voice.speed], dtype=np.float32)})
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        peak = float(np.abs(audio).max())
        return Timed(audio / peak if peak > 1e-8 else audio, list(phonemes), [0, *ids, 0],
                     np.asarray(frames, dtype=np.int64).reshape(-1))


def piper_frames_per_id(timed: Timed, vocab: dict, id_map: dict, hop: int, sample_rate: int,
                        n_frames: int | None = None) -> np.ndarray:
    """Kokoro's frames per token as frames of the piper voice (`hop` samples at `sample_rate`) per piper phoneme id
    (see the module's mapping): token boundaries are converted in seconds and rounded, so the frames add up to the
    utterance's length; `n_frames` (the resampled recording's whole frames) caps the last boundary."""
    per_phoneme = []  # (piper has an id for it, Kokoro's frames of its characters), in piper's order
    k = 1  # Kokoro's token index: 0 is its leading pad
    for ph in timed.phonemes:
        f = 0
        for ch in ph:
            if ch in vocab:
                f += int(timed.frames[k])
                k += 1
        per_phoneme.append((ph in id_map, f))
    if k != len(timed.frames) - 1:
        raise ValueError(f"{k + 1} Kokoro tokens mapped, it spoke {len(timed.frames)}: the phonemes differ")
    kokoro = [int(timed.frames[0]), 0]  # ^ and its pad
    for known, f in per_phoneme:
        if known:
            kokoro += [f, 0]
        else:  # piper skips the phoneme: its frames stay with the phoneme before
            kokoro[-2] += f
    kokoro.append(int(timed.frames[-1]))  # $
    edges = np.concatenate([[0], np.cumsum(kokoro)]) * (SAMPLES_PER_FRAME / timed.sample_rate) * sample_rate / hop
    edges = np.round(edges).astype(np.int64)
    if n_frames is not None:
        edges = np.minimum(edges, n_frames)
        edges[-1] = n_frames
    return np.diff(edges)


def timed_folder(speaker: str, sentences, folder: Path, frontend, threads: int = 1) -> Path:
    """An LJSpeech folder of Kokoro's `speaker` reading `sentences` (lib.core.text.Sentence), with its true
    durations beside it (ljspeech.DURATIONS: seconds per piper phoneme id of each wav, `frontend` the piper voice's
    PiperFrontend): the clips trimmed of their silence as a folder is read, the trimmed samples taken off the first
    and last ids. Kept as it is where it already holds these sentences and their durations."""
    import json

    from lib.core.audio import sound_bounds
    from lib.core.results import atomic_write_text
    from lib.data import ljspeech
    folder = Path(folder)
    wanted = [(s.id, s.text) for s in sentences]
    try:
        if ljspeech.read_metadata(folder) == wanted and set(ljspeech.read_durations(folder)) == {i for i, _ in wanted}:
            return folder
    except ljspeech.DatasetError:
        pass  # absent or incomplete: written anew
    from tqdm.auto import tqdm
    kokoro, seconds, items = KokoroTimed(speaker, threads=threads), {}, []
    for s in tqdm(sentences, desc=f"kokoro-82m ({speaker}) reads, timed", leave=False):
        timed = kokoro.speak(s.text)
        if timed.phonemes != frontend.phonemes(s.text)[0]:
            raise ValueError(f"{s.id}: Kokoro spoke other phonemes than piper's for the same text")
        per_id = piper_frames_per_id(timed, kokoro.voice.vocab, frontend.config.phoneme_id_map, 1, timed.sample_rate,
                                     len(timed.audio)).astype(np.int64)  # samples per id at Kokoro's rate
        start, end = sound_bounds(timed.audio, timed.sample_rate)
        for cut, order in ((start, range(len(per_id))), (len(timed.audio) - end, range(len(per_id) - 1, -1, -1))):
            for i in order:  # the trimmed samples leave the first (then the last) ids
                taken = min(cut, int(per_id[i]))
                per_id[i] -= taken
                cut -= taken
                if not cut:
                    break
        seconds[s.id] = [round(float(x) / timed.sample_rate, 6) for x in per_id]
        items.append((s.id, s.text, timed.audio[start:end], timed.sample_rate))
    ljspeech.write_folder(folder, items)
    atomic_write_text(folder / ljspeech.DURATIONS, json.dumps(seconds) + "\n")
    return folder
