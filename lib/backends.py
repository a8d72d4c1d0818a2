"""Back-ends and the scenarios that measure them: which runtimes and accelerators can run the voice here (probed
with a real call), explicit-noise export, single-stream latency, offline throughput by batch size, streaming
time to first audio, utilisation and energy. A number is only recorded under the label it really ran on."""
from __future__ import annotations

import importlib.metadata as md
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from . import machine
from .bench import Timing

RUNNABLE, PREPARE_ONLY, UNAVAILABLE = "runnable", "prepare-only", "unavailable"


class BackendMismatch(RuntimeError):
    """A runtime ran on something other than the back-end or precision it was asked for."""


@dataclass
class Probe:
    backend: str
    precision: str
    device: str
    status: str
    reason: str = ""
    effective: str = ""
    versions: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.backend}-{self.precision}"


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _tiny_conv_onnx() -> bytes:
    """A one-Conv ONNX model: the cheapest real call a runtime can be probed with."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4, 3)).astype(np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1])
    graph = helper.make_graph([node], "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 16])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# --- probes: one cheap real call each ------------------------------------------------------------------------

def _probe_torch(device: str, precision: str) -> Probe:
    versions = {"torch": _version("torch")}
    try:
        import torch
    except ImportError as exc:
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE, f"torch not importable: {exc}", versions=versions)
    if device == "cuda" and not torch.cuda.is_available():
        return Probe("torch-cuda", precision, device, UNAVAILABLE,
                     f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})", versions=versions)
    if device == "cpu":
        try:
            machine.require_precision("torch-cpu", precision)
        except machine.PrecisionUnavailable as exc:
            return Probe("torch-cpu", precision, device, UNAVAILABLE, str(exc), versions=versions)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    try:
        conv = torch.nn.Conv1d(4, 4, 3, padding=1).to(device)
        with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=precision != "fp32"):
            y = conv(torch.randn(1, 4, 16, device=device))
        effective = f"{y.device.type}:{str(y.dtype).replace('torch.', '')}"
    except Exception as exc:
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE, f"{type(exc).__name__}: {exc}", versions=versions)
    want = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    if effective != f"{device}:{want}":
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE, f"asked for {device}:{want}, ran as {effective}",
                     effective, versions)
    if device == "cuda":
        versions["gpu"] = torch.cuda.get_device_name(0)
    return Probe(f"torch-{device}", precision, device, RUNNABLE, "", effective, versions)


ORT_PROVIDERS = {"ort-cpu": "CPUExecutionProvider", "ort-cuda": "CUDAExecutionProvider",
                 "ort-tensorrt": "TensorrtExecutionProvider", "ort-qnn": "QNNExecutionProvider",
                 "ort-openvino": "OpenVINOExecutionProvider"}


def ort_effective_provider(session) -> str:
    return session.get_providers()[0]


def _probe_ort(backend: str, precision: str, device: str) -> Probe:
    provider = ORT_PROVIDERS[backend]
    versions = {d: _version(d) for d in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-qnn", "onnxruntime-openvino")}
    versions = {k: v for k, v in versions.items() if v}
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Probe(backend, precision, device, UNAVAILABLE, f"onnxruntime not importable: {exc}", versions=versions)
    available = ort.get_available_providers()
    if provider not in available:
        hint = {"ort-qnn": "; its Linux x86_64 wheel (onnxruntime-qnn) can only AOT-compile QNN contexts: "
                           "prepare the static-shape QDQ decoder here, run it on a Snapdragon device"}.get(backend, "")
        return Probe(backend, precision, device, UNAVAILABLE if backend != "ort-qnn" else PREPARE_ONLY,
                     f"{provider} is not in this onnxruntime build's providers {available}{hint}", versions=versions)
    try:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(_tiny_conv_onnx(), sess_options=opts,
                                    providers=list(dict.fromkeys([provider, "CPUExecutionProvider"])))
        sess.run(None, {"x": np.zeros((1, 4, 16), np.float32)})
        effective = ort_effective_provider(sess)
    except Exception as exc:
        return Probe(backend, precision, device, UNAVAILABLE, f"{provider} listed but failed: {type(exc).__name__}: {exc}",
                     versions=versions)
    if effective != provider:
        return Probe(backend, precision, device, UNAVAILABLE,
                     f"{provider} is listed but the session fell back to {effective} (the provider's libraries did not load)",
                     effective, versions)
    return Probe(backend, precision, device, RUNNABLE, "", effective, versions)


def ov_precision(value) -> str:
    """OpenVINO's element type as its short name ('f32', 'bf16', 'f16')."""
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value).lower()


def _probe_openvino(device: str, precision: str) -> Probe:
    backend = f"openvino-{device.lower()}"
    versions = {"openvino": _version("openvino")}
    try:
        import openvino as ov
    except ImportError as exc:
        return Probe(backend, precision, device.lower(), UNAVAILABLE, f"openvino not importable: {exc}", versions=versions)
    core = ov.Core()
    if device not in core.available_devices:
        reason = f"OpenVINO {ov.__version__} sees devices {core.available_devices}, no {device}"
        try:
            core.query_model(core.read_model(_tiny_conv_onnx(), b""), device)
        except Exception as exc:
            first = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
            reason += f"; compiling for it offline fails: {(first[0] if first else str(exc))[:200]}"
        status = PREPARE_ONLY if device == "NPU" else UNAVAILABLE
        if status == PREPARE_ONLY:
            reason += ". Prepared here instead: the static-shape decoder ONNX and its op-coverage check"
        return Probe(backend, precision, device.lower(), status, reason, versions=versions)
    try:
        compiled = core.compile_model(core.read_model(_tiny_conv_onnx(), b""), device,
                                      {"INFERENCE_PRECISION_HINT": precision})
        effective = (f"{','.join(compiled.get_property('EXECUTION_DEVICES'))}:"
                     f"{ov_precision(compiled.get_property('INFERENCE_PRECISION_HINT'))}")
    except Exception as exc:
        return Probe(backend, precision, device.lower(), UNAVAILABLE, f"{type(exc).__name__}: {str(exc)[:300]}",
                     versions=versions)
    if effective.split(":")[1] != precision:
        return Probe(backend, precision, device.lower(), UNAVAILABLE, f"asked for {precision}, plugin chose {effective}",
                     effective, versions)
    return Probe(backend, precision, device.lower(), RUNNABLE, "", effective, versions)


