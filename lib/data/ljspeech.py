"""A speaker's recordings with transcripts in the LJSpeech layout (`wavs/<id>.wav` + `metadata.csv`, lines
`id|text` or `id|text|normalized text`), read at any sample rate and resampled to the voice's. Written by hand:
`datasets`' csv loader reports neither the file nor the line of a bad row, and a bad folder must say both."""
from __future__ import annotations

import codecs
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lib.core.audio import match_loudness, resample, trim_silence, write_wav
from lib.core.results import atomic_write_text, read_json_object
from lib.core.text import TextError, check_speakable

_LOGGER = logging.getLogger(__name__)

METADATA = "metadata.csv"
DURATIONS = "durations.json"  # optional: {id: seconds of each piper phoneme id of its wav}, from whatever spoke it
MIN_SECONDS = 0.5  # shorter clips hold too few frames for the decoder's training segment and for SECS
SILENT_PEAK = 1e-3  # a clip whose loudest sample is below -60 dBFS holds no speech
CLIPPED, CLIPPED_SHARE = 0.999, 1e-3  # more than 0.1 % of samples at full scale: a clipped recording


class DatasetError(ValueError):
    """A target folder that cannot be used; the message names the file (and the line of metadata.csv)."""


@dataclass(frozen=True)
class Recording:
    """One utterance of the speaker: its id, transcript and samples at `sample_rate`."""
    id: str
    text: str
    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


