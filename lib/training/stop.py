"""A long run stopped by a signal checkpoints first: the flag the training loop checks between steps."""
import signal
import threading
from contextlib import contextmanager


@contextmanager
def stop_on_signal():
    """{'signum': N} once SIGTERM or SIGINT arrives, so that the loop can checkpoint before it stops; the handlers
    before are put back after. Outside the main thread (where Python allows no handler) it never fills."""
    stop: dict = {}
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in before:
        signal.signal(sig, lambda signum, frame: stop.setdefault("signum", signum))
    try:
        yield stop
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