def _probe_import(backend: str, precision: str, device: str, module: str, dist: str, why: str) -> Probe:
    try:
        __import__(module)
    except Exception as exc:
        return Probe(backend, precision, device, UNAVAILABLE, f"{dist} is not installed ({type(exc).__name__}); {why}",
                     versions={dist: _version(dist)})
    return Probe(backend, precision, device, PREPARE_ONLY, f"{dist} imports, but no {device} device is attached; {why}",
                 versions={dist: _version(dist)})


REGISTRY: list[tuple[str, str]] = [
    ("torch-cpu", "fp32"), ("torch-cpu", "bf16"), ("ort-cpu", "fp32"), ("openvino-cpu", "f32"), ("openvino-cpu", "bf16"),
    ("torch-cuda", "fp32"), ("torch-cuda", "fp16"), ("torch-cuda", "bf16"), ("ort-cuda", "fp32"), ("ort-tensorrt", "fp16"),
    ("openvino-npu", "f16"), ("ort-qnn", "int8"), ("litert-cpu", "fp32"), ("litert-npu", "int8"), ("executorch", "fp32"),
    ("aws-neuron", "bf16"),
]


def probe(backend: str, precision: str) -> Probe:
    """Status of one back-end at one precision on this machine, from a real call where one is possible."""
    if backend in ("torch-cpu", "torch-cuda"):
        return _probe_torch(backend.split("-")[1], precision)
    if backend in ORT_PROVIDERS:
        return _probe_ort(backend, precision, {"ort-cpu": "cpu", "ort-qnn": "npu"}.get(backend, "cuda"))
    if backend.startswith("openvino-"):
        return _probe_openvino(backend.split("-")[1].upper(), precision)
    if backend.startswith("litert"):
        return _probe_import(backend, precision, backend.split("-")[1], "ai_edge_litert", "ai-edge-litert",
                             "a LiteRT model needs a PyTorch-to-TFLite converter (ai-edge-torch), which pins its own "
                             "torch and TensorFlow builds")
    if backend == "executorch":
        return _probe_import(backend, precision, "cpu", "executorch", "executorch",
                             "ExecuTorch wheels pin a torch release other than this project's")
    if backend == "aws-neuron":
        return _probe_import(backend, precision, "neuron", "torch_neuronx", "torch-neuronx",
                             "needs an AWS Inferentia/Trainium instance and its SDK")
    raise ValueError(f"unknown back-end {backend!r}: known: {sorted({b for b, _ in REGISTRY})}")


def probe_all(registry: Sequence[tuple[str, str]] = tuple(REGISTRY)) -> list[Probe]:
    return [probe(b, p) for b, p in registry]


# --- inference with the sampling noise as an explicit input --------------------------------------------------

def frames_budget(n_phonemes: int) -> int:
    """Upper bound on output frames for a phoneme sequence (about 7 are typical; 20 leaves room for slow speech)."""
    return 20 * int(n_phonemes) + 100


def make_noise(batch: Sequence[Sequence[int]], channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Duration-predictor noise [B, 2, T] and prior noise [B, C, F], the two draws VITS makes at inference. Item i
    draws from its own generator (seed, i), so the rest of a batch never changes an item's noise."""
    t = max(len(ids) for ids in batch)
    dp = np.zeros((len(batch), 2, t), dtype=np.float32)
    zn = np.zeros((len(batch), channels, frames_budget(t)), dtype=np.float32)
    for i, ids in enumerate(batch):
        rng = np.random.default_rng((int(seed), i))
        dp[i, :, :len(ids)] = rng.standard_normal((2, len(ids)), dtype=np.float32)
        zn[i, :, :frames_budget(len(ids))] = rng.standard_normal((channels, frames_budget(len(ids))), dtype=np.float32)
    return dp, zn


def pad_batch(batch: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(ids) for ids in batch], dtype=np.int64)
    x = np.zeros((len(batch), int(lengths.max())), dtype=np.int64)
    for i, ids in enumerate(batch):
        x[i, :len(ids)] = ids
    return x, lengths


def latent_with_noise(model, x, x_lengths, scales, dp_noise, z_noise, frames: int | None = None):
    """SynthesizerTrn.infer up to the flow's output, with the two random draws passed in: same noise, same audio
    on every back-end. Piper's code draws inside; this repeats its reverse path with the draws as arguments.
    With `frames` set, every shape is static (the latent is `frames` long, masked after y_lengths), which is what
    a CUDA graph can capture; the caller checks that y_lengths fit."""
    import torch
    from piper.train.vits import commons
    noise_scale, length_scale, noise_w = scales[0], scales[1], scales[2]
    x, m_p, logs_p, x_mask = model.enc_p(x, x_lengths)
    dp = model.dp
    h = dp.proj(dp.convs(dp.pre(x), x_mask)) * x_mask
    flows = list(reversed(dp.flows))
    z = dp_noise[:, :, :x.size(2)].to(x.dtype) * noise_w
    for flow in flows[:-2] + [flows[-1]]:
        z = flow(z, x_mask, g=h, reverse=True)
    logw = z[:, :1]
    w_ceil = torch.ceil(torch.exp(logw) * x_mask * length_scale)
    y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
    y_mask = torch.unsqueeze(commons.sequence_mask(y_lengths, frames or y_lengths.max()), 1).type_as(x_mask)
    attn = commons.generate_path(w_ceil, torch.unsqueeze(x_mask, 2) * torch.unsqueeze(y_mask, -1)).squeeze(1)
    m_p = torch.matmul(attn, m_p.transpose(1, 2)).transpose(1, 2)
    logs_p = torch.matmul(attn, logs_p.transpose(1, 2)).transpose(1, 2)
    if frames is None and m_p.size(2) > z_noise.size(2):
        raise ValueError(f"the duration predictor asked for {m_p.size(2)} frames, more than the {z_noise.size(2)} "
                         f"of noise drawn for {x.size(2)} phonemes: its durations have diverged")
    z_p = m_p + z_noise[:, :, :m_p.size(2)].to(m_p.dtype) * torch.exp(logs_p) * noise_scale
    return model.flow(z_p, y_mask, g=None, reverse=True) * y_mask, y_lengths


