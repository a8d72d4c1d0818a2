"""The machine a number is measured on: its CPU, the instruction-set features a verdict can depend on (AVX-512,
VNNI, native bf16, AMX), and which precisions a runtime can really compute here. Knows no model and measures
nothing; everything else asks here instead of reading /proc/cpuinfo itself."""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

from lib.core import env

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


def _cpu_fields() -> dict[str, str]:
    """The first processor's block of /proc/cpuinfo, field by field."""
    fields = {}
    for line in _cpuinfo().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    return _cpu_fields().get("model name") or platform.processor() or "unknown"


def cpu_family_model() -> str | None:
    """'25/17': /proc/cpuinfo's cpu family and model, which tell apart CPUs that one model name and one set of flags
    cover (a Zen 4 and a Zen 5 VM both read 'AMD EPYC'); None where the kernel does not say."""
    fields = _cpu_fields()
    family, model = fields.get("cpu family"), fields.get("model")
    return f"{family}/{model}" if family and model else None


# CPU classes the lab can be told to act as (TTS_LAB_CPU_AS), so that a session on a newer CPU proves what an older
# one does: each names the flag prefixes such a CPU lacks, the OpenVINO precisions it lacks, and the kernel ISA cap
# (ATen's own environment switch) that makes torch run the vector code such a CPU runs.
CPU_CLASSES = {
    "avx2": {"lacks": ("avx512", "amx", "avx_vnni", "avx_ifma", "avx_ne_convert"),
             "openvino_lacks": ("BF16", "FP16"),
             # torch's ATen kernels only: capping oneDNN too (ONEDNN_MAX_CPU_ISA=AVX2) makes OpenVINO's CPU plugin
             # fail to build Kokoro's LSTM on an AVX-512 CPU, which a real AVX2-only CPU runs
             "kernel_env": {"ATEN_CPU_CAPABILITY": "avx2"}},
}


# The switches that cap a library's vector kernels (ATen, oneDNN, MKL, CTranslate2): env.json records those set, by
# TTS_LAB_CPU_AS or by hand, since they change every timing the process takes.
KERNEL_CAP_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "CT2_FORCE_CPU_ISA")


def kernel_caps() -> dict[str, str]:
    """The kernel caps in force in this process's environment (KERNEL_CAP_VARS that are set)."""
    return {k: os.environ[k] for k in KERNEL_CAP_VARS if os.environ.get(k)}


def cpu_as() -> str | None:
    """The CPU class TTS_LAB_CPU_AS asks the lab to act as (None, for unset or 'native': this CPU as it is)."""
    value = env.CPU_AS.get().strip().lower()
    if value in ("", "native"):
        return None
    if value not in CPU_CLASSES:
        raise ValueError(f"TTS_LAB_CPU_AS={value!r}: use one of {sorted(CPU_CLASSES) + ['native']} or leave it unset")
    return value


KERNEL_CAPS_SET: dict[str, str] = {}  # the kernel caps apply_cpu_as put into this process's environment


def apply_cpu_as() -> None:
    """Cap the kernels of this process's not-yet-loaded libraries and of its children at the class TTS_LAB_CPU_AS
    names (lib/__init__ calls it before torch or OpenVINO are imported through lib)."""
    name = cpu_as()
    if name:
        for key, value in CPU_CLASSES[name]["kernel_env"].items():
            if key not in os.environ:
                os.environ[key] = KERNEL_CAPS_SET[key] = value


def real_cpu_flags() -> set[str]:
    """Every flag of the first CPU in /proc/cpuinfo (empty where the kernel does not say)."""
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_flags() -> set[str]:
    """The flags the lab acts on: this CPU's, less those the class TTS_LAB_CPU_AS names lacks."""
    flags = real_cpu_flags()
    name = cpu_as()
    return {f for f in flags if not f.startswith(CPU_CLASSES[name]["lacks"])} if name else flags


