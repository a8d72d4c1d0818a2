"""Audio in and out, and the signal analysis both the judges (metrics) and the techniques (adaptation targets) build
on: WAV files, resampling, WORLD F0 and envelopes, DTW. Knows no model and judges nothing."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEFAULT_SAMPLE_RATE = 22050  # piper's medium voices' rate (the lab's teacher): where no voice or clip gives its own


@dataclass
class Audio:
    """A clip: samples (float) at sample_rate, what every synthesizer returns."""
    samples: np.ndarray
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


class AudioFileError(ValueError):
    """An audio file that cannot be read; the message names it."""


def write_wav(path: Path, audio: np.ndarray, sr: int) -> None:
    """16-bit PCM WAV, written atomically."""
    import soundfile as sf
    from lib.core.results import atomic_write_bytes  # deferred: results loads pandas; a voice alone does not
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32), sr, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buf.getvalue())


def read_audio(src, what: str = "audio") -> tuple[np.ndarray, int]:
    """float32 mono samples and rate from a path, bytes or file object; AudioFileError naming `src` otherwise."""
    import soundfile as sf
    try:
        audio, sr = sf.read(io.BytesIO(src) if isinstance(src, (bytes, bytearray))
                            else str(src) if isinstance(src, Path) else src,
                            dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioFileError(f"cannot read {what} "
                             f"{src if not isinstance(src, (bytes, bytearray)) else '(bytes)'}: {exc}") from None
    if audio.shape[0] == 0:
        raise AudioFileError(f"{what} {src if not isinstance(src, (bytes, bytearray)) else '(bytes)'} holds no samples")
    return audio.mean(axis=1), int(sr)


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """float32 mono samples and rate of a file."""
    return read_audio(Path(path), "audio file")


def resample(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return np.asarray(x, dtype=np.float32)
    import soxr
    return soxr.resample(np.asarray(x, dtype=np.float32), sr, target).astype(np.float32)


def sound_bounds(x: np.ndarray, sr: int, top_db: float = 40.0, margin_s: float = 0.05) -> tuple[int, int]:
    """(first, end) sample of `x` without its leading and trailing silence (frames more than `top_db` below the
    clip's loudest, librosa's energy trim, as piper's preprocessing trims with its VAD), `margin_s` of it kept."""
    import librosa
    _, (start, end) = librosa.effects.trim(np.asarray(x, dtype=np.float32), top_db=top_db, frame_length=1024,
                                           hop_length=256)
    margin = int(margin_s * sr)
    return max(0, int(start) - margin), min(len(x), int(end) + margin)


def trim_silence(x: np.ndarray, sr: int, top_db: float = 40.0, margin_s: float = 0.05) -> np.ndarray:
    """`x` between its `sound_bounds`."""
    start, end = sound_bounds(x, sr, top_db, margin_s)
    return np.asarray(x[start:end], dtype=np.float32)


def match_loudness(x: np.ndarray, target_dbfs: float = -23.0, peak: float = 0.95) -> np.ndarray:
    """`x` scaled to an RMS of `target_dbfs` (so a speaker's clips share one level), its peak kept under `peak`."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0
    if rms <= 0:
        return np.asarray(x, dtype=np.float32)
    gain = min(10 ** (target_dbfs / 20) / rms, peak / max(float(np.max(np.abs(x))), 1e-9))
    return (np.asarray(x, dtype=np.float32) * gain).astype(np.float32)


def world_analysis(x: np.ndarray, sr: int, frame_ms: float = 5.0):
    """WORLD F0 (dio + stonemask), spectral envelope (cheaptrick) and frame times of a mono signal."""
    import pyworld
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1))
    f0, t = pyworld.dio(x, sr, frame_period=frame_ms)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr)
    return f0, sp, t


# Mel-cepstrum order and all-pass constant per sample rate, as VERSA's and ESPnet's MCD use them.
MCEP_PARAMS = {16000: (23, 0.42), 22050: (34, 0.45), 24000: (34, 0.46), 44100: (39, 0.53), 48000: (39, 0.55)}


@functools.lru_cache(maxsize=8)
def _freqt_matrix(n_in: int, order: int, alpha: float) -> np.ndarray:
    """SPTK's frequency transform (freqt) of an `n_in`-point cepstrum to `order`+1 warped coefficients, as a matrix.
    freqt feeds the cepstrum, last coefficient first, into a fixed linear recursion g <- M g + e0 c[i], so
    coefficient i reaches the output through M^i e0: column i of the matrix."""
    b = 1.0 - alpha * alpha
    m = np.zeros((order + 1, order + 1))
    for k in range(order + 1):  # M, column by column: one step of the recursion from a unit state, no input
        d = np.zeros(order + 1)
        d[k] = 1.0
        m[0, k] = alpha * d[0]
        if order >= 1:
            m[1, k] = b * d[0] + alpha * d[1]
        for j in range(2, order + 1):
            m[j, k] = d[j - 1] + alpha * (d[j] - m[j - 1, k])
    cols = np.empty((order + 1, n_in))
    v = np.zeros(order + 1)
    v[0] = 1.0
    for i in range(n_in):
        cols[:, i] = v
        v = m @ v
    return cols


def sp2mc(sp: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Mel-cepstrum (order+1 coefficients per frame) of power spectra (frames x bins), as pysptk.sp2mc computes it:
    log power, real cepstrum (c0 halved), then frequency warping by `alpha`. Written here (a log, an FFT and one
    matrix product) because pysptk ships no wheel and would need a C build in every fresh install."""
    c = np.fft.irfft(np.log(np.asarray(sp, dtype=np.float64)), axis=-1)
    c[..., 0] /= 2.0
    return c @ _freqt_matrix(c.shape[-1], int(order), float(alpha)).T


def mcep(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """WORLD F0 and the mel-cepstrum VERSA's MCD compares (sp2mc of the CheapTrick envelope with the order and
    all-pass constant for `sr`), per 5 ms frame."""
    if sr not in MCEP_PARAMS:
        raise ValueError(f"no mel-cepstrum settings for {sr} Hz (have {sorted(MCEP_PARAMS)}): resample first")
    f0, sp, _ = world_analysis(x, sr)
    return f0, sp2mc(sp, *MCEP_PARAMS[sr])


def dtw_path(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import librosa
    _, wp = librosa.sequence.dtw(X=a.T, Y=b.T, metric="euclidean")
    return wp[::-1]


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    """Signal-to-noise ratio of `test` against `ref` in dB, over their common length (how equal two renderings of
    the same audio are: engines, chunked against whole)."""
    n = min(ref.size, test.size)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(np.sum((ref[:n] - test[:n]) ** 2), 1e-20)))
