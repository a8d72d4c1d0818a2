"""Where an ONNX graph is opened: the one ONNX Runtime session builder and the one OpenVINO compile. Threads,
providers and precision hints are set here, and a file that cannot be loaded is an error that names it."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnxruntime as ort

CPU = "CPUExecutionProvider"


class OnnxModelError(ValueError):
    """A model ONNX Runtime or OpenVINO cannot load; the message names the file."""


def _name(model) -> str:
    return "a serialized model" if isinstance(model, bytes) else str(model)


def session(model: Path | str | bytes, threads: int = 1, providers: Sequence[str] = (CPU,), seed: int | None = None,
            what: str = "model") -> ort.InferenceSession:
    """An InferenceSession for `model` (a path, or a serialized model as bytes) with `threads` intra-op threads on
    `providers` (the CPU added last as the fallback); `seed` seeds the graph's random ops first."""
    if seed is not None:
        ort.set_seed(int(seed))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":  # idle threads sleep, as OpenMP's do
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, sess_options=opts, providers=list(dict.fromkeys([*providers, CPU])))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile, none a common base
        raise OnnxModelError(f"ONNX Runtime could not load {what} {_name(model)}: {exc}") from None


def openvino(model: Path | str | bytes, device: str = "CPU", precision: str | None = None, threads: int | None = None,
             what: str = "model"):
    """`model` (a path, or a serialized ONNX model as bytes) compiled by OpenVINO for `device`, with the precision
    hint `precision` ('f32', 'bf16', 'f16') and `threads` inference threads where given."""
    import openvino as ov  # deferred: an optional back-end, loaded only by the voices and engines that compile for it
    core = ov.Core()
    try:
        graph = core.read_model(model, b"") if isinstance(model, bytes) else core.read_model(str(model))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with the parser's message
        raise OnnxModelError(f"OpenVINO could not read {what} {_name(model)}: {exc}") from None
    config = {**({"INFERENCE_PRECISION_HINT": precision} if precision else {}),
              **({"INFERENCE_NUM_THREADS": int(threads)} if threads else {})}
    return core.compile_model(graph, device, config)


def ov_precision(compiled) -> str:
    """The precision a compiled OpenVINO model really runs at, as its short name ('f32', 'bf16', 'f16')."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.get_type_name() if hasattr(value, "get_type_name") else str(value).lower()


def ov_runner(compiled):
    """A callable that runs a compiled OpenVINO model on a feed dict (or one positional input) and returns its
    first output as a numpy array; one infer request, reused."""
    request = compiled.create_infer_request()
    return lambda feeds: np.asarray(next(iter(request.infer(feeds).values())))