def recorded_flags() -> list[str]:
    """The flags worth recording beside a timing (vector, matrix and FMA extensions), as the hardware has them."""
    return sorted(f for f in real_cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4", "f16c")))


def features_from_flags(flags) -> dict[str, bool]:
    """Which of FEATURES a CPU with these /proc/cpuinfo flags has (also for an env.json recorded elsewhere)."""
    flags = set(flags)
    return {name: any(f in flags for f in provides) for name, provides in FEATURES.items()}


def cpu_features() -> dict[str, bool]:
    """Which of FEATURES this CPU has."""
    return features_from_flags(cpu_flags())


IDENTITY_KEYS = ("cpu_model", "cpu_family_model", "cpu_features", "kernel_caps")  # env.json's fields that say it


def identity() -> dict:
    """What sets this machine's speed apart in a record: the CPU's model name, family/model, the features the lab acts
    on (fewer under TTS_LAB_CPU_AS) and the kernel caps in force; env.json and each calibration keep it."""
    return {"cpu_model": cpu_model(), "cpu_family_model": cpu_family_model(), "cpu_features": cpu_features(),
            "kernel_caps": kernel_caps()}


def identity_of(env_json: dict) -> dict:
    """The identity an env.json recorded (family/model None where it predates them; no kernel caps where it predates
    them, when the lab set none)."""
    return {"cpu_model": env_json.get("cpu_model"), "cpu_family_model": env_json.get("cpu_family_model"),
            "cpu_features": env_json.get("cpu_features"), "kernel_caps": env_json.get("kernel_caps") or {}}


def same_machine(a: dict | None, b: dict | None) -> bool:
    """Whether two identities name the same kind of machine: every field the same, family/model only where both say
    it (a caller that cannot tell machines apart without it passes None for either)."""
    if not a or not b:
        return False
    return all(a.get(k) == b.get(k) for k in IDENTITY_KEYS if k != "cpu_family_model") and (
        None in (a.get("cpu_family_model"), b.get("cpu_family_model"))
        or a["cpu_family_model"] == b["cpu_family_model"])


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
    """What OpenVINO's CPU plugin says it can compute here (e.g. ['FP32', 'INT8', 'BF16']), less what the class
    TTS_LAB_CPU_AS names lacks."""
    caps = _ov_capabilities()
    name = cpu_as()
    return [c for c in caps if c not in CPU_CLASSES[name]["openvino_lacks"]] if name else caps


def _ov_capabilities() -> list[str]:
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


# --- how busy the machine is ---------------------------------------------------------------------------------
# A timed block that uses `threads` cores gets a core per thread only while the other processes' demand leaves
# them free: other CPU use above (cores - threads) means our threads were time-sliced with theirs and the
# latency measures the neighbours. OTHERS_MARGIN_CORES leaves room for daemons and the notebook's own kernel
# (idle machines here show 0.02-0.1 cores of others); steal above STEAL_LIMIT means the hypervisor took the CPU.
OTHERS_MARGIN_CORES = 0.25
STEAL_LIMIT = 0.05
# /proc/stat counts in ticks of 10 ms: over a block of a few tenths of a second one or two stolen ticks read as 5-15 %
# (seen on a 2-core VM), so steal counts only where the time stolen, over all cores, reaches this many seconds
MIN_STOLEN_S = 0.05


class MachineBusy(RuntimeError):
    """The machine stayed busier than a quiet measurement allows (require_quiet)."""


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> tuple[float, float, float] | None:
    """(busy, steal, total) seconds summed over `cpus` from /proc/stat, or None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK")
    wanted = {f"cpu{i}" for i in cpus}
    busy = steal = total = 0.0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            v = [float(x) for x in parts[1:9]] + [0.0] * max(0, 8 - len(parts[1:9]))
            user, nice, system, idle, iowait, irq, softirq, st = v
            busy += user + nice + system + irq + softirq
            steal += st
            total += sum(v)
    return (busy / hz, steal / hz, total / hz) if total else None


def _own_cpu_s() -> float:
    """CPU seconds of this process and of the children it has waited for (a timed block that runs its work in a
    child, such as a cold start, is not contended by that child)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _loadavg() -> tuple[float | None, int | None]:
    """1-minute load average and the number of runnable tasks right now (including this one)."""
    try:
        parts = Path("/proc/loadavg").read_text().split()
        return float(parts[0]), int(parts[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None, None


def cpu_mhz() -> float | None:
    """Current frequency of the first allowed CPU (cpufreq where exposed, else /proc/cpuinfo's figure)."""
    cpu = allowed_cpus()[0]
    try:
        return float(Path(f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq").read_text()) / 1000
    except (OSError, ValueError):
        pass
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]
        return mhz[cpu] if cpu < len(mhz) else (mhz[0] if mhz else None)
    except (OSError, ValueError):
        return None


@dataclass
class Load:
    """How busy the machine was during a timed block: other processes' CPU use (in cores), steal, load average,
    runnable tasks, frequency; and whether a block that used `threads` cores was contended."""
    seconds: float
    cores: int
    threads: int
    others_cores: float | None
    steal_frac: float | None
    loadavg_1m: float | None
    runnable: int | None
    mhz: float | None
    busy_cores: float | None = None  # every process's CPU use on the allowed cores, this block's own included

    @property
    def contended(self) -> bool:
        over = self.others_cores is not None and self.others_cores > self.cores - self.threads + OTHERS_MARGIN_CORES
        stolen = (self.steal_frac is not None and self.steal_frac > STEAL_LIMIT
                  and self.steal_frac * self.seconds * self.cores >= MIN_STOLEN_S)
        return bool(over or stolen)

    def reason(self) -> str:
        fmt = lambda v, f: "n/a" if v is None else format(v, f)
        return (f"contended: other processes used {fmt(self.others_cores, '.2f')} of {self.cores} cores while this "
                f"{self.threads}-thread timing ran (limit {self.cores - self.threads + OTHERS_MARGIN_CORES:.2f}); "
                f"steal {fmt(self.steal_frac and 100 * self.steal_frac, '.1f')} %, load average "
                f"{fmt(self.loadavg_1m, '.2f')}, {self.seconds:.1f} s")

    def as_dict(self) -> dict:
        return {**asdict(self), "contended": self.contended}


class LoadMonitor:
    """Context manager around a timed block: `.load` says how busy the machine was meanwhile (other processes'
    CPU time from /proc/stat minus this process's own and its waited-for children's, over the block's wall time)."""

    def __init__(self, threads: int = 1):
        self.threads = int(threads)
        self.cpus = allowed_cpus()
        self.load: Load | None = None

    def __enter__(self):
        self._t0, self._own0, self._cpu0 = time.perf_counter(), _own_cpu_s(), _cpu_times(self.cpus)
        return self

    def __exit__(self, *exc):
        wall = max(time.perf_counter() - self._t0, 1e-6)
        cpu1, own = _cpu_times(self.cpus), _own_cpu_s() - self._own0
        others = steal = busy_cores = None
        if self._cpu0 and cpu1:
            busy, st, total = (b - a for a, b in zip(self._cpu0, cpu1))
            others = max(0.0, (busy - own) / wall)
            busy_cores = busy / wall
            steal = st / total if total > 0 else 0.0
        avg, runnable = _loadavg()
        self.load = Load(round(wall, 3), len(self.cpus), self.threads, others, steal, avg, runnable, cpu_mhz(),
                         busy_cores)
        global _LAST_SEEN
        _LAST_SEEN = (time.monotonic(), self.load)


def sample_load(threads: int = 1, seconds: float = 1.0) -> Load:
    """The machine's load over `seconds` of this process sleeping."""
    with LoadMonitor(threads) as mon:
        time.sleep(seconds)
    return mon.load


_LAST_SEEN: tuple[float, Load] | None = None  # when the last watched block (a sample or a timing) ended, and its load


def recently_quiet(threads: int, sample_s: float) -> Load | None:
    """The last watched block's load, if that block lasted at least `sample_s`, ended less than `sample_s` ago and
    would leave a `threads`-thread timing uncontended: as good as a fresh sample, which it saves."""
    if _LAST_SEEN is None:
        return None
    ended, load = _LAST_SEEN
    if time.monotonic() - ended > sample_s or load.seconds < sample_s:
        return None
    as_needed = replace(load, threads=int(threads))
    return None if as_needed.contended else as_needed


def wait_for_quiet(threads: int, timeout_s: float, sample_s: float = 0.5) -> Load:
    """Wait until a `sample_s` sample says a `threads`-thread timing would not be contended; MachineBusy with the
    figures if that has not happened within `timeout_s`. A timing that just ended quiet counts as the sample
    (`recently_quiet`), so back-to-back timings do not each sleep."""
    seen = recently_quiet(threads, sample_s)
    if seen is not None:
        return seen
    deadline = time.monotonic() + timeout_s
    while True:
        load = sample_load(threads, sample_s)
        if not load.contended:
            return load
        if time.monotonic() >= deadline:
            raise MachineBusy(f"the machine stayed busy for {timeout_s:.0f} s (require_quiet): {load.reason()}")


def require_quiet_s() -> float | None:
    """Seconds a benchmark waits for a quiet machine before failing, from TTS_LAB_REQUIRE_QUIET (unset: it does not
    wait, and busy timings are recorded as contended)."""
    value = env.REQUIRE_QUIET.get().strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"TTS_LAB_REQUIRE_QUIET must be a number of seconds, got {value!r}") from None
