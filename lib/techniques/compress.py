"""Compression of the PyTorch voice and its ONNX export: unstructured and structured pruning, PyTorch and ONNX
Runtime int8, bf16 autocast, bitsandbytes; each returns a new model or file and says what it changed."""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, Sequence

import numpy as np
import torch

from lib.core import quiet
from lib.core.subject import Technique
from lib.voices.synth import SCALES

PRUNABLE = ("Conv1d", "ConvTranspose1d", "Linear", "Conv2d")


def prunable_layers(module, scope: Sequence[str] | None = None) -> list[tuple[str, object]]:
    """(name, layer) of every conv/linear layer, optionally only those under the given top-level modules."""
    out = []
    for name, m in module.named_modules():
        if type(m).__name__ in PRUNABLE and getattr(m, "weight", None) is not None:
            if scope is None or name.split(".")[0] in scope:
                out.append((name, m))
    return out


def prune_unstructured(model, amount: float, scope: Sequence[str] | None = None):
    """A copy with the `amount` smallest-|w| fraction of each conv/linear weight set to zero
    (torch.nn.utils.prune.l1_unstructured, then made permanent)."""
    import torch.nn.utils.prune as prune
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1), got {amount}")
    out = copy.deepcopy(model)
    for _, layer in prunable_layers(out, scope):
        prune.l1_unstructured(layer, "weight", amount=amount)
        prune.remove(layer, "weight")
    return out


def weight_sparsity(module, scope: Sequence[str] | None = None) -> float:
    """Fraction of zeros among the conv/linear weights."""
    total = zeros = 0
    for _, layer in prunable_layers(module, scope):
        w = layer.weight.detach()
        total += w.numel()
        zeros += int((w == 0).sum())
    return zeros / max(1, total)


def state_dict_bytes(module, compressed: bool = False) -> int:
    """Bytes of the module's weights saved with torch.save; `compressed` deflates the file (zeros compress)."""
    import torch
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    raw = buf.getvalue()
    if not compressed:
        return len(raw)
    return _deflated_bytes(raw)


_DEFLATED: dict[str, int] = {}


def _deflated_bytes(raw: bytes) -> int:
    """Size of `raw` in a deflated zip (level 6), remembered by content: deflating a voice's weights takes seconds,
    and a notebook asks for the same weights more than once (a sweep point that is also a variant)."""
    import hashlib
    digest = hashlib.sha1(raw).hexdigest()
    if digest not in _DEFLATED:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
            zf.writestr("weights.pt", raw)
        _DEFLATED[digest] = len(out.getvalue())
    return _DEFLATED[digest]


def prune_structured(decoder, ratio: float, example_z, ignored: Iterable | None = None, round_to: int = 8):
    """A copy of a HiFi-GAN decoder with `ratio` of its channels removed (torch-pruning, L2 magnitude, residual
    groups kept consistent through the dependency graph). Input channels and the final 1-channel conv stay."""
    import torch_pruning as tp
    dec = copy.deepcopy(decoder)
    ignored_layers = [dec.conv_post] + list(ignored or [])
    pruner = tp.pruner.MetaPruner(dec, example_z, importance=tp.importance.MagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=ignored_layers, round_to=round_to)
    pruner.step()
    return dec


def quantize_dynamic_torch(model):
    """torch.ao dynamic int8 for nn.Linear (and LSTM/GRU): returns the model and how many layers it converted."""
    import torch
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    converted = sum(1 for m in q.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear))
    return q, converted


# --- ONNX export and ONNX Runtime quantization ---------------------------------------------------------------

def export_onnx(model, path: Path, opset: int = 15) -> Path:
    """Export SynthesizerTrn.infer with Piper's interface (input, input_lengths, scales -> output), so the file
    runs in the same PiperOnnxVoice as the shipped voice."""
    import torch

    class Infer(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text, text_lengths, scales):
            return self.m.infer(text, text_lengths, noise_scale=scales[0], length_scale=scales[1],
                                noise_scale_w=scales[2])[0].unsqueeze(1)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = Infer(model).eval()
    x = torch.randint(1, model.n_vocab, (1, 50), dtype=torch.long)
    args = (x, torch.tensor([50], dtype=torch.long), torch.tensor(SCALES))
    tmp = path.with_suffix(".tmp.onnx")
    with quiet.exporting(), torch.no_grad():
        torch.onnx.export(wrapper, args, str(tmp), dynamo=False, opset_version=opset,
                          input_names=["input", "input_lengths", "scales"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch_size", 1: "phonemes"}, "input_lengths": {0: "batch_size"},
                                        "output": {0: "batch_size", 2: "time"}})
    tmp.replace(path)
    return path


