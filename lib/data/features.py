"""Audio features for looking at data: log-mel spectrogram, F0 contour, energy, phoneme durations, speaking rate."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.core.text import normalize_for_wer


def log_mel(audio: np.ndarray, sr: int, n_mels: int = 80, hop: int = 256) -> np.ndarray:
    import librosa
    mel = librosa.feature.melspectrogram(y=audio, sr=sr, n_fft=1024, hop_length=hop, n_mels=n_mels)
    return librosa.power_to_db(mel, ref=np.max)


def f0_contour(audio: np.ndarray, sr: int, frame_ms: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Times (s) and F0 (Hz, 0 where unvoiced) from WORLD's DIO + StoneMask."""
    import pyworld
    x = np.ascontiguousarray(audio, dtype=np.float64)
    f0, t = pyworld.dio(x, sr, frame_period=frame_ms)
    return t, pyworld.stonemask(x, f0, t, sr)


def energy_db(audio: np.ndarray, hop: int = 256) -> np.ndarray:
    import librosa
    return librosa.amplitude_to_db(librosa.feature.rms(y=audio, frame_length=1024, hop_length=hop)[0], ref=1.0)


def utterance_features(audio: np.ndarray, sr: int, text: str) -> dict[str, float]:
    """Duration, voiced F0 statistics, mean energy and words per second of one clip."""
    _, f0 = f0_contour(audio, sr)
    voiced = f0[f0 > 0]
    dur = len(audio) / sr
    words = len(normalize_for_wer(text).split())
    return {
        "audio_s": dur,
        "f0_mean_hz": float(voiced.mean()) if voiced.size else float("nan"),
        "f0_std_semitones": float(np.std(12 * np.log2(voiced / voiced.mean()))) if voiced.size else float("nan"),
        "voiced_fraction": float(voiced.size / max(1, f0.size)),
        "energy_db_mean": float(energy_db(audio).mean()),
        "words_per_s": words / dur if dur > 0 else float("nan"),
    }


class PhonemeAligner:
    """Per-phoneme durations from the Piper voice itself (piper patches the ONNX graph to expose them)."""

    def __init__(self, model_path: Path, config_path: Path):
        from piper.voice import PiperVoice
        self.voice = PiperVoice.load(model_path, config_path, include_alignments=True)

    def durations(self, text: str) -> list[tuple[str, float]]:
        from piper.config import SynthesisConfig
        cfg = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        out = []
        for chunk in self.voice.synthesize(text, syn_config=cfg, include_alignments=True):
            for al in chunk.phoneme_alignments or []:
                out.append((al.phoneme, al.num_samples / chunk.sample_rate))
        return out
