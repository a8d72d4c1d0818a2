"""Back-ends: which runtimes and accelerators can run the voice here, each probed with a real call and recorded as
runnable, prepare-only or unavailable with the reason (`tts-lab study probe`). Engines are in
lib.runtimes.bench_engines, exports in lib.techniques.export, the scenarios that measure in lib.harness.scenarios,
the GPU part of notebook 05 in lib.jobs.device_run."""
from __future__ import annotations

import importlib.metadata as md
import json
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from lib.core import machine, onnx_session

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
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE, f"torch not importable: {exc}",
                     versions=versions)
    if device == "cuda" and not torch.cuda.is_available():
        return Probe("torch-cuda", precision, device, UNAVAILABLE,
                     f"torch {torch.__version__} sees no CUDA device (built for CUDA {torch.version.cuda})",
                     versions=versions)
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
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE, f"{type(exc).__name__}: {exc}",
                     versions=versions)
    want = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[precision]
    if effective != f"{device}:{want}":
        return Probe(f"torch-{device}", precision, device, UNAVAILABLE,
                     f"asked for {device}:{want}, ran as {effective}", effective, versions)
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
        sess = onnx_session.session(_tiny_conv_onnx(), providers=(provider,), what="the probe's model")
        sess.run(None, {"x": np.zeros((1, 4, 16), np.float32)})
        effective = ort_effective_provider(sess)
    except Exception as exc:
        return Probe(backend, precision, device, UNAVAILABLE,
                     f"{provider} listed but failed: {type(exc).__name__}: {exc}", versions=versions)
    if effective != provider:
        return Probe(backend, precision, device, UNAVAILABLE,
                     f"{provider} is listed but the session fell back to {effective} "
                     f"(the provider's libraries did not load)",
                     effective, versions)
    return Probe(backend, precision, device, RUNNABLE, "", effective, versions)


def _probe_openvino(device: str, precision: str) -> Probe:
    backend = f"openvino-{device.lower()}"
    versions = {"openvino": _version("openvino")}
    try:
        import openvino as ov
    except ImportError as exc:
        return Probe(backend, precision, device.lower(), UNAVAILABLE, f"openvino not importable: {exc}",
                     versions=versions)
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
        compiled = onnx_session.openvino(_tiny_conv_onnx(), device, precision, what="the probe's model")
        effective = f"{','.join(compiled.get_property('EXECUTION_DEVICES'))}:{onnx_session.ov_precision(compiled)}"
    except Exception as exc:
        return Probe(backend, precision, device.lower(), UNAVAILABLE, f"{type(exc).__name__}: {str(exc)[:300]}",
                     versions=versions)
    if effective.split(":")[1] != precision:
        return Probe(backend, precision, device.lower(), UNAVAILABLE,
                     f"asked for {precision}, plugin chose {effective}", effective, versions)
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
    ("torch-cpu", "fp32"), ("torch-cpu", "bf16"), ("ort-cpu", "fp32"), ("openvino-cpu", "f32"),
    ("openvino-cpu", "bf16"), ("torch-cuda", "fp32"), ("torch-cuda", "fp16"), ("torch-cuda", "bf16"),
    ("ort-cuda", "fp32"), ("ort-tensorrt", "fp16"), ("openvino-npu", "f16"), ("ort-qnn", "int8"),
    ("litert-cpu", "fp32"), ("litert-npu", "int8"), ("executorch", "fp32"), ("aws-neuron", "bf16"),
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


def probes_frame(probes: Sequence[Probe]):
    import pandas as pd
    rows = []
    for p in probes:
        row = asdict(p)
        row["versions"] = json.dumps({k: v for k, v in p.versions.items() if v})
        rows.append(row)
    return pd.DataFrame(rows, columns=["backend", "precision", "device", "status", "effective", "reason", "versions"])
