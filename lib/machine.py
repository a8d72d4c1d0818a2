"""The machine a number is measured on: its CPU, the instruction-set features a verdict can depend on (AVX-512,
VNNI, native bf16, AMX), and which precisions a runtime can really compute here. Knows no model and measures
nothing; everything else asks here instead of reading /proc/cpuinfo itself."""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

# The features the lab's verdicts depend on, each as the /proc/cpuinfo flags that provide it.
FEATURES = {
    "avx2": ("avx2",),
    "avx512": ("avx512f",),
    "vnni": ("avx512_vnni", "avx_vnni"),
    "bf16": ("avx512_bf16", "amx_bf16"),
    "amx": ("amx_tile",),
}


class PrecisionUnavailable(RuntimeError):
    """A variant asks for a precision this machine cannot compute natively (the variant becomes an absent row)."""


@lru_cache(maxsize=1)
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """Every flag of the first CPU in /proc/cpuinfo (empty where the kernel does not say)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def recorded_flags() -> list[str]:
    """The flags worth recording beside a timing (vector, matrix and FMA extensions)."""
    return sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4", "f16c")))


def cpu_features() -> dict[str, bool]:
    """Which of FEATURES this CPU has."""
    flags = cpu_flags()
    return {name: any(f in flags for f in provides) for name, provides in FEATURES.items()}


def has_native_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX-512 BF16 or AMX); without it bf16 kernels are emulated in fp32."""
    return cpu_features()["bf16"]


def feature_line(features: dict[str, bool] | None = None) -> str:
    """'AVX2, AVX-512, VNNI; no bf16, no AMX' for a report's headline."""
    features = cpu_features() if features is None else features
    names = {"avx2": "AVX2", "avx512": "AVX-512", "vnni": "VNNI", "bf16": "bf16", "amx": "AMX"}
    has = [names[k] for k, v in features.items() if v]
    lacks = [f"no {names[k]}" for k, v in features.items() if not v]
    return ", ".join(has) + ("; " if has and lacks else "") + ", ".join(lacks)


def openvino_cpu_precisions() -> list[str]:
    """What OpenVINO's CPU plugin says it can compute here (e.g. ['FP32', 'INT8', 'BF16'])."""
    import openvino as ov
    return list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


_OV_NAMES = {"f32": "FP32", "fp32": "FP32", "bf16": "BF16", "f16": "FP16", "fp16": "FP16"}


def require_precision(backend: str, precision: str) -> None:
    """Raise PrecisionUnavailable, naming the CPU and what it lacks, unless `backend` can compute `precision` here
    natively. fp32 is always there; bf16 on torch needs native bf16 units (else autocast emulates it, many times
    slower, and the timing says nothing about bf16); OpenVINO answers for itself."""
    precision = precision.lower()
    if precision in ("fp32", "f32"):
        return
    if backend.startswith("openvino"):
        caps = openvino_cpu_precisions()
        if _OV_NAMES.get(precision, precision.upper()) not in caps:
            raise PrecisionUnavailable(f"OpenVINO's CPU plugin has no {precision} on this CPU ({cpu_model()}; "
                                       f"it offers {caps}; {feature_line()})")
        return
    if backend.startswith("torch") and precision == "bf16" and not has_native_bf16():
        raise PrecisionUnavailable(f"this CPU ({cpu_model()}) has neither avx512_bf16 nor amx_bf16: torch bf16 would "
                                   f"be emulated, not measured ({feature_line()})")
