"""LJSpeech-format corpora (wavs/ + metadata.csv): synthesised by a teacher voice, read back, or loaded through
`datasets` (LJSpeech, LibriTTS) into the same records."""
from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from lib.core.results import atomic_write_text
from lib.core.audio import AudioFileError, read_audio, read_wav, write_wav
from lib.core.text import Sentence


@dataclass
class Record:
    id: str
    text: str
    audio: np.ndarray
    sample_rate: int
    speaker: str = ""


class CorpusError(ValueError):
    """A corpus that cannot be read; the message names the file and the line."""


def synthesize_corpus(voice, sentences: Sequence[Sentence], out_dir: Path, progress: bool = True) -> Path:
    """Synthesise every sentence into out_dir/wavs/<id>.wav and write metadata.csv (id|text|text).

    Resumable: sentences whose WAV already exists are not synthesised again. Each WAV and the metadata are
    written atomically, so an interrupted run leaves a valid, smaller corpus.
    """
    from tqdm.auto import tqdm
    out_dir = Path(out_dir)
    wavs = out_dir / "wavs"
    wavs.mkdir(parents=True, exist_ok=True)
    for s in tqdm(sentences, desc=f"corpus {out_dir.name}", disable=not progress):
        path = wavs / f"{s.id}.wav"
        if not path.exists():
            audio = voice.synthesize(s.text)
            write_wav(path, audio.samples, audio.sample_rate)
    lines = [f"{s.id}|{s.text}|{s.text}" for s in sentences]
    atomic_write_text(out_dir / "metadata.csv", "\n".join(lines) + "\n")
    return out_dir


def read_ljspeech(root: Path) -> Iterator[Record]:
    """Records of an LJSpeech-format directory; a bad metadata line or WAV raises CorpusError naming it."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CorpusError(f"no metadata.csv in {root}")
    with open(meta, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise CorpusError(f"{meta}:{lineno}: expected 'id|text[|normalized text]', got {'|'.join(row)!r}")
            wav = root / "wavs" / f"{row[0]}.wav"
            if not wav.is_file():
                raise CorpusError(f"{meta}:{lineno}: audio file {wav} is missing")
            try:
                audio, sr = read_wav(wav)
            except AudioFileError as exc:
                raise CorpusError(f"{meta}:{lineno}: {exc}") from None
            yield Record(row[0], row[2] if len(row) > 2 and row[2] else row[1], audio, sr)


# Column names of the hub datasets this project knows; other datasets name theirs in the call.
HF_LAYOUTS = {
    "ljspeech": {"id": "id", "text": "normalized_text", "audio": "audio", "speaker": None},
    "libritts": {"id": "id", "text": "text_normalized", "audio": "audio", "speaker": "speaker_id"},
}


def load_hf_corpus(path: str, layout: str = "ljspeech", split: str = "train", name: str | None = None,
                   limit: int | None = None, speaker: str | None = None, **load_kwargs) -> Iterator[Record]:
    """Records from a `datasets` dataset: a hub id (e.g. 'keithito/lj_speech', 'mythicinfinity/libritts' with
    name 'clean') or a local directory of data files, through the same `load_dataset` call.

    Audio is read undecoded and decoded with soundfile, which avoids `datasets`' optional audio decoders.
    """
    from datasets import Audio, load_dataset
    if layout not in HF_LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {sorted(HF_LAYOUTS)}")
    cols = HF_LAYOUTS[layout]
    ds = load_dataset(path, name, split=split, **load_kwargs)
    missing = [c for c in cols.values() if c and c not in ds.column_names]
    if missing:
        raise CorpusError(f"dataset {path} lacks columns {missing} for layout {layout!r} (has {ds.column_names})")
    ds = ds.cast_column(cols["audio"], Audio(decode=False))
    count = 0
    for i, row in enumerate(ds):
        spk = str(row[cols["speaker"]]) if cols["speaker"] else ""
        if speaker is not None and spk != str(speaker):
            continue
        blob = row[cols["audio"]]
        src = blob.get("bytes") or blob.get("path")
        try:
            audio, sr = read_audio(src)
        except AudioFileError as exc:
            raise CorpusError(f"dataset {path} row {i} ({row[cols['id']]}): unreadable audio ({exc})") from None
        yield Record(str(row[cols["id"]]), str(row[cols["text"]]), audio, sr, spk)
        count += 1
        if limit is not None and count >= limit:
            break


def export_ljspeech(records: Iterable[Record], out_dir: Path) -> Path:
    """Write records as an LJSpeech-format directory (used to turn a hub dataset into training data)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir / "wavs", ignore_errors=True)
    lines = []
    for r in records:
        write_wav(out_dir / "wavs" / f"{r.id}.wav", r.audio, r.sample_rate)
        lines.append(f"{r.id}|{r.text}|{r.text}")
    atomic_write_text(out_dir / "metadata.csv", "\n".join(lines) + "\n")
    return out_dir
