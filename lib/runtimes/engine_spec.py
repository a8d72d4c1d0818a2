"""EngineSpec: which benchmark engine runs, as data (back-end, precision, the OpenVINO window decoder's precision).
Its label is rendered from the fields; `parse` reads a label only where a notebook's parameters name engines."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from lib.runtimes.backends import ORT_PROVIDERS

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")  # autocast dtypes of the PyTorch module (bench_engines.TorchEngine)
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")  # OpenVINO's inference precision hints
PRECISIONS = {"torch-cpu": TORCH_PRECISIONS,
              **{backend: ("fp32",) for backend in ORT_PROVIDERS},  # ONNX Runtime runs the f32 files as they are
              "openvino-cpu": OPENVINO_PRECISIONS, "openvino-npu": OPENVINO_PRECISIONS}
WINDOW = "+openvino-{precision}-window"  # an ONNX Runtime engine whose window decoder OpenVINO's CPU plugin runs
_LABEL = re.compile(r"(?P<backend>[a-z]+-[a-z]+)-(?P<precision>[a-z0-9]+)(?:\+openvino-(?P<window>[a-z0-9]+)-window)?")


def forms() -> list[str]:
    """The label of every engine a spec can be, as a pattern per family (what a bad label's error lists)."""
    ort = "|".join(ORT_PROVIDERS)
    return [f"torch-cpu-{{{'|'.join(TORCH_PRECISIONS)}}}", f"{{{ort}}}-fp32",
            f"{{openvino-cpu|openvino-npu}}-{{{'|'.join(OPENVINO_PRECISIONS)}}}",
            f"{{{ort}}}-fp32" + WINDOW.format(precision="{" + "|".join(OPENVINO_PRECISIONS) + "}")]


@dataclass(frozen=True)
class EngineSpec:
    """The engine on `backend` ('torch-cpu', an ONNX Runtime back-end 'ort-*', 'openvino-cpu'/'openvino-npu') at
    `precision`; `window_precision` (ONNX Runtime only): the static window decoder compiled by OpenVINO's CPU
    plugin at that precision."""
    backend: str
    precision: str
    window_precision: str | None = None

    def __post_init__(self):
        if self.backend not in PRECISIONS:
            raise ValueError(f"back-end {self.backend!r} is none of {sorted(PRECISIONS)}")
        if self.precision not in PRECISIONS[self.backend]:
            raise ValueError(f"{self.backend} runs at {list(PRECISIONS[self.backend])}, not {self.precision!r}")
        if self.window_precision is not None:
            if self.backend not in ORT_PROVIDERS:
                raise ValueError(f"an OpenVINO window decoder goes with an ONNX Runtime engine, not {self.backend}")
            if self.window_precision not in OPENVINO_PRECISIONS:
                raise ValueError(f"the window decoder runs at {list(OPENVINO_PRECISIONS)}, "
                                 f"not {self.window_precision!r}")

    @property
    def label(self) -> str:
        """'<backend>-<precision>', with '+openvino-<window precision>-window' for the OpenVINO window decoder: the
        result rows' variant."""
        window = WINDOW.format(precision=self.window_precision) if self.window_precision else ""
        return f"{self.backend}-{self.precision}{window}"

    @property
    def base(self) -> "EngineSpec":
        """The same engine without the OpenVINO window decoder (the back-end and precision a probe answers for)."""
        return replace(self, window_precision=None)

    @classmethod
    def parse(cls, label: str) -> "EngineSpec":
        """The spec a notebook parameter's `label` names; ValueError names the label and lists the valid forms."""
        match = _LABEL.fullmatch(label) if isinstance(label, str) else None
        try:
            if match is None:
                raise ValueError("it does not read as <backend>-<precision>[+openvino-<precision>-window]")
            return cls(match["backend"], match["precision"], match["window"])
        except ValueError as exc:
            raise ValueError(f"engine label {label!r}: {exc}; the forms are {', '.join(forms())}") from None

    def __str__(self) -> str:
        return self.label
