"""The adaptation study's ladder of target speakers the lab makes offline (issue 68), each an LJSpeech folder at a
measured distance from the teacher: the teacher's own clips (the control), the teacher shifted in pitch by WORLD
(formants kept: a pitch-only distance), Kokoro-82M's jm_kumo, a style halfway between jm_kumo and jf_alpha, and
jf_alpha (the hard case). A rung is a spec whose name is rendered, never parsed; `tts-lab speaker folder --rung`
picks one by that name. Its distance: the speaker similarity (SECS) of its clips to the teacher's, and its F0 in Hz
(pYIN: the geometric mean, 10th and 90th percentiles of voiced frames) against the teacher's on the same sentences."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.core.results import atomic_write_text
from lib.data import ljspeech
from lib.harness import metrics
from lib.techniques import speaker_adapt
from lib.voices import synth as voices

DISTANCE = "distance.json"  # a rung folder's measured distance from the teacher
FRAME_S = 0.005  # WORLD's frame period for the pitch shift
_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rung:
    """A target speaker: the teacher (shifted by `semitones`, formants kept), or Kokoro's `speakers` (two: their
    style vectors averaged)."""
    speakers: tuple[str, ...] = ()  # Kokoro speakers; none: the teacher
    semitones: float = 0.0  # the teacher's WORLD pitch shift

    def __post_init__(self):
        if self.speakers and self.semitones:
            raise ValueError("a Kokoro rung is not pitch-shifted: give speakers or semitones, not both")
        if len(self.speakers) > 2:
            raise ValueError(f"a rung blends at most two Kokoro speakers, not {self.speakers}")

    @property
    def name(self) -> str:
        if self.speakers:
            return "~".join(self.speakers)
        return "teacher" + (f"{self.semitones:+g}st" if self.semitones else "")

    def voice(self, threads: int = 2):
        """The voice this rung's clips are spoken by (before any shift)."""
        if not self.speakers:
            return voices.load_voice("piper-joe", threads=threads)
        return voices.load_voice("kokoro-82m", speaker=self.speakers[0], threads=threads,
                                 blend=self.speakers[1] if len(self.speakers) > 1 else "")


LADDER = (Rung(), Rung(semitones=4), Rung(semitones=8), Rung(semitones=12), Rung(("jm_kumo",)),
          Rung(("jm_kumo", "jf_alpha")), Rung(("jf_alpha",)))


def rung(name: str) -> Rung:
    """The ladder's rung of this name; ValueError naming every rung where none is."""
    by_name = {r.name: r for r in LADDER}
    if name not in by_name:
        raise ValueError(f"no ladder rung {name!r}: use one of {', '.join(by_name)}")
    return by_name[name]


def world_shift(audio: np.ndarray, sr: int, semitones: float) -> np.ndarray:
    """`audio` with its F0 moved by `semitones` and its spectral envelope and aperiodicity kept (WORLD's CheapTrick,
    D4C and synthesis on pYIN's F0, the one tracker the ladder measures with), at its length: the same speaker's
    formants at another pitch. Not WORLD's own trackers: on the teacher DIO reads about 170 Hz and Harvest up to
    140 where pYIN reads about 95-110, and a shift from a wrong F0 moves the voice by that error too."""
    import pyworld
    x = np.ascontiguousarray(np.asarray(audio, dtype=np.float64).reshape(-1))
    f0 = metrics.f0_track(x.astype(np.float32), sr, hop=round(sr * FRAME_S))
    t = np.arange(f0.size) * FRAME_S
    sp, ap = pyworld.cheaptrick(x, f0, t, sr), pyworld.d4c(x, f0, t, sr)
    y = pyworld.synthesize(f0 * 2 ** (semitones / 12), sp, ap, sr, frame_period=FRAME_S * 1000)[: x.size]
    y = np.pad(y, (0, x.size - y.size))
    peak, source = float(np.abs(y).max(initial=0.0)), float(np.abs(x).max(initial=0.0))
    if peak > source > 0:  # a raised pitch can overshoot the source's peak: kept at it, so that nothing clips
        y = y * (source / peak)
    return y.astype(np.float32)


