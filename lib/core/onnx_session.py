"""The one place an ONNX Runtime session is built: intra-op threads, one inter-op thread, quiet logs, idle threads
that sleep where OpenMP's do, providers in order with the CPU as fallback, and a failure that names the file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import onnxruntime as ort

CPU = "CPUExecutionProvider"


class OnnxModelError(ValueError):
    """A model ONNX Runtime cannot load; the message names the file."""


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
        name = "a serialized model" if isinstance(model, bytes) else str(model)
        raise OnnxModelError(f"ONNX Runtime could not load {what} {name}: {exc}") from None
