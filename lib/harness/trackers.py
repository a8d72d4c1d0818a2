"""Trackers: what runs beside a measured block and knows no model. One background sampler thread, and on it the
peak resident memory and the utilisation and energy counters; the watch that waits for a quiet machine, pauses
the long runs and records the machine's load during a timing."""
from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from lib.core import lanes, machine, pause

RAPL = Path("/sys/class/powercap/intel-rapl:0/energy_uj")
QUIET_RETRIES = 5  # with TTS_LAB_REQUIRE_QUIET, a contended timing is repeated this many times before it fails
# (a hypervisor steals in bursts: on a 2-core VM, 5-9 % of short blocks for minutes at a time on 2026-11-27)


class Sampler:
    """A context manager that calls `sample()` every `interval_s` on one background thread while its block runs
    (`prime()` first, on that thread), with `begin()` at entry and `end()` at exit."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self._stop = threading.Event()

    def begin(self) -> None:
        """At entry, before the thread starts."""

    def prime(self) -> None:
        """On the sampling thread, before its first sample."""

    def sample(self) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """At exit, after the thread stopped."""

    def _loop(self):
        self.prime()
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self):
        self.begin()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.end()


class PeakRss(Sampler):
    """This process's resident memory sampled every few ms; `.peak_mb` is the peak seen."""

    def __init__(self, interval_s: float = 0.005):
        super().__init__(interval_s)
        self._proc = psutil.Process()
        self.peak_mb = 0.0

    def sample(self):
        self.peak_mb = max(self.peak_mb, self._proc.memory_info().rss / 2**20)

    begin = end = sample


def rapl_status() -> tuple[bool, str]:
    if not RAPL.exists():
        return False, f"no RAPL counters ({RAPL.parent} does not exist on this machine)"
    try:
        int(RAPL.read_text())
    except (OSError, ValueError) as exc:
        return False, f"RAPL counter not readable: {exc}"
    return True, ""


def _nvml():
    """The pynvml module, initialised (deferred: nvidia-ml-py is optional and only answers on an NVIDIA machine)."""
    import pynvml
    pynvml.nvmlInit()
    return pynvml


def nvml_status() -> tuple[bool, str]:
    try:
        nvml = _nvml()
        nvml.nvmlDeviceGetTotalEnergyConsumption(nvml.nvmlDeviceGetHandleByIndex(0))
        return True, ""
    except ImportError:
        return False, "nvidia-ml-py (pynvml) is not installed"
    except Exception as exc:
        return False, f"NVML unavailable: {type(exc).__name__}: {exc}"


class Monitor(Sampler):
    """CPU utilisation (psutil) and, where NVML answers, GPU utilisation and memory every `interval_s`; the energy
    counters (NVML total energy, RAPL package energy) read at entry and exit. Counters only: no estimate is mixed in."""

    def __init__(self, interval_s: float = 0.05):
        super().__init__(interval_s)
        self.cpu, self.gpu, self.gpu_mem = [], [], []
        self.nvml_ok, self.nvml_reason = nvml_status()
        self.rapl_ok, self.rapl_reason = rapl_status()
        self._gpu = _nvml().nvmlDeviceGetHandleByIndex(0) if self.nvml_ok else None

    def _energy(self) -> dict:
        out = {}
        if self._gpu is not None:
            out["gpu_mj"] = _nvml().nvmlDeviceGetTotalEnergyConsumption(self._gpu)
        if self.rapl_ok:
            out["cpu_uj"] = int(RAPL.read_text())
        return out

    def begin(self):
        self._e0, self._t0 = self._energy(), time.perf_counter()

    def prime(self):
        psutil.cpu_percent(None)  # psutil keeps the last reading per thread: the first one here starts the count

    def sample(self):
        self.cpu.append(psutil.cpu_percent(None))
        if self._gpu is not None:
            nvml = _nvml()
            self.gpu.append(nvml.nvmlDeviceGetUtilizationRates(self._gpu).gpu)
            self.gpu_mem.append(nvml.nvmlDeviceGetMemoryInfo(self._gpu).used / 2**20)

    def end(self):
        self.seconds = time.perf_counter() - self._t0
        e1 = self._energy()
        self.gpu_j = (e1["gpu_mj"] - self._e0["gpu_mj"]) / 1e3 if "gpu_mj" in e1 else None
        self.cpu_j = (e1["cpu_uj"] - self._e0["cpu_uj"]) / 1e6 if "cpu_uj" in e1 else None

    def summary(self) -> dict:
        return {"cpu_util_pct": float(np.mean(self.cpu)) if self.cpu else None,
                "gpu_util_pct": float(np.mean(self.gpu)) if self.gpu else None,
                "gpu_mem_used_mb": float(np.max(self.gpu_mem)) if self.gpu_mem else None,
                "gpu_energy_j": self.gpu_j, "cpu_energy_j": self.cpu_j, "seconds": self.seconds}


class Watched:
    """Around a timed block: with TTS_LAB_REQUIRE_QUIET, wait for a quiet machine first (else MachineBusy); record the
    machine's load during the block in `.load`. `with Watched(n):` also fails a block that turned out contended
    under require_quiet; `monitoring()` only records (the timing loop retries instead)."""

    def __init__(self, threads: int = 1):
        self.threads, self.quiet_s, self.load = int(threads or 1), machine.require_quiet_s(), None

    @contextlib.contextmanager
    def monitoring(self):
        # long training runs on this machine wait until the block is done; lanes beside this one stop for it
        with pause.timing("a timing"), lanes.turn():
            if self.quiet_s is not None:
                machine.wait_for_quiet(self.threads, self.quiet_s)
            with machine.LoadMonitor(self.threads) as mon:
                yield self
            self.load = mon.load

    def run(self, block):
        """`block()` watched, its result returned; under require_quiet a contended block runs again, up to
        QUIET_RETRIES more times, before MachineBusy (a burst of stolen time fails no notebook). `.load` is the
        last attempt's."""
        for _ in range(1 + (QUIET_RETRIES if self.quiet_s is not None else 0)):
            with self.monitoring():
                result = block()
            if self.quiet_s is None or not self.load.contended:
                return result
        raise machine.MachineBusy(f"every attempt at this timing was contended (require_quiet, {QUIET_RETRIES + 1} "
                                  f"tries): {self.load.reason()}")

    def __enter__(self):
        self._cm = self.monitoring()
        return self._cm.__enter__()

    def __exit__(self, exc_type, *exc):
        self._cm.__exit__(exc_type, *exc)
        if exc_type is None and self.quiet_s is not None and self.load.contended:
            raise machine.MachineBusy(f"the machine got busy during a timing (require_quiet): {self.load.reason()}")

    def status(self) -> dict:
        """Row keys for what the block measured: status 'contended' with the figures, or nothing when it was quiet."""
        return (dict(status="contended", reason=self.load.reason())
                if self.load is not None and self.load.contended else {})
