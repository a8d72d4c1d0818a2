"""Engines: the one interface that runs a voice's graph on a back-end. A voice is a front end plus one of these:
piper's ONNX file in ONNX Runtime or OpenVINO, the PyTorch rebuild, the split static-window decoder, Kokoro's ONNX.
The benchmark's engines over the explicit-noise exports (lib.runtimes.bench_engines) implement the same interface."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core import machine, onnx_session
from lib.core.audio import DEFAULT_SAMPLE_RATE
from lib.voices.piper_torch import VoiceFileError, check_file
from lib.voices.scales import CHUNK_FRAMES, CONTEXT_FRAMES, SCALES



class Engine:
    """Waveforms for a batch of phoneme-id sequences (`scales`: noise, length and noise_w; `seed`: the noise of an
    engine that takes it as an input), the latent alone and a fixed-shape window decoder where the graph has them.
    `label`, `backend`, `precision`, `device` and `effective` (what it really ran on) go into its result rows."""
    label: str = ""
    backend: str = ""
    precision: str = "fp32"
    device: str = "cpu"
    effective: str = ""
    sample_rate: int = DEFAULT_SAMPLE_RATE
    hop: int = 256
    channels: int = 192

    def synth(self, batch: Sequence[Sequence[int]], seed: int = 0,
              scales: Sequence[float] = SCALES) -> list[np.ndarray]:
        raise NotImplementedError

    def latent(self, ids: Sequence[int], seed: int = 0):
        raise NotImplementedError(f"{type(self).__name__} has no separate latent graph")

    def decode_window(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} has no window decoder")

    def sync(self) -> None:
        """Wait for work queued on a device (CUDA); a no-op on the CPU."""


def ort_session(path: Path, threads: int, seed: int | None, providers=(onnx_session.CPU,), what: str = "voice model"):
    """A voice's ONNX Runtime session (lib.core.onnx_session); a file it cannot load is a VoiceFileError naming it."""
    try:
        return onnx_session.session(path, threads, providers, seed=seed, what=what)
    except onnx_session.OnnxModelError as exc:
        raise VoiceFileError(str(exc)) from None


def openvino_cpu(path: Path, threads: int, precision: str | None, backend: str = "openvino-cpu",
                 what: str = "voice model"):
    """`path` compiled by OpenVINO's CPU plugin (lib.core.onnx_session) after checking that this CPU computes
    `precision` natively; (compiled model, the precision it really runs at)."""
    if precision:
        machine.require_precision(backend, precision)
    try:
        compiled = onnx_session.openvino(path, "CPU", precision, threads, what=what)
    except onnx_session.OnnxModelError as exc:
        raise VoiceFileError(str(exc)) from None
    return compiled, onnx_session.ov_precision(compiled)


def piper_feeds(ids: Sequence[int], scales: Sequence[float], speaker_id: int | None, inputs: set) -> dict:
    """The inputs of piper's ONNX voice (and of its latent half) for one sentence."""
    feeds = {"input": np.array([ids], dtype=np.int64), "input_lengths": np.array([len(ids)], dtype=np.int64),
             "scales": np.array(scales, dtype=np.float32)}
    if "sid" in inputs:
        feeds["sid"] = np.array([speaker_id or 0], dtype=np.int64)
    return feeds


class PiperOrt(Engine):
    """piper's ONNX voice in ONNX Runtime. The graph draws its sampling noise with RandomNormalLike, whose generator
    is seeded when the session is created: with `seed` set, a session's sequence of outputs is the same every run."""

    def __init__(self, path: Path, threads: int = 1, seed: int | None = 0, providers=(onnx_session.CPU,),
                 speaker_id: int | None = None, backend: str = "ort-cpu"):
        self.session = ort_session(path, threads, seed, providers)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.backend, self.label, self.speaker_id = backend, f"{backend}-fp32", speaker_id
        self.effective = self.session.get_providers()[0]

    def synth(self, batch, seed=0, scales=SCALES):
        return [self.session.run(None, piper_feeds(ids, scales, self.speaker_id, self.inputs))[0].reshape(-1)
                for ids in batch]


class PiperOpenVino(Engine):
    """piper's ONNX voice compiled by OpenVINO's CPU plugin at `precision` ('f32', or 'bf16' on AMX/AVX-512 BF16)."""

    def __init__(self, path: Path, threads: int = 1, precision: str = "f32", speaker_id: int | None = None,
                 backend: str = "openvino-cpu"):
        self.compiled, self.effective = openvino_cpu(path, threads, precision, backend)
        self.inputs = {n for i in self.compiled.inputs for n in i.get_names()}
        self.run = onnx_session.ov_runner(self.compiled)
        self.backend, self.precision, self.speaker_id = backend, precision, speaker_id
        self.label = f"{backend}-{precision}"

    def synth(self, batch, seed=0, scales=SCALES):
        return [self.run(piper_feeds(ids, scales, self.speaker_id, self.inputs)).reshape(-1) for ids in batch]


