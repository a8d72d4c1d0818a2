"""Where a notebook's wall time goes, by the kind of work an estimate scales separately (issue 51 item 6): judging
(Whisper, DNSMOS, Distill-MOS, the SECS encoder) and PyTorch training do not follow the voice's ONNX Runtime RTF.
A process-wide tally in seconds; the writer puts it in metrics.json and run_all.sh keeps it per notebook.
Written here because no library keeps a nested-safe wall-clock tally by label (a profiler samples, it does not add)."""
from __future__ import annotations

import contextlib
import threading
import time

JUDGE, TRAIN = "judge", "train"  # what is not tallied is the rest, which scales with ONNX Runtime's RTF
KINDS = (JUDGE, TRAIN)

_SECONDS: dict[str, float] = {}
_OPEN: dict[str, int] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def spent(kind: str):
    """Add the block's wall time to `kind`; a block inside another of the same kind adds nothing of its own, and
    one inside a block of another kind is taken out of that one (each second counts once)."""
    if kind not in KINDS:
        raise ValueError(f"worktime kind {kind!r} is not one of {KINDS}")
    with _LOCK:
        outer = _OPEN.get(kind, 0) == 0
        others = [k for k, n in _OPEN.items() if n and k != kind]
        _OPEN[kind] = _OPEN.get(kind, 0) + 1
    start = time.perf_counter()
    try:
        yield
    finally:
        took = time.perf_counter() - start
        with _LOCK:
            _OPEN[kind] -= 1
            if outer:
                _SECONDS[kind] = _SECONDS.get(kind, 0.0) + took
                for k in others:  # the enclosing kind's block ends later and counts this time: take it back
                    _SECONDS[k] = _SECONDS.get(k, 0.0) - took


def snapshot() -> dict[str, float]:
    """Seconds per kind tallied in this process so far (kinds with none left out)."""
    with _LOCK:
        return {k: round(v, 2) for k, v in _SECONDS.items() if v}


def reset() -> None:
    with _LOCK:
        _SECONDS.clear()
        _OPEN.clear()
