"""Exports for accelerators: the voice with its sampling noise as an explicit input (TensorRT and NPU compilers
reject RandomNormalLike), static-shape splines, a static-window decoder and its int8 QDQ version, and an offline
check of whether a graph is ready for an NPU compiler; and the whole (student) voice as the ONNX file piper's own
runtime opens: one `model.onnx` beside its `model.onnx.json`, as piper's own voices ship. Builds files; measures
nothing."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core import quiet
from lib.voices.artefacts import ArtefactError, need_file
from lib.voices.synth import CHUNK_FRAMES, CONTEXT_FRAMES, SCALES

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


def latent_with_noise(model, x, x_lengths, scales, dp_noise, z_noise, frames: int | None = None,
                      fp32_durations: bool = True):
    """SynthesizerTrn.infer up to the flow's output, with the two random draws passed in: same noise, same audio
    on every back-end. Piper's code draws inside; this repeats its reverse path with the draws as arguments.
    With `frames` set, every shape is static (the latent is `frames` long, masked after y_lengths), which is what
    a CUDA graph can capture; the caller checks that y_lengths fit.

    `fp32_durations`: the text encoder and durations in fp32 whatever the autocast. `ceil` turns a last-bit
    difference of a log-duration into a whole frame, and fp16 or bf16 arithmetic differs with the padded shape, so a
    CUDA graph's bucket-padded sentence and the same sentence unpadded would speak with different timings (every later
    sample shifted). It costs big batches on a GPU (fp32's cliff at batch 64 on an H100), so an engine that never pads
    to a bucket may follow the autocast instead."""
    import contextlib
    import torch
    from piper.train.vits import commons
    noise_scale, length_scale, noise_w = scales[0], scales[1], scales[2]
    with torch.autocast(x.device.type, enabled=False) if fp32_durations else contextlib.nullcontext():
        x, m_p, logs_p, x_mask = model.enc_p(x, x_lengths)
        dp = model.dp
        if getattr(model, "use_sdp", True):
            h = dp.proj(dp.convs(dp.pre(x), x_mask)) * x_mask
            flows = list(reversed(dp.flows))
            z = dp_noise[:, :, :x.size(2)].to(x.dtype) * noise_w
            for flow in flows[:-2] + [flows[-1]]:
                z = flow(z, x_mask, g=h, reverse=True)
            logw = z[:, :1]
        else:  # a deterministic duration predictor (the front-end student) draws nothing; the input stays in the
            # graph (x 0) so that every voice's ONNX files take the same inputs
            logw = dp(x, x_mask) + 0.0 * dp_noise[:, :1, :x.size(2)].to(x.dtype)
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


class StaticSplines:
    """Within this block piper's ConvFlow uses `spline_inverse_static` (for CUDA-graph capture)."""

    def __enter__(self):
        from piper.train.vits import modules
        self._orig = modules.piecewise_rational_quadratic_transform
        modules.piecewise_rational_quadratic_transform = spline_inverse_static

    def __exit__(self, *exc):
        from piper.train.vits import modules
        modules.piecewise_rational_quadratic_transform = self._orig


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


def export_noise_input(model, out_dir: Path, chunk_frames: int = CHUNK_FRAMES, context_frames: int = CONTEXT_FRAMES,
                       opset: int = 17) -> dict[str, Path]:
    """Three ONNX files with no random op inside (TensorRT and NPU compilers reject RandomNormalLike):
    `voice_noise.onnx` (text + noise -> audio, y_lengths; dynamic batch and length), `latent_noise.onnx`
    (text + noise -> z) and `decoder_<N>.onnx` (z window -> audio, one static shape, for NPUs and streaming)."""

    import torch
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    full, latent = _noise_modules(model)
    x, lengths = pad_batch([list(range(1, 41)), list(range(1, 31))])
    dp_noise, z_noise = make_noise([list(range(40))] * 2, model.hparams["inter_channels"], 0)
    args = (torch.from_numpy(x), torch.from_numpy(lengths), torch.tensor(SCALES),
            torch.from_numpy(dp_noise), torch.from_numpy(z_noise))
    names = ["input", "input_lengths", "scales", "dp_noise", "z_noise"]
    axes = {"input": {0: "batch", 1: "phonemes"}, "input_lengths": {0: "batch"},
            "dp_noise": {0: "batch", 2: "phonemes"}, "z_noise": {0: "batch", 2: "noise_frames"},
            "y_lengths": {0: "batch"}}
    window = chunk_frames + 2 * context_frames
    paths = {"voice": out_dir / "voice_noise.onnx", "latent": out_dir / "latent_noise.onnx",
             "decoder": out_dir / f"decoder_{window}.onnx"}
    with quiet.exporting(), torch.no_grad():
        for key, module, outs, out_axes in (
                ("voice", full, ["audio", "y_lengths"], {"audio": {0: "batch", 2: "samples"}}),
                ("latent", latent, ["z", "y_lengths"], {"z": {0: "batch", 2: "frames"}})):
            tmp = paths[key].with_suffix(".tmp.onnx")
            torch.onnx.export(module, args, str(tmp), dynamo=False, opset_version=opset, input_names=names,
                              output_names=outs, dynamic_axes={**axes, **out_axes})
            tmp.replace(paths[key])
        z = torch.zeros(1, model.hparams["inter_channels"], window)
        tmp = paths["decoder"].with_suffix(".tmp.onnx")
        torch.onnx.export(model.dec.eval(), (z,), str(tmp), dynamo=False, opset_version=opset,
                          input_names=["z"], output_names=["audio"])
        _declare_output_shape(tmp, list(model.dec.eval()(z).shape))
        tmp.replace(paths["decoder"])
    return paths


def _declare_output_shape(path: Path, shape: list[int]) -> None:
    """Write the static output shape into a graph whose exporter left it symbolic (the frame-rate decoder computes
    its trim from Shape ops, which the exporter does not fold); the input is static, so the output is too."""
    import onnx
    model = onnx.load(str(path))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ValueError(f"{path}: output has {len(dims)} dimensions, expected {len(shape)}")
    for d, n in zip(dims, shape):
        d.ClearField("dim_param")
        d.dim_value = int(n)
    onnx.save(model, str(path))


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

    dynamic = {vi.name: dims(vi) for vi in list(g.input) + list(g.output)
               if any(not isinstance(d, int) for d in dims(vi))}
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


# --- the whole voice for piper's runtime ---------------------------------------------------------------------

def export_voice(voice_model, out_dir: Path, config_path: Path, speaker_id: int = 0, name: str = "model") -> Path:
    """The whole (student) voice as one `<name>.onnx` with piper's interface and `<name>.onnx.json` (the teacher's
    config), the two files piper's voices are; returns the .onnx path."""
    from lib.techniques.compress import export_onnx  # deferred: torch, which export keeps out of runtimes.bench_engines
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{name}.onnx.data*"):
        old.unlink()
    onnx_path = export_onnx(voice_model, out_dir / f"{name}.onnx")
    shutil.copyfile(config_path, out_dir / f"{name}.onnx.json")
    return onnx_path


CHECK_SENTENCE = "The birch canoe slid on the smooth planks."  # what an exported voice speaks once as its check


def piper_runtime_check(onnx_path: Path, text: str = CHECK_SENTENCE) -> dict:
    """Open the file with piper's own runtime (`piper.PiperVoice.load`) and speak `text`: the check that a user's
    `piper` command can use it. Returns samples and rate; raises ArtefactError naming the file otherwise."""
    import numpy as np
    from piper import PiperVoice
    onnx_path = need_file(Path(onnx_path))
    need_file(Path(str(onnx_path) + ".json"))
    try:
        voice = PiperVoice.load(str(onnx_path))
        audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text)])
    except Exception as exc:
        raise ArtefactError(f"piper's runtime could not open or run {onnx_path}: {type(exc).__name__}: {exc}") from None
    return {"samples": int(audio.size), "sample_rate": int(voice.config.sample_rate),
            "rms": float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))}