def read_metadata(folder: Path) -> list[tuple[str, str]]:
    """(id, text) per line of `folder`/metadata.csv; the normalized column, when there is one, is the text. Every
    problem is a DatasetError naming the file and the line."""
    meta = Path(folder) / METADATA
    if not Path(folder).is_dir():
        raise DatasetError(f"target dataset {folder} is not a folder (expected wavs/ and {METADATA})")
    if not meta.is_file():
        raise DatasetError(f"{meta} is missing: an LJSpeech folder has {METADATA} with lines 'id|text'")
    try:
        raw = meta.read_bytes()
        # a byte-order mark says the encoding (Windows editors save UTF-8 with one): read it as what it marks
        encoding = "utf-16" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
        lines = raw.decode(encoding).splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta} cannot be read as UTF-8 text: {exc}") from None
    rows, seen = [], {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            raise DatasetError(f"{meta} line {n}: the line is empty (write 'id|text')")
        fields = line.split("|")
        if len(fields) not in (2, 3):
            raise DatasetError(f"{meta} line {n}: expected 'id|text' or 'id|text|normalized', got {len(fields)} "
                               f"fields in {line[:60]!r}")
        uid, text = fields[0].strip(), fields[-1].strip() or fields[1].strip()
        if not uid or not text:
            raise DatasetError(f"{meta} line {n}: {'the id' if not uid else 'the transcript'} "
                               f"is empty in {line[:60]!r}")
        if uid in seen:
            raise DatasetError(f"{meta} line {n}: id {uid!r} repeats line {seen[uid]}")
        try:
            text = check_speakable(text)
        except TextError as exc:
            raise DatasetError(f"{meta} line {n}: the transcript of {uid!r} cannot be spoken: {exc}") from None
        seen[uid] = n
        rows.append((uid, text))
    if not rows:
        raise DatasetError(f"{meta} holds no line")
    return rows


def read_folder(folder: Path, sample_rate: int, *, min_seconds: float = MIN_SECONDS,
                limit: int = 0) -> list[Recording]:
    """Every recording of an LJSpeech folder at `sample_rate` (mono, float32 in [-1, 1]), its leading and trailing
    silence trimmed and its loudness matched to the others' (core.audio); the first `limit` only when `limit` > 0.
    A missing, unreadable, silent or (once trimmed) too short wav is a DatasetError naming it and its metadata
    line; a clipped one is named in a warning."""
    import soundfile as sf
    folder = Path(folder)
    rows = read_metadata(folder)
    out = []
    for n, (uid, text) in enumerate(rows[: limit or None], start=1):
        wav = folder / "wavs" / f"{uid}.wav"
        where = f"{wav} ({METADATA} line {n})"
        if not wav.is_file():
            raise DatasetError(f"{where}: the recording is missing")
        try:
            samples, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        except (RuntimeError, OSError, ValueError) as exc:  # soundfile's LibsndfileError is a RuntimeError
            raise DatasetError(f"{where}: cannot read its audio or its sample rate: {exc}") from None
        if sr <= 0:
            raise DatasetError(f"{where}: sample rate {sr} cannot be used")
        mono = samples.mean(axis=1)
        if mono.size / sr < min_seconds:
            raise DatasetError(f"{where}: {mono.size / sr:.2f} s is too short (at least {min_seconds} s)")
        if not np.isfinite(mono).all():
            raise DatasetError(f"{where}: the audio holds NaN or infinite samples")
        peak = float(np.max(np.abs(mono)))
        if peak < SILENT_PEAK:
            raise DatasetError(f"{where}: the recording is silent (peak {20 * np.log10(max(peak, 1e-12)):.0f} dBFS)")
        clipped = float(np.mean(np.abs(mono) >= CLIPPED))
        if clipped > CLIPPED_SHARE:
            _LOGGER.warning("%s: %.2f %% of its samples are clipped (at full scale): it will teach the distortion",
                            where, 100 * clipped)
        mono = trim_silence(mono, sr)
        if mono.size / sr < min_seconds:
            raise DatasetError(f"{where}: {mono.size / sr:.2f} s of sound once its silence is trimmed is too short "
                               f"(at least {min_seconds} s)")
        out.append(Recording(uid, text, match_loudness(resample(mono, sr, sample_rate)), sample_rate))
    _LOGGER.info("%s: %d recordings, %.1f minutes", folder, len(out), sum(r.seconds for r in out) / 60)
    return out


def write_folder(folder: Path, items: Iterable[tuple[str, str, np.ndarray, int]]) -> Path:
    """An LJSpeech folder from (id, text, samples, sample rate) items: each wav, then metadata.csv last, written
    atomically, so a folder with a metadata.csv is complete."""
    folder = Path(folder)
    (folder / "wavs").mkdir(parents=True, exist_ok=True)
    lines = []
    for uid, text, samples, sr in items:
        if "|" in text or "\n" in text:
            raise DatasetError(f"transcript of {uid!r} holds '|' or a line break, which {METADATA} cannot: "
                               f"{text[:60]!r}")
        tmp = folder / "wavs" / f".{uid}.tmp.wav"
        write_wav(tmp, np.asarray(samples, dtype=np.float32), int(sr))
        tmp.replace(folder / "wavs" / f"{uid}.wav")
        lines.append(f"{uid}|{text}")
    atomic_write_text(folder / METADATA, "\n".join(lines) + "\n")
    return folder


def holds(folder: Path, wanted: Sequence[tuple[str, str]]) -> bool:
    """Whether `folder` already holds these (id, text) recordings, each wav written (a folder is kept once written);
    False where it is absent or incomplete; DatasetError where it is complete with other sentences, which a new
    folder would overwrite."""
    folder = Path(folder)
    try:
        have = read_metadata(folder)
    except DatasetError:
        return False  # absent or incomplete (metadata.csv is written last): written anew
    if have != list(wanted):
        raise DatasetError(f"{folder} already holds {len(have)} other recordings (first {have[0][0] if have else '-'!r}"
                           f", asked {wanted[0][0] if wanted else '-'!r}): give another folder, or remove it")
    return all((folder / "wavs" / f"{i}.wav").is_file() for i, _ in wanted)


def split(recordings: Sequence[Recording], validation: int,
          clips: int = 0) -> tuple[list[Recording], list[Recording]]:
    """(training, validation): the last `validation` recordings of the folder's order are the validation split,
    which checkpoint choice uses and no training step sees; `clips` > 0 keeps only the first that many for training."""
    if not 0 < validation < len(recordings):
        raise DatasetError(f"a validation split of {validation} needs more than {validation} recordings "
                           f"(the folder has {len(recordings)})")
    if not 0 <= clips <= len(recordings) - validation:
        raise DatasetError(f"clips {clips}: the folder has {len(recordings) - validation} training recordings")
    return list(recordings[:-validation][:clips or None]), list(recordings[-validation:])


def read_durations(folder: Path) -> dict[str, list[float]]:
    """The folder's own durations (DURATIONS: seconds per piper phoneme id of each clip, as the speaker that
    recorded it or a forced aligner gave them); DatasetError naming the file or the clip where they cannot be read."""
    path = Path(folder) / DURATIONS
    raw = read_json_object(path, DatasetError, "is missing: the folder brings no durations of its own (use durations "
                           "'dtw')", "a JSON object of clip id -> seconds per phoneme id")
    bad = [uid for uid, d in raw.items() if not isinstance(d, list) or any(not isinstance(x, (int, float)) or x < 0
                                                                         for x in d)]
    if bad:
        raise DatasetError(f"{path}: the durations of {bad[0]!r} are not a list of seconds >= 0")
    return {uid: [float(x) for x in d] for uid, d in raw.items()}


def frames_of(seconds: Sequence[float], frames: int, sample_rate: int, hop: int, where: str,
              slack: int = 3) -> np.ndarray:
    """Seconds per id as whole frames (`hop` samples at `sample_rate`) adding up to the recording's `frames`: the
    edges rounded, the last edge moved onto the recording's end when they differ by at most `slack` frames (its
    silence trimmed once more as it was read); DatasetError naming `where` beyond that."""
    edges = np.round(np.concatenate([[0.0], np.cumsum(seconds)]) * sample_rate / hop).astype(np.int64)
    if abs(int(edges[-1]) - frames) > slack:
        raise DatasetError(f"{where}: its durations add up to {edges[-1]} frames, its recording holds {frames}")
    edges = np.minimum(edges, frames)
    edges[-1] = frames
    return np.diff(edges)