def spline_inverse_static(inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives, inverse=False,
                          tails="linear", tail_bound=1.0, min_bin_width=1e-3, min_bin_height=1e-3, min_derivative=1e-3):
    """The inverse rational-quadratic spline (linear tails) of the duration predictor's ConvFlow, computed for every
    element and selected with `where`. Written here because piper's version indexes by a data-dependent mask and
    asserts on the host, which a CUDA graph cannot capture; the values are the same."""
    import torch
    import torch.nn.functional as F
    if not inverse or tails != "linear":
        from piper.train.vits.transforms import piecewise_rational_quadratic_transform
        return piecewise_rational_quadratic_transform(inputs, unnormalized_widths, unnormalized_heights,
                                                      unnormalized_derivatives, inverse=inverse, tails=tails,
                                                      tail_bound=tail_bound)
    lo, hi, nb = -tail_bound, tail_bound, unnormalized_widths.shape[-1]
    inside = (inputs >= lo) & (inputs <= hi)
    x = inputs.clamp(lo, hi)
    const = float(np.log(np.exp(1 - min_derivative) - 1))
    ud = F.pad(unnormalized_derivatives, (1, 1), value=const)

    def knots(unnormalized, min_size):
        size = min_size + (1 - min_size * nb) * F.softmax(unnormalized, dim=-1)
        cum = F.pad(torch.cumsum(size, dim=-1), (1, 0)) * (hi - lo) + lo
        cum = torch.cat([torch.full_like(cum[..., :1], lo), cum[..., 1:-1], torch.full_like(cum[..., :1], hi)], -1)
        return cum, cum[..., 1:] - cum[..., :-1]

    cumw, widths = knots(unnormalized_widths, min_bin_width)
    cumh, heights = knots(unnormalized_heights, min_bin_height)
    derivs = min_derivative + F.softplus(ud)
    edges = torch.cat([cumh[..., :-1], cumh[..., -1:] + 1e-6], -1)
    idx = ((x[..., None] >= edges).sum(-1, keepdim=True) - 1).clamp(0, nb - 1)

    def pick(t):
        return t.gather(-1, idx)[..., 0]

    delta = heights / widths
    d0, d1, dl, h, y0 = pick(derivs[..., :-1]), pick(derivs[..., 1:]), pick(delta), pick(heights), pick(cumh)
    a = (x - y0) * (d0 + d1 - 2 * dl) + h * (dl - d0)
    b = h * d0 - (x - y0) * (d0 + d1 - 2 * dl)
    c = -dl * (x - y0)
    root = (2 * c) / (-b - torch.sqrt((b * b - 4 * a * c).clamp_min(0)))
    return torch.where(inside, root * pick(widths) + pick(cumw), inputs), torch.zeros_like(inputs)


class static_splines:
    """Within this block piper's ConvFlow uses `spline_inverse_static` (for CUDA-graph capture)."""

    def __enter__(self):
        from piper.train.vits import modules
        self._orig = modules.piecewise_rational_quadratic_transform
        modules.piecewise_rational_quadratic_transform = spline_inverse_static

    def __exit__(self, *exc):
        from piper.train.vits import modules
        modules.piecewise_rational_quadratic_transform = self._orig


def hop_length(model) -> int:
    return int(np.prod(model.hparams["upsample_rates"]))


def _noise_modules(model):
    import torch

    class Full(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text, text_lengths, scales, dp_noise, z_noise):
            z, y_lengths = latent_with_noise(self.m, text, text_lengths, scales, dp_noise, z_noise)
            return self.m.dec(z), y_lengths

    class Latent(Full):
        def forward(self, text, text_lengths, scales, dp_noise, z_noise):
            return latent_with_noise(self.m, text, text_lengths, scales, dp_noise, z_noise)

    return Full(model).eval(), Latent(model).eval()