def export_split(model, out_dir: Path, chunk_frames: int, context_frames: int, opset: int = 15) -> tuple[Path, Path]:
    """Two ONNX files for a split voice: `latent.onnx` (text -> the flow's output z, dynamic length, noise inside)
    and `decoder_<N>.onnx` (z -> waveform) with one static input shape of N = chunk + 2 x context frames, the
    form NPUs and ahead-of-time compilers need and that lets OpenVINO compile its bf16 kernels once."""
    import torch

    class Latent(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, text, text_lengths, scales):
            m = self.m
            x, m_p, logs_p, x_mask = m.enc_p(text, text_lengths)
            logw = m.dp(x, x_mask, g=None, reverse=True, noise_scale=scales[2])
            w_ceil = torch.ceil(torch.exp(logw) * x_mask * scales[1])
            y_lengths = torch.clamp_min(torch.sum(w_ceil, [1, 2]), 1).long()
            from piper.train.vits import commons
            y_mask = torch.unsqueeze(commons.sequence_mask(y_lengths, y_lengths.max()), 1).type_as(x_mask)
            attn = commons.generate_path(w_ceil, torch.unsqueeze(x_mask, 2) * torch.unsqueeze(y_mask, -1))
            m_p = torch.matmul(attn.squeeze(1), m_p.transpose(1, 2)).transpose(1, 2)
            logs_p = torch.matmul(attn.squeeze(1), logs_p.transpose(1, 2)).transpose(1, 2)
            z_p = m_p + torch.randn_like(m_p) * torch.exp(logs_p) * scales[0]
            return m.flow(z_p, y_mask, g=None, reverse=True) * y_mask

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    latent, decoder = out_dir / "latent.onnx", out_dir / f"decoder_{chunk_frames + 2 * context_frames}.onnx"
    x = torch.randint(1, model.n_vocab, (1, 50), dtype=torch.long)
    with quiet.exporting(), torch.no_grad():
        torch.onnx.export(Latent(model).eval(), (x, torch.tensor([50]), torch.tensor(SCALES)), str(latent),
                          dynamo=False, opset_version=opset, input_names=["input", "input_lengths", "scales"],
                          output_names=["z"], dynamic_axes={"input": {1: "phonemes"}, "z": {2: "frames"}})
        z = torch.zeros(1, model.dec.conv_pre.in_channels, chunk_frames + 2 * context_frames)
        torch.onnx.export(model.dec.eval(), (z,), str(decoder), dynamo=False, opset_version=opset,
                          input_names=["z"], output_names=["audio"])
    return latent, decoder


def onnx_op_counts(path: Path) -> dict[str, int]:
    import collections

    import onnx
    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))


def node_names(path: Path, op_types: Sequence[str] | None = None, prefixes: Sequence[str] | None = None) -> list[str]:
    """Names of the graph's nodes of the given op types under the given scope prefixes (e.g. '/dec/')."""
    import onnx
    out = []
    for n in onnx.load(str(path)).graph.node:
        if op_types and n.op_type not in op_types:
            continue
        if prefixes and not any(n.name.startswith(p) for p in prefixes):
            continue
        out.append(n.name)
    return out


@contextlib.contextmanager
def _quiet_root_log():
    """onnxruntime.quantization advises pre-processing through the root logger on every call: keep it out of the
    executed notebooks (the advice is about shape inference, which these exports already carry)."""
    root, level = logging.getLogger(), logging.getLogger().level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def ort_quantize_dynamic(src: Path, dst: Path, op_types: Sequence[str] = ("MatMul",), per_channel: bool = False,
                         signed: bool = True) -> Path:
    """ONNX Runtime dynamic int8 (weights quantized offline, activations at run time) for the given op types."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with _quiet_root_log():
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(op_types), per_channel=per_channel,
                         weight_type=QuantType.QInt8 if signed else QuantType.QUInt8)
    return Path(dst)


class _Calibration:
    """Feeds phoneme-id sequences (noise off) to ONNX Runtime's static calibration."""

    def __init__(self, sequences: Sequence[list[int]]):
        self._it = iter([{"input": np.array([s], dtype=np.int64), "input_lengths": np.array([len(s)], dtype=np.int64),
                          "scales": np.array([0.0, 1.0, 0.0], dtype=np.float32)} for s in sequences])

    def get_next(self):
        return next(self._it, None)


def calibration_cache_path(src: Path, calibration: Sequence[list[int]], op_types: Sequence[str]) -> Path:
    """Where the activation ranges of `src` on these phoneme sequences are kept (next to `src`): the same model,
    sequences and op types give the same ranges, so several static quantizations of one model (one group of layers
    at a time) calibrate once."""
    import hashlib
    h = hashlib.sha1()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    h.update(repr((sorted(op_types), [list(map(int, s)) for s in calibration])).encode())
    return Path(src).parent / f".{Path(src).stem}.minmax-{h.hexdigest()[:16]}.json"