class PiperSplit(Engine):
    """Text -> latent z in ONNX Runtime (`latent_path`, float, dynamic length), then the decoder over fixed-size
    windows of z (`decoder_path`, one static shape) in OpenVINO (`precision` f32 or bf16) or ONNX Runtime.

    Each chunk is decoded with `context_frames` of z on both sides and only its centre is kept, so chunk borders
    are not heard when the context covers the decoder's receptive field; the first audio is ready after one chunk."""

    def __init__(self, latent_path: Path, decoder_path: Path, threads: int = 1, seed: int | None = 0,
                 decoder_backend: str = "openvino-cpu", precision: str = "bf16", chunk_frames: int = CHUNK_FRAMES,
                 context_frames: int = CONTEXT_FRAMES, speaker_id: int | None = None):
        self.session = ort_session(latent_path, threads, seed)
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.chunk_frames, self.context_frames, self.speaker_id = chunk_frames, context_frames, speaker_id
        self.window = chunk_frames + 2 * context_frames
        dec_path = check_file(decoder_path, "decoder model")
        if decoder_backend == "openvino-cpu":
            compiled, self.effective = openvino_cpu(dec_path, threads, precision, decoder_backend, "decoder model")
            run = onnx_session.ov_runner(compiled)
            self._decode = lambda z: run({0: z})
        else:
            sess = ort_session(dec_path, threads, None, what="decoder model")
            self.effective = "f32"
            self._decode = lambda z: sess.run(None, {"z": z})[0]
        self.backend, self.precision, self.label = "split", precision, f"split+{decoder_backend}-{precision}"

    def latent(self, ids, seed=0, scales=SCALES):
        return self.session.run(None, piper_feeds(ids, scales, self.speaker_id, self.inputs))[0]

    def decode_window(self, z):
        return self._decode(np.ascontiguousarray(z, dtype=np.float32)).reshape(-1)

    def decode_chunks(self, z: np.ndarray):
        """The waveform window by window (what a streaming caller plays as it arrives)."""
        frames, c, k = z.shape[-1], self.chunk_frames, self.context_frames
        padded = np.pad(z, ((0, 0), (0, 0), (k, k + c)))
        for start in range(0, frames, c):
            audio = self.decode_window(padded[..., start:start + self.window])
            hop = audio.size // self.window
            keep = min(c, frames - start)
            yield audio[k * hop:(k + keep) * hop]

    def synth(self, batch, seed=0, scales=SCALES):
        return [np.concatenate(list(self.decode_chunks(self.latent(ids, scales=scales)))) for ids in batch]


_TORCH_LOCK = threading.Lock()


class PiperTorch(Engine):
    """piper's `SynthesizerTrn` (the PyTorch rebuild) on `device`, optionally under bf16 autocast; a call's `seed`
    reseeds torch before every sentence, so each is drawn as if it were the first (None: torch's own state)."""

    def __init__(self, module, threads: int = 1, device: str = "cpu", autocast_bf16: bool = False,
                 speaker_id: int | None = None, backend: str = "torch-cpu"):
        import torch  # deferred: an ONNX voice's process (its memory probe included) never loads torch
        if autocast_bf16:
            machine.require_precision(backend, "bf16")
        self.torch = torch
        self.module = module.to(device).eval()
        self.threads, self.device, self.autocast_bf16 = int(threads), device, autocast_bf16
        self.speaker_id, self.backend = speaker_id, backend
        self.precision = "bf16" if autocast_bf16 else "fp32"
        self.label, self.effective = f"{backend}-{self.precision}", f"{device}:{self.precision}"

    def synth(self, batch, seed=0, scales=SCALES):
        torch = self.torch
        with _TORCH_LOCK:
            if torch.get_num_threads() != self.threads:
                torch.set_num_threads(self.threads)
        noise_scale, length_scale, noise_w = scales
        out = []
        for ids in batch:
            if seed is not None:
                torch.manual_seed(seed)
            with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                x = torch.tensor([ids], dtype=torch.long, device=self.device)
                lengths = torch.tensor([len(ids)], dtype=torch.long, device=self.device)
                sid = (torch.tensor([self.speaker_id], dtype=torch.long, device=self.device)
                       if getattr(self.module, "n_speakers", 1) > 1 else None)
                audio = self.module.infer(x, lengths, sid=sid, noise_scale=noise_scale, length_scale=length_scale,
                                          noise_scale_w=noise_w)[0]
            out.append(audio.float().cpu().numpy().reshape(-1))
        return out


class KokoroEngine(Engine):
    """Kokoro-82M's int8 ONNX (tokens, style, speed -> waveform) as shipped in ONNX Runtime ('ort-cpu') or compiled
    by OpenVINO's CPU plugin ('openvino-cpu'); the style row is chosen by the sentence's token count."""

    def __init__(self, path: Path, style: np.ndarray, speed: float = 1.0, backend: str = "ort-cpu", threads: int = 1):
        if backend == "ort-cpu":
            session = ort_session(path, threads, seed=None)
            self._run = lambda feeds: session.run(None, feeds)[0]
            self.effective = session.get_providers()[0]
        elif backend == "openvino-cpu":
            compiled, self.effective = openvino_cpu(path, threads, None, backend)
            self._run = lambda feeds: compiled(feeds)[0]
        else:
            raise ValueError(f"voice 'kokoro-82m' runs on 'ort-cpu' or 'openvino-cpu', not {backend!r}")
        self.style, self.speed, self.backend, self.label = style, speed, backend, f"{backend}-int8"
        self.precision, self.sample_rate = "int8", 24000

    def synth(self, batch, seed=0, scales=SCALES):
        out = []
        for ids in batch:
            style = self.style[min(len(ids), len(self.style)) - 1].reshape(1, 256)
            audio = self._run({"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": style,
                               "speed": np.array([self.speed], dtype=np.float32)})
            out.append(np.asarray(audio, dtype=np.float32).reshape(-1))
        return out