def export_noise_input(model, out_dir: Path, chunk_frames: int = 64, context_frames: int = 16,
                       opset: int = 17) -> dict[str, Path]:
    """Three ONNX files with no random op inside (TensorRT and NPU compilers reject RandomNormalLike):
    `voice_noise.onnx` (text + noise -> audio, y_lengths; dynamic batch and length), `latent_noise.onnx`
    (text + noise -> z) and `decoder_<N>.onnx` (z window -> audio, one static shape, for NPUs and streaming)."""
    import warnings

    import torch
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full, latent = _noise_modules(model)
    x, lengths = pad_batch([list(range(1, 41)), list(range(1, 31))])
    dp_noise, z_noise = make_noise([list(range(40))] * 2, model.hparams["inter_channels"], 0)
    args = (torch.from_numpy(x), torch.from_numpy(lengths), torch.tensor([0.667, 1.0, 0.8]),
            torch.from_numpy(dp_noise), torch.from_numpy(z_noise))
    names = ["input", "input_lengths", "scales", "dp_noise", "z_noise"]
    axes = {"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"},
            "dp_noise": {0: "batch", 2: "phonemes"}, "z_noise": {0: "batch", 2: "noise_frames"},
            "y_lengths": {0: "batch"}}
    window = chunk_frames + 2 * context_frames
    paths = {"voice": out_dir / "voice_noise.onnx", "latent": out_dir / "latent_noise.onnx",
             "decoder": out_dir / f"decoder_{window}.onnx"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        for key, module, outs, out_axes in (
                ("voice", full, ["audio", "y_lengths"], {"audio": {0: "batch", 2: "samples"}}),
                ("latent", latent, ["z", "y_lengths"], {"z": {0: "batch", 2: "frames"}})):
            tmp = paths[key].with_suffix(".tmp.onnx")
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=outs, dynamic_axes={**axes, **out_axes})
            tmp.replace(paths[key])
        z = torch.zeros(1, model.dec.conv_pre.in_channels, window)
        tmp = paths["decoder"].with_suffix(".tmp.onnx")
        torch.onnx.export(model.dec.eval(), (z,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["z"], output_names=["audio"])
        tmp.replace(paths["decoder"])
    return paths


# --- engines: one interface over torch, ONNX Runtime and OpenVINO ----------------------------------------------

SCALES = (0.667, 1.0, 0.8)


class Engine:
    """Batch synthesis from phoneme ids with explicit noise, the latent alone, and a fixed-shape window decoder."""
    label: str = ""
    backend: str = ""
    precision: str = ""
    device: str = "cpu"
    effective: str = ""
    sample_rate: int = 22050
    hop: int = 256
    channels: int = 192

    def synth(self, batch: Sequence[Sequence[int]], seed: int = 0) -> list[np.ndarray]:
        raise NotImplementedError

    def latent(self, ids: Sequence[int], seed: int = 0) -> np.ndarray:
        raise NotImplementedError

    def decode_window(self, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def sync(self) -> None:
        pass


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
            raise BackendMismatch(f"{self.label}: asked for {device}/{want}, decoder ran on {self._out_device}/{self._dec_dtype}")
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

    def synth(self, batch, seed: int = 0, host_noise: bool = False):
        torch = self.torch
        x, lengths = pad_batch(batch)
        dp_noise, z_noise = self._noise(batch, seed, host_noise)
        with torch.inference_mode(), self._autocast():
            dev = self.device
            z, y_lengths = latent_with_noise(self.model, torch.from_numpy(x).to(dev), torch.from_numpy(lengths).to(dev),
                                             SCALES, dp_noise, z_noise)
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
                                     dp_noise, z_noise)
        return z

    def _capture_latent(self, t_bucket: int):
        """A CUDA graph of the whole latent (text encoder, durations, flow) for phoneme sequences padded to
        `t_bucket`, with `frames_budget(t_bucket)` frames: static shapes, captured once per bucket."""
        torch = self.torch
        frames = frames_budget(t_bucket)
        bufs = {"x": torch.zeros(1, t_bucket, dtype=torch.long, device="cuda"),
                "n": torch.full((1,), t_bucket, dtype=torch.long, device="cuda"),
                "dp": torch.zeros(1, 2, t_bucket, device="cuda"), "z": torch.zeros(1, self.channels, frames, device="cuda")}
        autocast = lambda: torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32", cache_enabled=False)  # noqa: E731
        run = lambda: latent_with_noise(self.model, bufs["x"], bufs["n"], SCALES, bufs["dp"], bufs["z"], frames=frames)  # noqa: E731
        with static_splines():
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
        autocast = lambda: torch.autocast("cuda", dtype=self.dtype, enabled=self.precision != "fp32", cache_enabled=False)  # noqa: E731
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
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = [provider] + (["CPUExecutionProvider"] if provider != "CPUExecutionProvider" else [])
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    if ort_effective_provider(sess) != provider:
        raise BackendMismatch(f"asked ONNX Runtime for {provider}, the session runs on {sess.get_providers()}")
    return sess


class OnnxEngine(Engine):
    """The explicit-noise ONNX files in ONNX Runtime (`backend` ort-*) or OpenVINO (openvino-cpu/npu); refuses
    to construct when the runtime would run the graph elsewhere than asked."""

    def __init__(self, paths: dict[str, Path], backend: str = "ort-cpu", precision: str = "fp32", threads: int = 1,
                 channels: int = 192, hop: int = 256, sample_rate: int = 22050, decoder_precision: str | None = None):
        self.backend, self.precision, self.threads = backend, precision, threads
        self.channels, self.hop, self.sample_rate = channels, hop, sample_rate
        self.label = f"{backend}-{precision}"
        if backend.startswith("ort-"):
            provider = ORT_PROVIDERS[backend]
            self.device = {"ort-cpu": "cpu", "ort-qnn": "npu"}.get(backend, "cuda")
            self._voice = _ort_session(paths["voice"], provider, threads)
            self._latent = _ort_session(paths["latent"], provider, threads)
            self._decoder = _ort_session(paths["decoder"], provider, threads)
            self.effective = f"{ort_effective_provider(self._voice)}:fp32"
            run = lambda s, feeds: s.run(None, feeds)  # noqa: E731
            self._run_voice = lambda f: run(self._voice, f)
            self._run_latent = lambda f: run(self._latent, f)
            self._run_decoder = lambda z: run(self._decoder, {"z": z})[0]
            if decoder_precision:
                self._run_decoder = self._openvino_window_decoder(paths["decoder"], decoder_precision, threads)
                self.label += f"+openvino-{decoder_precision}-window"
        elif backend.startswith("openvino-"):
            import openvino as ov
            device = backend.split("-")[1].upper()
            self.device = device.lower()
            core = ov.Core()
            cfg = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": int(threads)}
            compiled = {k: core.compile_model(str(paths[k]), device, cfg) for k in ("voice", "latent", "decoder")}
            got = {k: (list(c.get_property("EXECUTION_DEVICES")), ov_precision(c.get_property("INFERENCE_PRECISION_HINT")))
                   for k, c in compiled.items()}
            for k, (devices, prec) in got.items():
                if not any(d.startswith(device) for d in devices) or prec.lower() != precision.lower():
                    raise BackendMismatch(f"{self.label}: OpenVINO compiled {k} for {devices} at {prec}")
            self.effective = f"{got['voice'][0][0]}:{got['voice'][1]}"
            reqs = {k: c.create_infer_request() for k, c in compiled.items()}
            self._run_voice = lambda f: list(reqs["voice"].infer(f).values())
            self._run_latent = lambda f: list(reqs["latent"].infer(f).values())
            self._run_decoder = lambda z: np.asarray(next(iter(reqs["decoder"].infer({0: z}).values())))
        else:
            raise ValueError(f"OnnxEngine runs ort-* and openvino-* back-ends, not {backend!r}")

    def _openvino_window_decoder(self, path: Path, precision: str, threads: int):
        """The static-window decoder compiled once by OpenVINO's CPU plugin at `precision` (bf16 runs on AMX)."""
        import openvino as ov
        machine.require_precision("openvino-cpu", precision)
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision,
                                                              "INFERENCE_NUM_THREADS": int(threads)})
        got = ov_precision(compiled.get_property("INFERENCE_PRECISION_HINT"))
        if got != precision:
            raise BackendMismatch(f"asked OpenVINO for a {precision} decoder, it compiled {got}")
        self.effective += f"; window decoder CPU:{got}"
        request = compiled.create_infer_request()
        return lambda z: np.asarray(next(iter(request.infer({0: z}).values())))

    def _feeds(self, batch, seed):
        x, lengths = pad_batch(batch)
        dp_noise, z_noise = make_noise(batch, self.channels, seed)
        return {"input": x, "input_lengths": lengths, "scales": np.array(SCALES, dtype=np.float32),
                "dp_noise": dp_noise, "z_noise": z_noise}

    def synth(self, batch, seed: int = 0):
        audio, y_lengths = self._run_voice(self._feeds(batch, seed))
        audio = np.asarray(audio)[:, 0]
        return [audio[i, :int(n) * self.hop] for i, n in enumerate(np.asarray(y_lengths))]

    def latent(self, ids, seed: int = 0):
        return np.asarray(self._run_latent(self._feeds([ids], seed))[0])

    def decode_window(self, z):
        return np.asarray(self._run_decoder(np.ascontiguousarray(z, dtype=np.float32))).reshape(-1)


# --- scenarios -----------------------------------------------------------------------------------------------

