"""The benchmark's engines over the explicit-noise exports: the PyTorch voice (torch.compile, CUDA graphs) and the
noise-as-input ONNX files on ONNX Runtime or OpenVINO, behind the one Engine interface of lib.voices.engine; each
refuses to run on another back-end or precision than it says (BackendMismatch)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core import machine, onnx_session
from lib.core.audio import DEFAULT_SAMPLE_RATE
from lib.runtimes.backends import BackendMismatch, ORT_PROVIDERS, ort_effective_provider
from lib.runtimes.engine_spec import EngineSpec
from lib.techniques.export import frames_budget, latent_with_noise, make_noise, pad_batch, StaticSplines
from lib.voices.piper_torch import hop_length
from lib.voices.engine import Engine
from lib.voices.scales import SCALES

__all__ = ["Engine", "TorchEngine", "OnnxEngine", "latent_windows", "windows"]


class TorchEngine(Engine):
    """The rebuilt PyTorch voice on `device` at `precision` (fp16/bf16 through autocast); optionally the decoder
    compiled with torch.compile, and on CUDA the fixed-shape window decoder replayed from a captured CUDA graph."""

    def __init__(self, model, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 compile_decoder: bool = False, cuda_graphs: bool = False, window: int = 96,
                 device_noise: bool | None = None, graph_latent: bool = False, bucket: int = 32):
        import torch
        self.device_noise = device != "cpu" if device_noise is None else device_noise
        self.torch = torch
        self.model = model.to(device).eval()
        self.device, self.precision = device, precision
        self.dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        if threads and device == "cpu":
            torch.set_num_threads(int(threads))
        self.backend = f"torch-{device}"
        self.hop, self.channels = hop_length(model), model.hparams["inter_channels"]
        self.sample_rate = getattr(model, "sample_rate", None) or self.sample_rate  # its config's rate
        self.decoder = torch.compile(model.dec, dynamic=True) if compile_decoder else model.dec
        self.label = (f"{self.backend}-{precision}" + ("-compile" if compile_decoder else "")
                      + ("-graphs" if cuda_graphs else "") + ("-latent-graphs" if graph_latent else ""))
        self.window, self.bucket = window, bucket
        self._graph, self._latent_graphs = None, ({} if graph_latent else None)
        if (cuda_graphs or graph_latent) and device != "cuda":
            raise BackendMismatch("CUDA graphs need device 'cuda'")
        if cuda_graphs:
            self._capture(window)
        probe_out = self.synth([[1, 2, 3, 4, 5]])
        self.effective = f"{self._out_device}:{self._out_dtype}"
        want = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
        if self._out_device != device or (precision != "fp32" and self._dec_dtype != want):
            raise BackendMismatch(f"{self.label}: asked for {device}/{want}, "
                                  f"decoder ran on {self._out_device}/{self._dec_dtype}")
        del probe_out

    def _autocast(self):
        return self.torch.autocast(self.device, dtype=self.dtype, enabled=self.precision != "fp32")

    def _noise(self, batch, seed: int, host: bool = False):
        """Host noise (numpy, the same on every back-end) or device noise (torch.randn on the device from a seeded
        generator: what a server does, without drawing megabytes on the CPU for every batch)."""
        torch = self.torch
        if host or not self.device_noise:
            return [torch.from_numpy(a).to(self.device) for a in make_noise(batch, self.channels, seed)]
        g = torch.Generator(device=self.device).manual_seed(int(seed))
        t = max(len(ids) for ids in batch)
        return (torch.randn(len(batch), 2, t, generator=g, device=self.device),
                torch.randn(len(batch), self.channels, frames_budget(t), generator=g, device=self.device))

    @property
    def _pads_to_buckets(self) -> bool:
        """Whether its latents are bucket-padded (CUDA graphs of the latent): only then must a sentence's timing not
        depend on padding, which costs fp32 durations (latent_with_noise)."""
        return self._latent_graphs is not None

    def synth(self, batch, seed: int = 0, scales=SCALES, host_noise: bool = False):
        torch = self.torch
        x, lengths = pad_batch(batch)
        dp_noise, z_noise = self._noise(batch, seed, host_noise)
        with torch.inference_mode(), self._autocast():
            dev = self.device
            z, y_lengths = latent_with_noise(self.model, torch.from_numpy(x).to(dev), torch.from_numpy(lengths).to(dev),
                                             scales, dp_noise, z_noise, fp32_durations=self._pads_to_buckets)
            audio = self.decoder(z)
        self._out_device, self._dec_dtype = audio.device.type, str(audio.dtype).replace("torch.", "")
        self._out_dtype = self._dec_dtype
        audio = audio.float().cpu().numpy()[:, 0]
        return [audio[i, :int(n) * self.hop] for i, n in enumerate(y_lengths.cpu().numpy())]

    def latent(self, ids, seed: int = 0, host_noise: bool = False):
        if self._latent_graphs is not None:
            z = self._graphed_latent(ids, seed, host_noise)
            if z is not None:
                return z
        torch = self.torch
        x, lengths = pad_batch([ids])
        dp_noise, z_noise = self._noise([ids], seed, host_noise)
        with torch.inference_mode(), self._autocast():
            dev = self.device
            z, _ = latent_with_noise(self.model, torch.from_numpy(x).to(dev), torch.from_numpy(lengths).to(dev), SCALES,
                                     dp_noise, z_noise, fp32_durations=self._pads_to_buckets)
        return z

    def _capture_latent(self, t_bucket: int):
        """A CUDA graph of the whole latent (text encoder, durations, flow) for phoneme sequences padded to
        `t_bucket`, with `frames_budget(t_bucket)` frames: static shapes, captured once per bucket."""
        torch = self.torch
        frames = frames_budget(t_bucket)
        bufs = {"x": torch.zeros(1, t_bucket, dtype=torch.long, device="cuda"),
                "n": torch.full((1,), t_bucket, dtype=torch.long, device="cuda"),
                "dp": torch.zeros(1, 2, t_bucket, device="cuda"),
                "z": torch.zeros(1, self.channels, frames, device="cuda")}
        autocast = lambda: torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32",
                                          cache_enabled=False)
        run = lambda: latent_with_noise(self.model, bufs["x"], bufs["n"], SCALES, bufs["dp"], bufs["z"],
                                        frames=frames)
        with StaticSplines():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode(), autocast():
                for _ in range(2):
                    run()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph), autocast():
                out = run()
        return bufs, out, graph

    def _graphed_latent(self, ids, seed: int, host_noise: bool):
        """The latent by graph replay, with exactly the eager path's noise; None (eager fallback) if the
        durations overrun the frames the graph was captured for."""
        torch = self.torch
        t = len(ids)
        tb = -(-t // self.bucket) * self.bucket
        if tb not in self._latent_graphs:
            self._latent_graphs[tb] = self._capture_latent(tb)
        bufs, (z, y_lengths), graph = self._latent_graphs[tb]
        dp, zn = self._noise([ids], seed, host_noise)
        with torch.inference_mode():
            bufs["x"].zero_()
            bufs["x"][0, :t] = torch.as_tensor(ids, dtype=torch.long).to("cuda", non_blocking=True)
            bufs["n"].fill_(t)
            bufs["dp"].zero_()
            bufs["dp"][:, :, :t] = dp
            bufs["z"].zero_()
            bufs["z"][:, :, :zn.shape[2]] = zn
            graph.replay()
            y = int(y_lengths[0])
        return z[:, :, :y].clone() if y <= zn.shape[2] else None

    def _capture(self, window: int):
        torch = self.torch
        self._static_in = torch.zeros(1, self.channels, window, device="cuda")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        autocast = lambda: torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32",
                                          cache_enabled=False)
        with torch.cuda.stream(stream), torch.inference_mode(), autocast():
            for _ in range(3):
                self.model.dec(self._static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self._graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self._graph), autocast():
            self._static_out = self.model.dec(self._static_in)

    def decode_window(self, z):
        torch = self.torch
        if not isinstance(z, torch.Tensor):
            z = torch.from_numpy(np.ascontiguousarray(z)).to(self.device)
        if self._graph is not None and z.shape[-1] == self._static_in.shape[-1]:
            self._static_in.copy_(z)
            self._graph.replay()
            return self._static_out.float().cpu().numpy().reshape(-1)
        with torch.inference_mode(), self._autocast():
            return self.decoder(z).float().cpu().numpy().reshape(-1)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()


def _ort_session(path: Path, provider: str, threads: int):
    """A session on `provider` (lib.core.onnx_session); a BackendMismatch where ONNX Runtime fell back to another."""
    sess = onnx_session.session(path, threads, (provider,))
    if ort_effective_provider(sess) != provider:
        raise BackendMismatch(f"asked ONNX Runtime for {provider}, the session runs on {sess.get_providers()}")
    return sess


class OnnxEngine(Engine):
    """The explicit-noise ONNX files in ONNX Runtime (`backend` ort-*) or OpenVINO (openvino-cpu/npu), as `spec`
    says (its label is the engine's); refuses to construct when the runtime would run the graph elsewhere than asked."""

    def __init__(self, paths: dict[str, Path], backend: str = "ort-cpu", precision: str = "fp32", threads: int = 1,
                 channels: int = 192, hop: int = 256, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 decoder_precision: str | None = None):
        self.backend, self.precision, self.threads = backend, precision, threads
        self.channels, self.hop, self.sample_rate = channels, hop, sample_rate
        self.spec = EngineSpec(backend, precision, decoder_precision or None)
        self.label = self.spec.label
        if backend.startswith("ort-"):
            provider = ORT_PROVIDERS[backend]
            self.device = {"ort-cpu": "cpu", "ort-qnn": "npu"}.get(backend, "cuda")
            self._voice = _ort_session(paths["voice"], provider, threads)
            self._latent = _ort_session(paths["latent"], provider, threads)
            self._decoder = _ort_session(paths["decoder"], provider, threads)
            self.effective = f"{ort_effective_provider(self._voice)}:fp32"
            run = lambda s, feeds: s.run(None, feeds)
            self._run_voice = lambda f: run(self._voice, f)
            self._run_latent = lambda f: run(self._latent, f)
            self._run_decoder = lambda z: run(self._decoder, {"z": z})[0]
            if decoder_precision:
                self._run_decoder = self._openvino_window_decoder(paths["decoder"], decoder_precision, threads)
        elif backend.startswith("openvino-"):
            device = backend.split("-")[1].upper()
            self.device = device.lower()
            compiled = {k: onnx_session.openvino(paths[k], device, precision, threads, what=f"{k} model")
                        for k in ("voice", "latent", "decoder")}
            got = {k: (list(c.get_property("EXECUTION_DEVICES")), onnx_session.ov_precision(c))
                   for k, c in compiled.items()}
            for k, (devices, prec) in got.items():
                if not any(d.startswith(device) for d in devices) or prec.lower() != precision.lower():
                    raise BackendMismatch(f"{self.label}: OpenVINO compiled {k} for {devices} at {prec}")
            self.effective = f"{got['voice'][0][0]}:{got['voice'][1]}"
            reqs = {k: c.create_infer_request() for k, c in compiled.items()}
            self._run_voice = lambda f: list(reqs["voice"].infer(f).values())
            self._run_latent = lambda f: list(reqs["latent"].infer(f).values())
            self._run_decoder = onnx_session.ov_runner(compiled["decoder"])
        else:
            raise ValueError(f"OnnxEngine runs ort-* and openvino-* back-ends, not {backend!r}")

    def _openvino_window_decoder(self, path: Path, precision: str, threads: int):
        """The static-window decoder compiled once by OpenVINO's CPU plugin at `precision` (bf16 runs on AMX)."""
        machine.require_precision("openvino-cpu", precision)
        compiled = onnx_session.openvino(path, "CPU", precision, threads, what="window decoder")
        got = onnx_session.ov_precision(compiled)
        if got != precision:
            raise BackendMismatch(f"asked OpenVINO for a {precision} decoder, it compiled {got}")
        self.effective += f"; window decoder CPU:{got}"
        run = onnx_session.ov_runner(compiled)
        return lambda z: run({0: z})

    def _feeds(self, batch, seed, scales=SCALES):
        x, lengths = pad_batch(batch)
        dp_noise, z_noise = make_noise(batch, self.channels, seed)
        return {"input": x, "input_lengths": lengths, "scales": np.array(scales, dtype=np.float32),
                "dp_noise": dp_noise, "z_noise": z_noise}

    def synth(self, batch, seed: int = 0, scales=SCALES):
        audio, y_lengths = self._run_voice(self._feeds(batch, seed, scales))
        audio = np.asarray(audio)[:, 0]
        return [audio[i, :int(n) * self.hop] for i, n in enumerate(np.asarray(y_lengths))]

    def latent(self, ids, seed: int = 0):
        return np.asarray(self._run_latent(self._feeds([ids], seed))[0])

    def decode_window(self, z):
        return np.asarray(self._run_decoder(np.ascontiguousarray(z, dtype=np.float32))).reshape(-1)


def latent_windows(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int, context_frames: int) -> list:
    """The decoder's real inputs: every fixed-size latent window of `queries` (for calibration and checks)."""
    k, c = context_frames, chunk_frames
    out = []
    for i, ids in enumerate(queries):
        z = np.asarray(engine.latent(ids, seed=i), dtype=np.float32)
        padded = np.pad(z, ((0, 0), (0, 0), (k, k + c)))
        out += [padded[..., s:s + c + 2 * k] for s, _ in windows(z.shape[-1], c, k)]
    return out


def windows(frames: int, chunk_frames: int, context_frames: int):
    """(start, keep) of each fixed-size decoder window over a latent of `frames` frames."""
    return [(s, min(chunk_frames, frames - s)) for s in range(0, frames, chunk_frames)]