def ort_quantize_static(src: Path, dst: Path, calibration: Sequence[list[int]],
                        op_types: Sequence[str] = ("Conv", "MatMul"), nodes_to_exclude: Sequence[str] = (),
                        per_channel: bool = True) -> Path:
    """ONNX Runtime static QDQ int8: u8 activations calibrated (MinMax) on the given phoneme sequences, s8 weights;
    `nodes_to_exclude` keeps sensitive layers in float. The ranges are cached (`calibration_cache_path`, ONNX
    Runtime's own calibration cache): a second quantization of the same model skips the calibration run."""
    import shutil
    import tempfile

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    cache = calibration_cache_path(src, calibration, op_types)
    with _quiet_root_log(), tempfile.TemporaryDirectory(prefix="calib.") as tmp:
        # ONNX Runtime writes a missing cache itself; it is written to a scratch file and moved into place, so an
        # interrupted run never leaves half a cache behind
        fresh = Path(tmp) / "ranges.json"
        quantize_static(str(src), str(dst), _Calibration(calibration), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=list(op_types), nodes_to_exclude=list(nodes_to_exclude),
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        calibration_cache_path=str(cache if cache.is_file() else fresh),
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        if fresh.is_file():
            shutil.move(str(fresh), str(cache))
    return Path(dst)


def bitsandbytes_status(mode: str = "int8", device: str = "cpu") -> tuple[bool, str]:
    """Whether a bitsandbytes layer of `mode` ('int8' LLM.int8(), 'nf4') runs on `device` here, and why not."""
    try:
        import bitsandbytes as bnb  # noqa: F401
    except Exception as exc:
        return False, f"bitsandbytes is not importable: {type(exc).__name__}: {exc}"
    import torch
    try:
        layer = BnbConv1x1(torch.nn.Conv1d(8, 8, 1), mode).to(device)
        with torch.no_grad():
            layer(torch.zeros(1, 8, 4, device=device))
    except Exception as exc:
        return False, f"bitsandbytes {mode} layers do not run on {device}: {type(exc).__name__}: {str(exc)[:200]}"
    return True, "ok"


class BnbConv1x1(torch.nn.Module):
    """A kernel-size-1 Conv1d run as a bitsandbytes linear layer: the same product over channels, with the weight
    stored as int8 (LLM.int8(), outliers above `threshold` kept in 16-bit) or 4-bit NF4."""

    def __init__(self, conv, mode: str = "int8", threshold: float = 6.0, compute_dtype=None):
        super().__init__()
        import bitsandbytes as bnb
        # LLM.int8() logs on every call that it casts float32 inputs to float16 (by design): hundreds of lines a run
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
        if conv.kernel_size != (1,) or conv.groups != 1:
            raise ValueError(f"only 1x1 ungrouped Conv1d layers are linear layers; got kernel {conv.kernel_size}")
        w = conv.weight.data[:, :, 0].contiguous()
        bias = conv.bias is not None
        if mode == "int8":
            lin = bnb.nn.Linear8bitLt(conv.in_channels, conv.out_channels, bias=bias, has_fp16_weights=False,
                                      threshold=threshold)
            lin.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
        elif mode == "nf4":
            lin = bnb.nn.Linear4bit(conv.in_channels, conv.out_channels, bias=bias, quant_type="nf4",
                                    compute_dtype=compute_dtype or torch.float32)
            lin.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
        else:
            raise ValueError(f"bitsandbytes mode {mode!r}: use 'int8' or 'nf4'")
        if bias:
            lin.bias = torch.nn.Parameter(conv.bias.data.clone(), requires_grad=False)
        self.linear, self.mode = lin, mode

    def forward(self, x):
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


def conv1x1_layers(model, scope: Sequence[str] | None = None) -> list[str]:
    """Names of the kernel-size-1, ungrouped Conv1d layers (the ones that are linear layers), within `scope`."""
    import torch
    return [n for n, m in model.named_modules()
            if isinstance(m, torch.nn.Conv1d) and m.kernel_size == (1,) and m.groups == 1
            and (scope is None or n.startswith(tuple(scope)))]


def bnb_convert(model, mode: str = "int8", device: str = "cpu", scope: Sequence[str] | None = None,
                compute_dtype=None):
    """A copy of `model` with every 1x1 Conv1d (in `scope`) replaced by a bitsandbytes int8 or NF4 layer, moved
    to `device` (the move is when bitsandbytes quantizes). Returns (model, names of the converted layers).
    NF4 on the CPU packs weights in blocks of 64 input channels, so layers with other widths stay float there."""
    import copy
    cls = BnbConv1x1
    out = copy.deepcopy(model).cpu()
    names = conv1x1_layers(out, scope)
    if mode == "nf4" and str(device).startswith("cpu"):
        names = [n for n in names if out.get_submodule(n).in_channels % 64 == 0]
    for name in names:
        parent_name, _, leaf = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        layer = cls(getattr(parent, leaf), mode, compute_dtype=compute_dtype)
        if leaf.isdigit():
            parent[int(leaf)] = layer
        else:
            setattr(parent, leaf, layer)
    return out.to(device).eval(), names


SCOPES = {"text encoder + duration": ("/enc_p/", "/dp/"), "flow": ("/flow/",), "decoder": ("/dec/",)}


def weight_only_int8(src: Path, dst: Path, op_types: Sequence[str] = ("Conv", "ConvTranspose"), min_size: int = 1024,
                     prefixes: Sequence[str] | None = None) -> Path:
    """Store conv weights as int8 (symmetric, one scale per output channel) behind DequantizeLinear, compute in
    float; `prefixes` limits it to nodes under those scopes. ONNX Runtime folds the dequantization into float weights
    when the session starts, so speed is the float model's and only the file shrinks. Written by hand because
    onnxruntime.quantization quantizes weight-only just for MatMul (MatMulNBits), not for convolutions."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    done: dict[str, str] = {}
    new_nodes = []
    for node in g.node:
        if node.op_type not in op_types or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if prefixes and not any(node.name.startswith(p) for p in prefixes):
            continue
        name = node.input[1]
        if name not in done:
            w = numpy_helper.to_array(inits[name]).astype(np.float32)
            if w.size < min_size:
                continue
            axis = 1 if node.op_type == "ConvTranspose" else 0
            red = tuple(i for i in range(w.ndim) if i != axis)
            scale = np.maximum(np.abs(w).max(axis=red), 1e-12) / 127.0
            shape = [1] * w.ndim
            shape[axis] = -1
            q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            g.initializer.remove(inits[name])
            g.initializer.extend([numpy_helper.from_array(q, f"{name}_q8"),
                                  numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale"),
                                  numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{name}_zp")])
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q8", f"{name}_scale", f"{name}_zp"],
                                              [f"{name}_dq"], name=f"{name}_DequantizeLinear", axis=axis))
            done[name] = f"{name}_dq"
        node.input[1] = done[name]
    for n in reversed(new_nodes):
        g.node.insert(0, n)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return Path(dst)


@dataclass(frozen=True)
class OnnxConversion:
    """One named ONNX Runtime int8 conversion of a voice's ONNX file, as notebook 03 judges it and `tts-lab voice
    optimize` offers it: static QDQ over `groups` of SCOPES (empty: every group; the others stay float), dynamic over
    `op_types`, or weight-only over the nodes under `prefixes` (empty: all)."""
    name: str
    technique: Technique
    kind: Literal["static", "dynamic", "weight"]
    file: str  # the converted file's name in the work folder
    op_types: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()

    def convert(self, src: Path, work: Path, calibration: Sequence[list[int]] = (), scopes: dict | None = None) -> Path:
        """The converted file of `src` in `work` (static conversions calibrate on the phoneme ids `calibration`;
        `scopes`: the groups of node prefixes `groups` names, SCOPES by default)."""
        dst = Path(work) / self.file
        if self.kind == "weight":
            return weight_only_int8(src, dst, prefixes=list(self.prefixes) or None)
        if self.kind == "dynamic":
            return ort_quantize_dynamic(src, dst, self.op_types)
        keep_float = [n for group, prefixes in (scopes or SCOPES).items() if self.groups and group not in self.groups
                      for n in node_names(src, prefixes=list(prefixes))]
        return ort_quantize_static(src, dst, calibration, nodes_to_exclude=keep_float)


CONVERSIONS = {c.name: c for c in (
    OnnxConversion("ort-weight-int8-all", Technique.WEIGHT_INT8, "weight", "w8_all.onnx"),
    OnnxConversion("ort-weight-int8-flow-dec", Technique.WEIGHT_INT8, "weight", "w8_flow_dec.onnx",
                   prefixes=("/flow/", "/dec/")),
    OnnxConversion("ort-dynamic-int8-matmul", Technique.ORT_DYNAMIC_INT8, "dynamic", "dyn_matmul.onnx",
                   op_types=("MatMul",)),
    OnnxConversion("ort-dynamic-int8-conv", Technique.ORT_DYNAMIC_INT8, "dynamic", "dyn_conv.onnx",
                   op_types=("Conv", "MatMul")),
    OnnxConversion("ort-qdq-int8-all", Technique.ORT_STATIC_INT8, "static", "qdq_all.onnx"),
    # the flow alone in int8: notebook 03's least sensitive group on every CPU so far (its guided variant's name)
    OnnxConversion("ort-qdq-int8-flow", Technique.ORT_STATIC_INT8, "static", "qdq_flow.onnx", groups=("flow",)),
)}