def single_stream(engine: Engine, queries: Sequence[Sequence[int]], min_queries: int = 100, min_seconds: float = 10.0,
                  max_seconds: float = 120.0, warmup: int = 3, progress: bool = False) -> Timing:
    """MLPerf single-stream: one query at a time until at least `min_queries` and `min_seconds` (capped at
    `max_seconds`); latency per query and the audio it produced."""
    from tqdm.auto import tqdm
    for ids in list(queries)[:warmup]:
        engine.synth([ids])
    lat, aud = [], []
    start = time.perf_counter()
    bar = tqdm(desc=f"single-stream {engine.label}", disable=not progress, leave=False)
    i = 0
    while (len(lat) < min_queries or time.perf_counter() - start < min_seconds) and time.perf_counter() - start < max_seconds:
        ids = queries[i % len(queries)]
        t0 = time.perf_counter()
        out = engine.synth([ids], seed=i)
        engine.sync()
        lat.append(time.perf_counter() - t0)
        aud.append(out[0].size / engine.sample_rate)
        i += 1
        bar.update()
    bar.close()
    return Timing(np.array(lat), np.array(aud))


def offline_throughput(engine: Engine, queries: Sequence[Sequence[int]], batch_sizes: Sequence[int],
                       min_seconds: float = 2.0, min_batches: int = 2, on_result: Callable | None = None) -> list[dict]:
    """MLPerf offline: audio seconds per wall second when queries are sent `b` at a time (sorted by length so a
    batch pads little). Stops growing the batch at the first out-of-memory error."""
    order = sorted(queries, key=len)
    rows = []
    for b in batch_sizes:
        try:
            batches = [order[i:i + b] for i in range(0, len(order), b)] or [order]
            batches = [bt for bt in batches if len(bt) == b] or batches[:1]
            engine.synth(batches[0])
            engine.sync()
            audio_s = wall = 0.0
            n = 0
            while wall < min_seconds or n < min_batches:
                bt = batches[n % len(batches)]
                t0 = time.perf_counter()
                out = engine.synth(bt, seed=n)
                engine.sync()
                wall += time.perf_counter() - t0
                audio_s += sum(a.size for a in out) / engine.sample_rate
                n += 1
        except (RuntimeError, MemoryError) as exc:
            if "out of memory" in str(exc).lower() or isinstance(exc, MemoryError):
                rows.append({"batch": b, "status": "failed", "reason": f"out of memory at batch {b}"})
                break
            raise
        row = {"batch": b, "batches": n, "audio_s": audio_s, "wall_s": wall, "throughput_xrt": audio_s / wall,
               "status": "ok", "reason": ""}
        rows.append(row)
        if on_result:
            on_result(row)
    return rows


def windows(frames: int, chunk_frames: int, context_frames: int):
    """(start, keep) of each fixed-size decoder window over a latent of `frames` frames."""
    return [(s, min(chunk_frames, frames - s)) for s in range(0, frames, chunk_frames)]


def stream(engine: Engine, ids: Sequence[int], chunk_frames: int, context_frames: int, seed: int = 0):
    """Yield (seconds since the call, audio chunk): latent first (the flow sees the whole sentence), then the
    decoder over fixed windows of chunk + 2 x context frames, keeping each window's centre."""
    t0 = time.perf_counter()
    z = engine.latent(ids, seed=seed)
    for _, chunk in stream_latent(engine, z, chunk_frames, context_frames):
        yield time.perf_counter() - t0, chunk


def streaming_ttfa(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int, context_frames: int,
                   min_queries: int = 100, min_seconds: float = 10.0, max_seconds: float = 120.0, warmup: int = 3) -> dict:
    """Time to first audio (p50/p90/p99) and whole-stream latency over single-stream queries."""
    for ids in list(queries)[:warmup]:
        list(stream(engine, ids, chunk_frames, context_frames))
    ttfa, total, aud = [], [], []
    start = time.perf_counter()
    i = 0
    while (len(ttfa) < min_queries or time.perf_counter() - start < min_seconds) and time.perf_counter() - start < max_seconds:
        chunks = list(stream(engine, queries[i % len(queries)], chunk_frames, context_frames, seed=i))
        engine.sync()
        ttfa.append(chunks[0][0])
        total.append(chunks[-1][0])
        aud.append(sum(c.size for _, c in chunks) / engine.sample_rate)
        i += 1
    ttfa = np.array(ttfa) * 1e3
    return {"ttfa_ms_p50": float(np.percentile(ttfa, 50)), "ttfa_ms_p90": float(np.percentile(ttfa, 90)),
            "ttfa_ms_p99": float(np.percentile(ttfa, 99)),
            "stream_rtf": float(np.median(np.array(total) / np.array(aud))), "n": len(ttfa)}


def chunk_fidelity(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int, context_frames: int) -> list[dict]:
    """Streamed (chunked) against whole-utterance synthesis with the same noise: max |diff|, SNR and, where the
    pesq package is installed, PESQ-WB per query. Chunk borders are inaudible when the two match."""
    rows = []
    for i, ids in enumerate(queries):
        whole = engine.synth([ids], seed=i)[0]
        chunked = np.concatenate([c for _, c in stream(engine, ids, chunk_frames, context_frames, seed=i)])
        n = min(whole.size, chunked.size)
        diff = whole[:n] - chunked[:n]
        snr = 10 * np.log10(np.sum(whole[:n] ** 2) / max(np.sum(diff ** 2), 1e-20))
        row = {"query": i, "max_abs_diff": float(np.max(np.abs(diff))), "snr_db": float(snr),
               "length_diff_samples": int(whole.size - chunked.size)}
        try:
            from .metrics import pesq_wb
            row["pesq_wb"] = pesq_wb(whole[:n], chunked[:n], engine.sample_rate)
        except ImportError:
            pass
        rows.append(row)
    return rows


def stream_latent(engine: Engine, z, chunk_frames: int, context_frames: int):
    """The windowed decoding of `stream` for a latent already computed."""
    k, c = context_frames, chunk_frames
    if hasattr(z, "new_zeros"):
        import torch
        padded = torch.nn.functional.pad(z.float(), (k, k + c))
    else:
        padded = np.pad(np.asarray(z, dtype=np.float32), ((0, 0), (0, 0), (k, k + c)))
    for start, keep in windows(z.shape[-1], c, k):
        audio = engine.decode_window(padded[..., start:start + c + 2 * k])
        hop = audio.size // (c + 2 * k)
        yield start, audio[k * hop:(k + keep) * hop]


# --- utilisation and energy ----------------------------------------------------------------------------------

