"""Adaptation targets, offline: a documented WORLD change of the voice (`VoiceShift`), another speaker moved onto
the teacher's timing (`SpeakerTarget`), and a voice whose every utterance passes through either (`ShiftedVoice`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VoiceShift:
    """A documented change of voice character made with WORLD (pyworld): F0 multiplied by 2**(semitones/12) and the
    spectral envelope's frequency axis stretched by `formant_ratio` (> 1 moves formants up, as a shorter vocal
    tract does), aperiodicity kept. The output has the input's length sample for sample, so a model's output can be
    compared with it frame by frame: the target of an adaptation whose success is measurable offline."""
    semitones: float = 3.0
    formant_ratio: float = 1.1
    frame_ms: float = 5.0
    needs_text = False

    def __call__(self, audio: np.ndarray, sr: int, text: str | None = None) -> np.ndarray:
        import pyworld
        from lib.core.audio import world_analysis
        x = np.ascontiguousarray(np.asarray(audio, dtype=np.float64).reshape(-1))
        if x.size < sr * self.frame_ms / 1000 * 4:
            raise ValueError(f"VoiceShift: {x.size} samples is too short to analyse")
        f0, sp, t = world_analysis(x, sr, self.frame_ms)
        ap = pyworld.d4c(x, f0, t, sr)
        bins = np.arange(sp.shape[1], dtype=np.float64)
        src = np.clip(bins / self.formant_ratio, 0, sp.shape[1] - 1)
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, sp.shape[1] - 1)
        frac = src - lo
        warped = sp[:, lo] * (1 - frac) + sp[:, hi] * frac
        y = pyworld.synthesize(f0 * 2.0 ** (self.semitones / 12.0), np.ascontiguousarray(warped), ap, sr,
                               frame_period=self.frame_ms)
        y = y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))
        return y.astype(np.float32)

    def describe(self) -> str:
        return (f"WORLD resynthesis with F0 x 2^({self.semitones:g}/12) ({self.semitones:+g} semitones) and the spectral "
                f"envelope stretched x{self.formant_ratio:g} in frequency")


class ShiftedVoice:
    """A voice whose every utterance passes through `shift` (a VoiceShift or a SpeakerTarget, called with the
    audio, its rate and the text): the adaptation target as a voice, so the evaluation harness can judge it and
    compare models with it."""

    def __init__(self, voice, shift):
        self.voice, self.shift, self.sample_rate = voice, shift, voice.sample_rate

    def synthesize(self, text: str):
        from lib.core.audio import Audio
        a = self.voice.synthesize(text)
        return Audio(np.clip(self.shift(a.samples, a.sample_rate, text), -1.0, 1.0), a.sample_rate)


class SpeakerTarget:
    """Another speaker reading the same text, moved onto the teacher's timing, so a real second voice can be a
    frame-exact target: both analysed with WORLD (5 ms frames), aligned by DTW on their coded spectral envelopes
    (librosa), the other speaker's F0, envelope and aperiodicity taken along the path at each teacher frame, and
    resynthesized at the teacher's length. Called as target(teacher_audio, sr, text)."""
    needs_text = True

    def __init__(self, voice, frame_ms: float = 5.0):
        self.voice, self.frame_ms = voice, frame_ms

    @staticmethod
    def _path_map(mc_teacher: np.ndarray, mc_other: np.ndarray) -> np.ndarray:
        from lib.core.audio import dtw_path
        path = dtw_path(mc_teacher, mc_other)
        return np.array([int(np.median(path[path[:, 0] == t, 1])) for t in range(len(mc_teacher))], dtype=int)

    def frame_map(self, teacher: np.ndarray, other: np.ndarray, sr: int) -> np.ndarray:
        """For each teacher frame, the index of the other speaker's frame the DTW path pairs it with (median)."""
        from lib.core.audio import mel_cepstrum
        return self._path_map(mel_cepstrum(teacher, sr)[1], mel_cepstrum(other, sr)[1])

    def __call__(self, audio: np.ndarray, sr: int, text: str | None = None) -> np.ndarray:
        import pyworld
        from lib.core.audio import coded_envelope, mel_cepstrum, resample, world_analysis
        if text is None:
            raise ValueError("a SpeakerTarget needs the text of the utterance")
        x = np.asarray(audio, dtype=np.float64).reshape(-1)
        spoken = self.voice.synthesize(text)
        other = resample(spoken.samples, spoken.sample_rate, sr).astype(np.float64)
        f0, sp, t = world_analysis(other, sr, self.frame_ms)
        ap = pyworld.d4c(np.ascontiguousarray(other), f0, t, sr)
        m = self._path_map(mel_cepstrum(x, sr)[1], coded_envelope(sp, sr))
        y = pyworld.synthesize(np.ascontiguousarray(f0[m]), np.ascontiguousarray(sp[m]), np.ascontiguousarray(ap[m]),
                               sr, frame_period=self.frame_ms)
        y = y[: x.size] if y.size >= x.size else np.pad(y, (0, x.size - y.size))
        peak = float(np.max(np.abs(y))) or 1.0
        return (y / peak * float(np.max(np.abs(x)) or 1.0)).astype(np.float32)

    def describe(self) -> str:
        return (f"{getattr(self.voice, 'name', 'another voice')} ({getattr(self.voice, 'speaker', '')}) reading the same "
                "text, its WORLD parameters moved onto the teacher's frames along a DTW path")


def speaker_folder(voice, sentences, folder) -> "Path":
    """An LJSpeech folder (lib.data.ljspeech) of `voice` reading `sentences` (lib.core.text.Sentence) at its own
    timing and rate, no DTW and no WORLD: a real second speaker's recordings, made offline. A folder already
    holding these sentences' transcripts is kept as it is."""
    from pathlib import Path
    from tqdm.auto import tqdm
    from lib.data import ljspeech
    folder = Path(folder)
    wanted = [(s.id, s.text) for s in sentences]
    try:
        if ljspeech.read_metadata(folder) == wanted and all((folder / "wavs" / f"{i}.wav").is_file() for i, _ in wanted):
            return folder
    except ljspeech.DatasetError:
        pass  # absent or incomplete: written anew

    def spoken():
        for s in tqdm(sentences, desc=f"{getattr(voice, 'name', 'voice')} reads", leave=False):
            clip = voice.synthesize(s.text)
            yield s.id, s.text, clip.samples, clip.sample_rate
    return ljspeech.write_folder(folder, spoken())
