"""The machine-wide timing lock: a long training run yields the CPU to anything that measures.

Timers (the harness's timed blocks, a pytest session, `tts-lab run`) hold `timing.lock` shared (`fcntl.flock`), so
any number of them can hold it at once, and the kernel drops it when their process dies, however it dies. A
training run registers itself and, between two steps, probes the lock with a non-blocking exclusive flock: while a
timer holds it the probe fails, the run writes `paused` and sleeps until the probe succeeds. A timer that takes the
lock waits until every live run has said `paused`, so no step is in flight while it times. A run writes its state
while it holds the probe, so a timer never reads a stale `paused` of a run that is about to step.

Written here because no library does this: filelock and portalocker give exclusive locks, not a shared lock whose
holders wait for another process's acknowledgement."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
from pathlib import Path

from lib.core import env

ACK_TIMEOUT_S = 900.0  # the longest a timer waits for a run to finish its step (an adversarial step on a slow CPU)
POLL_S = 0.5


def lock_dir() -> Path:
    """Where the lock and the run registry live: TTS_LAB_LOCK_DIR, else a folder of this machine's /tmp."""
    d = Path(env.LOCK_DIR.get() or "/tmp/tts-lab-locks")
    (d / "runs").mkdir(parents=True, exist_ok=True)
    return d


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def runs() -> list[dict]:
    """The registered training runs whose process is still alive, each {'pid', 'name', 'state', 'since'}."""
    out = []
    for f in sorted((lock_dir() / "runs").glob("*.json")):
        try:
            row = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # being written: the next look sees it whole
        if _alive(int(row.get("pid", -1))):
            out.append(row)
        else:
            f.unlink(missing_ok=True)
    return out


_HOLDS: dict[Path, list] = {}  # lock folder -> [file descriptor, depth]: nested timers share one shared hold


@contextlib.contextmanager
def timing(what: str = "a timing", ack_timeout_s: float | None = None):
    """Hold the timing lock around a measurement: every registered run pauses before the block starts. A run that
    has not paused within `ack_timeout_s` is named on stderr and the block goes on (the load monitor then records
    the contention). Re-entrant; a child of a holder holds it shared again at no cost (its runs are already paused)."""
    d = lock_dir()
    if d not in _HOLDS:
        fd = os.open(d / "timing.lock", os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            wait_paused(what, ACK_TIMEOUT_S if ack_timeout_s is None else ack_timeout_s)
        except BaseException:
            os.close(fd)
            raise
        _HOLDS[d] = [fd, 0]
    _HOLDS[d][1] += 1
    try:
        yield
    finally:
        _HOLDS[d][1] -= 1
        if _HOLDS[d][1] == 0:
            os.close(_HOLDS.pop(d)[0])  # closing the descriptor drops the flock


def hold_for_process(what: str) -> None:
    """Hold the lock until this process ends (a notebook's kernel: everything it does may be timed); the kernel
    drops it with the process."""
    d = lock_dir()
    if d not in _HOLDS:
        with timing(what):
            _HOLDS[d][1] += 1  # one hold more than the block releases: kept until the process ends
    elif _HOLDS[d][1] < 10**6:
        _HOLDS[d][1] += 10**6  # already held by a block: keep it past that block's end


def wait_paused(what: str, timeout_s: float) -> list[dict]:
    """Wait until every live run says `paused`; returns the runs still stepping when `timeout_s` ran out."""
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        busy = [r for r in runs() if r.get("state") != "paused" and int(r["pid"]) != os.getpid()]
        if not busy or time.monotonic() >= deadline:
            if busy:
                print(f"pause: {len(busy)} training run(s) did not pause within {timeout_s:.0f} s for {what}: "
                      + ", ".join(f"{r['name']} (pid {r['pid']})" for r in busy), file=sys.stderr, flush=True)
            return busy
        if not told:
            print(f"pause: waiting for {', '.join(r['name'] for r in busy)} to finish its step before {what}",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(0.1)


_ACTIVE: "Yielder | None" = None


def active() -> "Yielder | None":
    """The run this process registered as (a long training job), or None: a notebook's own training never yields,
    since whatever runs the notebook holds the lock."""
    return _ACTIVE


def yield_point() -> None:
    """Where a long run's setup (corpus, targets, refit) may pause too: a no-op in a process that is no run."""
    if _ACTIVE is not None:
        _ACTIVE.between_steps()


AUTOGROUP = Path("/proc/self/autogroup")


def lowest_priority(autogroup: Path = AUTOGROUP) -> None:
    """Where this process leads its own session (started with `setsid`, as the long runs are), give its session's
    scheduling group nice 19 as well: with Linux's autogroup, nice orders processes only within a session, so a
    `nice -n 19 setsid` run would otherwise share the CPU equally with an interactive session's work. Elsewhere (a
    test that trains in pytest's session) nothing changes. `autogroup` is the kernel's file (a test gives another)."""
    if os.getsid(0) != os.getpid() or not autogroup.exists():
        return
    try:
        autogroup.write_text("19")
    except OSError:  # not permitted here: the process's own nice still holds within its session
        pass


class Yielder:
    """A training run's side: `register()` once (the process's `active()` run from then on), then `between_steps()`
    before every step; it returns the seconds the run spent paused (which are not training time). `close()`
    unregisters; a run whose process died is dropped by the next look at the registry."""

    def __init__(self, name: str):
        self.name = name
        self.path = lock_dir() / "runs" / f"{os.getpid()}.json"
        self.paused_s = 0.0
        self.pauses = 0

    def _write(self, state: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "name": self.name, "state": state, "since": time.time()}))
        tmp.replace(self.path)

    def register(self) -> "Yielder":
        global _ACTIVE
        lowest_priority()
        self._fd = os.open(lock_dir() / "timing.lock", os.O_RDWR | os.O_CREAT, 0o666)
        self._write("running")
        _ACTIVE = self
        return self

    def _probe(self) -> bool:
        """True (and the state written as running) when no timer holds the lock. A run never waits for its own
        process's hold (a test that trains while the session holds the lock)."""
        if self.path.parent.parent in _HOLDS:
            return True
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            self._write("running")
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        return True

    def between_steps(self) -> float:
        if self._probe():
            return 0.0
        self._write("paused")
        t0 = time.monotonic()
        print(f"pause: {self.name} paused for a timing", file=sys.stderr, flush=True)
        while not self._probe():
            time.sleep(POLL_S)
        waited = time.monotonic() - t0
        self.paused_s += waited
        self.pauses += 1
        print(f"pause: {self.name} resumed after {waited:.0f} s", file=sys.stderr, flush=True)
        return waited

    def close(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        self.path.unlink(missing_ok=True)
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.register()

    def __exit__(self, *exc):
        self.close()