def rapl_status() -> tuple[bool, str]:
    path = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
    if not path.exists():
        return False, "no RAPL counters (/sys/class/powercap/intel-rapl:0 does not exist on this machine)"
    try:
        int(path.read_text())
    except (OSError, ValueError) as exc:
        return False, f"RAPL counter not readable: {exc}"
    return True, ""


def nvml_status() -> tuple[bool, str]:
    try:
        import pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return True, ""
    except ImportError:
        return False, "nvidia-ml-py (pynvml) is not installed"
    except Exception as exc:
        return False, f"NVML unavailable: {type(exc).__name__}: {exc}"


class Monitor:
    """Samples CPU utilisation (psutil) and, where NVML answers, GPU utilisation and memory every `interval_s`;
    reads the energy counters (NVML total energy, RAPL package energy) at entry and exit. Counters only: no
    estimate is ever mixed in."""

    def __init__(self, interval_s: float = 0.05):
        import psutil
        self.psutil = psutil
        self.interval_s = interval_s
        self.cpu, self.gpu, self.gpu_mem = [], [], []
        self.nvml_ok, self.nvml_reason = nvml_status()
        self.rapl_ok, self.rapl_reason = rapl_status()
        self._stop = threading.Event()

    def _energy(self) -> dict:
        out = {}
        if self.nvml_ok:
            import pynvml
            out["gpu_mj"] = pynvml.nvmlDeviceGetTotalEnergyConsumption(pynvml.nvmlDeviceGetHandleByIndex(0))
        if self.rapl_ok:
            out["cpu_uj"] = int(Path("/sys/class/powercap/intel-rapl:0/energy_uj").read_text())
        return out

    def _loop(self):
        handle = None
        if self.nvml_ok:
            import pynvml
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.psutil.cpu_percent(None)
        while not self._stop.wait(self.interval_s):
            self.cpu.append(self.psutil.cpu_percent(None))
            if handle is not None:
                import pynvml
                self.gpu.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                self.gpu_mem.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)

    def __enter__(self):
        self._e0, self._t0 = self._energy(), time.perf_counter()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.seconds = time.perf_counter() - self._t0
        e1 = self._energy()
        self.gpu_j = (e1["gpu_mj"] - self._e0["gpu_mj"]) / 1e3 if "gpu_mj" in e1 else None
        self.cpu_j = (e1["cpu_uj"] - self._e0["cpu_uj"]) / 1e6 if "cpu_uj" in e1 else None

    def summary(self) -> dict:
        return {"cpu_util_pct": float(np.mean(self.cpu)) if self.cpu else None,
                "gpu_util_pct": float(np.mean(self.gpu)) if self.gpu else None,
                "gpu_mem_used_mb": float(np.max(self.gpu_mem)) if self.gpu_mem else None,
                "gpu_energy_j": self.gpu_j, "cpu_energy_j": self.cpu_j, "seconds": self.seconds}


# --- NPU readiness of an exported graph ----------------------------------------------------------------------

RANDOM_OPS = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
DYNAMIC_SHAPE_OPS = {"NonZero", "Loop", "If", "Scan", "Unique", "NonMaxSuppression"}


