"""The library warnings the lab knows to be noise, silenced by name; any other warning shows, in a notebook, a run
log or a judge process. Each entry says why it is noise here; run_all.sh exports them as PYTHONWARNINGS
(`pythonwarnings`) for the processes it starts."""
from __future__ import annotations

import re
import warnings
from contextlib import contextmanager

# (category, the message's start as the library words it, why it is noise here)
KNOWN: tuple[tuple[type[Warning], str, str], ...] = (
    (FutureWarning, "`torch.nn.utils.weight_norm` is deprecated",
     "piper's VITS modules build with torch's old weight_norm; the lab folds it before it ships a part"),
    (Warning, "IProgress not found",
     "tqdm under papermill has no ipywidgets: its bars fall back to text lines, which the run log keeps"),
    (UserWarning, "pkg_resources is deprecated as an API",
     "setuptools' notice when an installed library imports pkg_resources; nothing of the lab's"),
)


def silence_known() -> None:
    """Ignore the KNOWN warnings in this process (every other warning keeps Python's default action)."""
    for category, message, _ in KNOWN:
        warnings.filterwarnings("ignore", message=message, category=category)


def pythonwarnings() -> str:
    """KNOWN as a PYTHONWARNINGS value (action:message:category), for the processes a shell script starts."""
    return ",".join(f"ignore:{message}:{category.__name__}" for category, message, _ in KNOWN
                    if ":" not in message and "," not in message)


# What torch's TorchScript ONNX exporter says while it traces piper's VITS (the message's start, why it is noise):
# silenced inside `exporting()` only, where the lab exports; the exported graphs' parity is what the tests check.
EXPORT: tuple[tuple[str, str], ...] = (
    ("Converting a tensor to a Python", "a TracerWarning: piper's modules branch on tensor values while tracing"),
    ("Constant folding - Only steps=1", "the exporter's note on Slice ops it leaves unfolded"),
    ("You are using the legacy TorchScript-based ONNX export", "the lab exports with dynamo=False on purpose"),
    ("The feature will be removed", "the legacy exporter's own deprecation, beside the line above"),
)


@contextmanager
def exporting():
    """Inside: the KNOWN warnings and the exporter's EXPORT notices are silenced by name; any other shows."""
    with warnings.catch_warnings():
        silence_known()
        for message, _ in EXPORT:
            warnings.filterwarnings("ignore", message=re.escape(message))
        yield