def make_folder(r: Rung, sentences, folder: Path, threads: int = 2, teacher_folder: Path | None = None) -> Path:
    """The rung's LJSpeech folder of `sentences` (kept once written, as every speaker folder). A shifted teacher is
    the teacher's own clips (`teacher_folder`, made where missing; default: `folder`/../teacher) shifted, so that
    the shift is its only distance from the control. A folder holding other sentences is refused (ljspeech.holds)."""
    if not r.semitones:
        return speaker_adapt.speaker_folder(r.voice(threads), sentences, folder)
    import soundfile as sf
    teacher = make_folder(Rung(), sentences, Path(teacher_folder or Path(folder).parent / "teacher"), threads)
    folder = Path(folder)
    wanted = [(x.id, x.text) for x in sentences]
    if ljspeech.holds(folder, wanted):
        return folder

    def shifted():
        for uid, words in tqdm(wanted, desc=f"{r.name}: WORLD shift", leave=False):
            samples, sr = sf.read(str(teacher / "wavs" / f"{uid}.wav"), dtype="float32")
            yield uid, words, world_shift(samples, sr, r.semitones), sr
    return ljspeech.write_folder(folder, shifted())


def distance(folder: Path, teacher_folder: Path, clips: int = 20) -> dict:
    """The rung folder's distance from the teacher's own clips of the same sentences (its first `clips`): SECS to
    them (pairs of different sentences), and F0 in Hz of both (f0_hz) and their ratio (also in semitones);
    written to `folder`/DISTANCE."""
    sr = 16000  # the speaker encoder's and pYIN's rate here: one rate for every rung
    mine = ljspeech.read_folder(Path(folder), sr)[:clips]
    theirs = {r.id: r for r in ljspeech.read_folder(Path(teacher_folder), sr)}
    pairs = [(m, theirs[m.id]) for m in mine if m.id in theirs]
    if len(pairs) < 2:
        raise ljspeech.DatasetError(f"{folder} and {teacher_folder} share {len(pairs)} sentences: at least 2 needed")
    own, ref = [m.samples for m, _ in pairs], [t.samples for _, t in pairs]
    f_own, f_ref = metrics.f0_hz(own, sr), metrics.f0_hz(ref, sr)
    encoder = metrics.SpeakerEncoder(threads=1)
    embed = lambda clips: [encoder(c, sr) for c in clips]
    # other sentences' pairs only, as the lab's SECS is: the teacher's control against itself is then not 1
    out = {"clips": len(pairs), "secs_to_teacher": metrics.secs(embed(own), embed(ref), exclude_same_index=True),
           **f_own,
           **{f"teacher_{k}": v for k, v in f_ref.items()},
           "f0_ratio": f_own["f0_hz"] / f_ref["f0_hz"]}
    out["f0_semitones"] = float(12 * np.log2(out["f0_ratio"]))
    atomic_write_text(Path(folder) / DISTANCE, json.dumps(out, indent=1))
    _LOGGER.info("%s: %s", Path(folder).name, out)
    return out


def ladder(root: Path, names: list[str] | None = None, sentences=None, threads: int = 2,
           clips: int = 20) -> pd.DataFrame:
    """Every rung of `names` (the whole LADDER when None) as a folder under `root` (named as the rung), the teacher's
    first, each with its distance from the teacher (a folder's distance.json is read where it was written for as many
    clips): one row per rung, in the ladder's order."""
    from lib.jobs.speaker_job import target_sentences
    sentences = sentences if sentences is not None else target_sentences()
    root = Path(root)
    teacher = make_folder(Rung(), sentences, root / Rung().name, threads)
    rows = []
    for r in [rung(n) for n in names] if names else LADDER:
        folder = make_folder(r, sentences, root / r.name, threads, teacher)
        kept = json.loads((folder / DISTANCE).read_text()) if (folder / DISTANCE).exists() else {}
        rows.append({"rung": r.name, **(kept if kept.get("clips") == clips else distance(folder, teacher, clips))})
    return pd.DataFrame(rows)