def npu_readiness(path: Path) -> dict:
    """What NPU and ahead-of-time compilers need of a graph, read offline: every input and output shape static,
    no random-number ops, no data-dependent control flow or output sizes; plus OpenVINO's own per-op query for
    each of its devices that answers here."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    g = model.graph

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    dynamic = {vi.name: dims(vi) for vi in list(g.input) + list(g.output) if any(not isinstance(d, int) for d in dims(vi))}
    ops = sorted({n.op_type for n in g.node})
    out = {"file": Path(path).name, "ops": ops, "n_nodes": len(g.node),
           "dynamic_io": dynamic, "random_ops": sorted(RANDOM_OPS & set(ops)),
           "data_dependent_ops": sorted(DYNAMIC_SHAPE_OPS & set(ops))}
    out["static_ready"] = not dynamic and not out["random_ops"] and not out["data_dependent_ops"]
    try:
        import openvino as ov
        core = ov.Core()
        ov_model = core.read_model(str(path))
        n_ops = len(ov_model.get_ops())
        for device in ("CPU", "NPU"):
            try:
                supported = core.query_model(ov_model, device)
                out[f"openvino_{device.lower()}_supported"] = f"{len(supported)}/{n_ops} ops"
            except Exception as exc:
                lines = [ln for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
                out[f"openvino_{device.lower()}_supported"] = "query failed: " + (lines[0] if lines else str(exc))[:160]
    except ImportError:
        out["openvino_cpu_supported"] = "openvino not installed"
    return out


def quantize_window_decoder(decoder: Path, dst: Path, windows_z: Sequence[np.ndarray]) -> Path:
    """Static QDQ int8 (u8 activations, s8 per-channel weights) of the fixed-window decoder, calibrated on real
    latent windows: the form QNN's HTP and other int8 NPUs compile."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"z": np.ascontiguousarray(z, dtype=np.float32)} for z in windows_z)

        def get_next(self):
            return next(self.it, None)

    dst = Path(dst)
    quantize_static(str(decoder), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def latent_windows(engine: Engine, queries: Sequence[Sequence[int]], chunk_frames: int, context_frames: int) -> list:
    """The decoder's real inputs: every fixed-size latent window of `queries` (for calibration and checks)."""
    k, c = context_frames, chunk_frames
    out = []
    for i, ids in enumerate(queries):
        z = np.asarray(engine.latent(ids, seed=i), dtype=np.float32)
        padded = np.pad(z, ((0, 0), (0, 0), (k, k + c)))
        out += [padded[..., s:s + c + 2 * k] for s, _ in windows(z.shape[-1], c, k)]
    return out


def snr_db(ref: np.ndarray, test: np.ndarray) -> float:
    n = min(ref.size, test.size)
    return float(10 * np.log10(np.sum(ref[:n] ** 2) / max(np.sum((ref[:n] - test[:n]) ** 2), 1e-20)))


def probes_frame(probes: Sequence[Probe]):
    import pandas as pd
    rows = []
    for p in probes:
        row = asdict(p)
        row["versions"] = json.dumps({k: v for k, v in p.versions.items() if v})
        rows.append(row)
    return pd.DataFrame(rows, columns=["backend", "precision", "device", "status", "effective", "reason", "versions"])


# --- the whole suite for one engine, and the run on a GPU machine ---------------------------------------------

@dataclass
class SuiteConfig:
    min_queries: int = 100
    min_seconds: float = 10.0
    max_seconds: float = 60.0
    batch_sizes: tuple = (1, 2, 4, 8, 16, 32, 64)
    offline_seconds: float = 2.0
    chunk_frames: int = 64
    context_frames: int = 16
    fidelity_queries: int = 5
    energy_seconds: float = 5.0
    warmup: int = 3


def run_suite(engine: Engine, queries: Sequence[Sequence[int]], ttfa_queries: Sequence[Sequence[int]],
              cfg: SuiteConfig, writer, model: str = "piper-joe", threads: int | None = None,
              technique: str = "hardware") -> list[dict]:
    """Single-stream latency, offline throughput by batch size, streaming TTFA and chunk fidelity, utilisation,
    peak GPU memory and energy for one engine, written as result rows under the engine's own label. Energy rows
    are measured counters or absent with the reason; returns the throughput-by-batch rows."""
    keys = dict(model=model, variant=engine.label, technique=technique, backend=engine.backend, device=engine.device,
                threads=threads)
    torch_cuda = engine.device == "cuda"
    from .bench import watched
    loads = writer.scalars.setdefault("timing_load", [])

    def load_status(watch, scenario):
        loads.append({"variants": [engine.label], "scenario": scenario, **watch.load.as_dict()})
        return dict(status="contended", reason=watch.load.reason()) if watch.load.contended else {}

    with Monitor() as mon, watched(threads or 1) as watch:
        timing = single_stream(engine, queries, cfg.min_queries, cfg.min_seconds, cfg.max_seconds, cfg.warmup)
    busy = load_status(watch, "single-stream")
    summary = timing.summary()
    writer.add_many({k: summary[k] for k in ("rtf", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99")},
                    n=len(timing.latencies_s), **keys, **busy)
    writer.add(metric="throughput_xrt", value=summary["throughput_xrt"], n=len(timing.latencies_s), **keys, **busy)
    util = mon.summary()
    writer.add(metric="util_pct", value=util["cpu_util_pct"], reference="CPU, single-stream", **keys)
    if util["gpu_util_pct"] is not None:
        writer.add(metric="gpu_util_pct", value=util["gpu_util_pct"], reference="GPU, single-stream", **keys)
    with watched(threads or 1) as watch:
        rows = offline_throughput(engine, queries, cfg.batch_sizes, cfg.offline_seconds)
    busy = load_status(watch, "offline")
    ok = [r for r in rows if r["status"] == "ok"]
    best = max(ok, key=lambda r: r["throughput_xrt"])
    writer.add(metric="throughput_xrt_offline", value=best["throughput_xrt"], n=best["batches"], **keys, **busy)
    writer.add(metric="best_batch", value=best["batch"], **keys, **busy)
    with watched(threads or 1) as watch:
        ttfa = streaming_ttfa(engine, ttfa_queries, cfg.chunk_frames, cfg.context_frames, cfg.min_queries,
                              cfg.min_seconds, cfg.max_seconds, cfg.warmup)
    busy = load_status(watch, "streaming")
    writer.add_many({k: ttfa[k] for k in ("ttfa_ms_p50", "ttfa_ms_p90", "ttfa_ms_p99")}, n=ttfa["n"], **keys, **busy)
    writer.add(metric="stream_rtf", value=ttfa["stream_rtf"], n=ttfa["n"], **keys, **busy)
    fid = chunk_fidelity(engine, ttfa_queries[:cfg.fidelity_queries], cfg.chunk_frames, cfg.context_frames)
    writer.add(metric="chunk_snr_db", value=min(r["snr_db"] for r in fid), reference="worst chunk vs whole utterance", n=len(fid), **keys)
    if all("pesq_wb" in r for r in fid):
        writer.add(metric="chunk_pesq_wb", value=min(r["pesq_wb"] for r in fid), reference="worst chunk vs whole utterance", n=len(fid), **keys)
    if torch_cuda:
        import torch
        torch.cuda.reset_peak_memory_stats()
    batch = sorted(queries, key=len)[:best["batch"]]
    audio_s = 0.0
    with Monitor() as mon:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < cfg.energy_seconds:
            audio_s += sum(a.size for a in engine.synth(batch)) / engine.sample_rate
            engine.sync()
    util = mon.summary()
    if torch_cuda:
        import torch
        writer.add(metric="peak_gpu_mb", value=torch.cuda.max_memory_allocated() / 2**20, reference="at the best batch", **keys)
        if util["gpu_util_pct"] is not None:
            writer.add(metric="gpu_util_pct_offline", value=util["gpu_util_pct"], reference="GPU, best batch", **keys)
    if util["gpu_energy_j"] is not None and torch_cuda:
        writer.add(metric="energy_j_per_audio_s", value=util["gpu_energy_j"] / audio_s,
                   reference="GPU board, NVML counter, best batch", n=1, **keys)
    elif util["cpu_energy_j"] is not None and not torch_cuda:
        writer.add(metric="energy_j_per_audio_s", value=util["cpu_energy_j"] / audio_s,
                   reference="CPU package, RAPL counter, best batch", n=1, **keys)
    else:
        writer.absent(metrics=["energy_j_per_audio_s"], reason=mon.nvml_reason if torch_cuda else mon.rapl_reason, **keys)
    for r in rows:
        r.update(variant=engine.label, backend=engine.backend, device=engine.device, effective=engine.effective)
    return rows


KOKORO_GPU_ABSENT = ("Kokoro-82M ships here as int8 ONNX only (ConvInteger/MatMulInteger/DynamicQuantizeLSTM, CPU "
                     "kernels in ONNX Runtime); its PyTorch weights are on the hub, and the GPU machine's onnxruntime "
                     "is a CPU build, so no GPU run exists")


def kokoro_cpu_suite(engines: Sequence[str], texts: Sequence[str], writer, threads: int = 1,
                     fidelity: int = 3, warmup: int = 1, speaker: str = "jf_alpha") -> pd.DataFrame:
    """A second architecture on the CPU engines: Kokoro-82M's shipped int8 ONNX on each of `engines` ('ort-cpu',
    'openvino-cpu'), single stream, timed interleaved on `texts`; the first `fidelity` outputs compared with the
    first engine's (PESQ, MCD, F0 error: the same file need not give the same audio on another runtime). Time to first audio is recorded absent (the graph returns the whole waveform), and so is the
    GPU, each with its reason. Returns one row per engine."""
    import pandas as pd
    from . import bench, evaluate, metrics, text, voices
    model = "kokoro-82m"
    made = {e: voices.load_voice(model, backend=e, threads=threads, speaker=speaker) for e in engines}
    ref_engine = engines[0]
    keys = {e: dict(model=model, variant=f"{model}-{e}", technique="hardware", parent=f"{model}-{ref_engine}",
                    backend=e, threads=threads) for e in engines}
    speed = evaluate.measure_speed(made, [text.Sentence(id=str(i), text=t) for i, t in enumerate(texts)], writer,
                                   model=model, baseline=ref_engine, meta=keys, warmup=warmup).set_index("name")
    ref = [made[ref_engine].synthesize(t).samples for t in texts[:fidelity]]
    rows = []
    for e, v in made.items():
        summ = {"size_mb": bench.size_mb(v.model_path)}
        if e != ref_engine:
            outs = [v.synthesize(t).samples for t in texts[:fidelity]]
            compared = [metrics.reference_metrics(r, o, v.sample_rate) for r, o in zip(ref, outs)]
            summ.update({m: float(np.mean([c[m] for c in compared])) for m in ("pesq_wb", "mcd_db", "f0_rmse_cents")})
        writer.add_many(summ, n=min(fidelity, len(texts)), **keys[e])
        writer.absent(metrics=["ttfa_ms_p90"], reason="not streamable as shipped: the ONNX graph returns the whole "
                      "waveform, so the first audio comes with the last (see latency)", **keys[e])
        rows.append({"engine": e, **speed.loc[e, ["rtf", "rtf_ratio", "latency_ms_p50", "latency_ms_p90",
                                                  "latency_ms_p99", "throughput_xrt"]].to_dict(), **summ})
    writer.absent(model=model, variant=f"{model}-gpu", metrics=["latency_ms_p90"], technique="hardware",
                  backend="ort-cuda", device="cuda", reason=KOKORO_GPU_ABSENT)
    return pd.DataFrame(rows)


def _device_main(argv: Sequence[str] | None = None) -> int:
    """`python -m lib.backends device-run`: the GPU part of notebook 05 on a machine with no internet, from a
    voice ONNX file and pre-phonemized queries; writes results under $TTS_LAB_OUTPUTS/<profile>/05_hardware_benchmark."""
    import argparse
    import copy
    import warnings
    warnings.filterwarnings("ignore")
    from . import bench
    from .results import ResultWriter
    from .voices import load_piper_torch
    ap = argparse.ArgumentParser(prog="python -m lib.backends")
    ap.add_argument("command", choices=["device-run", "probe"])
    ap.add_argument("--model", type=Path)
    ap.add_argument("--queries", type=Path)
    ap.add_argument("--profile", default="recorded-gpu")
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--bnb", action="store_true", help="also bitsandbytes int8/NF4 on the 1x1 convolutions")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a few queries per scenario (to check the script)")
    ap.add_argument("--only", choices=["latent-graphs"], help="run only these engines")
    args = ap.parse_args(argv)
    probes = probe_all()
    if args.command == "probe":
        print(probes_frame(probes).to_string())
        return 0
    import pandas as pd
    import torch
    q = json.loads(args.queries.read_text())
    queries, ttfa_queries = q["queries"], q["ttfa_queries"]
    model = load_piper_torch(args.model)
    writer = ResultWriter(args.profile, "05_hardware_benchmark")
    cfg = SuiteConfig(min_queries=100, min_seconds=0, batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                      offline_seconds=1.5, energy_seconds=5.0)
    if args.quick:
        cfg = SuiteConfig(min_queries=4, min_seconds=0, batch_sizes=(1, 2), offline_seconds=0.2, energy_seconds=0.3,
                          fidelity_queries=2, warmup=1)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    specs = [dict(precision="fp32"), dict(precision="fp16"), dict(precision="bf16"),
             dict(precision="fp16", cuda_graphs=True), dict(precision="fp16", compile_decoder=True),
             dict(precision="fp32", cuda_graphs=True, graph_latent=True),
             dict(precision="fp16", cuda_graphs=True, graph_latent=True)]
    if args.device != "cuda":
        specs = [dict(precision="fp32")]
    if args.only:
        specs = [sp for sp in specs if sp.get("graph_latent")] if args.only == "latent-graphs" else specs
    if args.bnb:
        specs += [dict(precision="fp16", bnb="int8"), dict(precision="fp16", bnb="nf4")]
    start = time.perf_counter()
    throughput, clips, env = [], {}, bench.environment(device=args.device)
    env.update(cudnn_allow_tf32=False, matmul_allow_tf32=False,
               noise="timed runs draw it on the device (torch.randn, seeded); clips.npz uses host noise (numpy, seed "
                     "(query, item)), identical to the CPU engines', for paired comparison")
    for spec in specs:
        if time.perf_counter() - start > args.budget_s:
            print("budget spent; skipping", spec, flush=True)
            continue
        spec = dict(spec)
        mode = spec.pop("bnb", None)
        try:
            m = model
            if mode:
                from .compress import bnb_convert
                m, names = bnb_convert(model, mode, args.device, scope=("enc_p", "flow"), compute_dtype=torch.float16)
            engine = TorchEngine(m, device=args.device, window=cfg.chunk_frames + 2 * cfg.context_frames, **spec)
            if mode:
                engine.label += f"-bnb-{mode}"
            t0 = time.perf_counter()
            throughput += run_suite(engine, queries, ttfa_queries, cfg, writer, technique="bitsandbytes" if mode else "hardware")
            clips[engine.label] = [engine.synth([ids], seed=i, host_noise=True)[0].astype(np.float16)
                                   for i, ids in enumerate(ttfa_queries[:5])]
            print(f"{engine.label}: {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as exc:
            label = f"torch-{args.device}-{spec.get('precision')}" + (f"-bnb-{mode}" if mode else "")
            print(f"{label} failed: {type(exc).__name__}: {exc}", flush=True)
            writer.add(model="piper-joe", variant=label, metric="rtf", value=None, status="failed",
                       reason=f"{type(exc).__name__}: {str(exc)[:300]}", backend=f"torch-{args.device}", device=args.device)
        finally:
            writer.write(env, extra_tables={"throughput_by_batch": pd.DataFrame(throughput),
                                            "backends": probes_frame(probes)})
            if mode:
                del m
                torch.cuda.empty_cache()
    np.savez_compressed(writer.dir / "clips.npz", **{k: np.concatenate(v) for k, v in clips.items()},
                        **{f"{k}__lengths": np.array([c.size for c in v]) for k, v in clips.items()})
    print(writer.frame().pivot_table(index="variant", columns="metric", values="value").T.to_string(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_device_main())
