"""Lanes: jobs that share the machine side by side (the unit tests and the smoke notebooks of the test command) and
take turns only while one of them times something. A lane is a registered process and everything it starts. A timed
block (`harness.bench.Watched`) in one lane takes `measure.lock` exclusively, so two lanes never time at once, and stops
every other lane's processes (SIGSTOP) until the block ends (SIGCONT): a stopped process uses no CPU, so the timing is
as uncontended as on an idle machine, whatever the other lane was doing, untimed, at that moment.

Written here because no library pauses another process tree for the length of a block; psutil walks the trees."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
from pathlib import Path

from lib.core import env

HOLDER_ENV = env.MEASURING.name  # set while a process times: its children (a fresh process measured) time freely


def _dir() -> Path:
    from .pause import lock_dir
    d = lock_dir() / "lanes"
    d.mkdir(parents=True, exist_ok=True)
    return d


def roots() -> list[int]:
    """The live lanes' root processes."""
    import psutil
    out = []
    for f in sorted(_dir().glob("*.json")):
        try:
            pid = int(json.loads(f.read_text())["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if psutil.pid_exists(pid):
            out.append(pid)
        else:
            f.unlink(missing_ok=True)
    return out


@contextlib.contextmanager
def lane(name: str):
    """Register this process (and what it starts) as a lane for the block; a no-op where it already is one."""
    path = _dir() / f"{os.getpid()}.json"
    if path.exists():
        yield
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "name": name}))
    tmp.replace(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def others(me: int | None = None) -> list:
    """The processes of every lane but `me`'s own (`me` itself if registered, else its nearest registered ancestor):
    each other lane's root and descendants, not entering a nested lane. `me`, its descendants in its own lane and its
    ancestors up to its lane's root are spared; an ancestor above that root belongs to another lane and is stopped."""
    import psutil
    me = os.getpid() if me is None else me
    lane_roots = set(roots())
    try:
        mine = psutil.Process(me)
        own_root = _nearest(mine, lane_roots)
        spare = {p.pid for p in _tree(mine, lane_roots)}
        for p in mine.parents():
            if own_root is None or p.pid == own_root:
                break
            spare.add(p.pid)
    except psutil.NoSuchProcess:
        return []
    out = []
    for root in lane_roots - {own_root, me}:
        try:
            out += [p for p in _tree(psutil.Process(root), lane_roots) if p.pid not in spare]
        except psutil.NoSuchProcess:
            continue
    return out


def _tree(proc, lane_roots: set[int]) -> list:
    """`proc` and its descendants, not entering a nested lane."""
    import psutil
    tree, stack = [proc], [proc]
    while stack:
        try:
            children = stack.pop().children()
        except psutil.NoSuchProcess:
            continue
        for c in children:
            if c.pid not in lane_roots:
                tree.append(c)
                stack.append(c)
    return tree


def _nearest(proc, lane_roots: set[int]) -> int | None:
    """`proc`'s own lane: itself if registered, else its nearest registered ancestor."""
    if proc.pid in lane_roots:
        return proc.pid
    return next((p.pid for p in proc.parents() if p.pid in lane_roots), None)


_HELD: list = []  # [descriptor, stopped processes, depth] while this process times


@contextlib.contextmanager
def turn():
    """Around a timed block: when other lanes exist, take the measuring turn (waiting for another lane's block to
    end) and stop them until the outermost block ends. Costs nothing with no other lane, and in a child of a process
    that is timing (it would wait on its own parent)."""
    if _HELD:
        _HELD[2] += 1
    elif not os.environ.get(HOLDER_ENV) and len(roots()) >= 2:
        from .pause import lock_dir
        fd = os.open(lock_dir() / "measure.lock", os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        stopped = []
        for p in others():
            with contextlib.suppress(Exception):
                p.send_signal(signal.SIGSTOP)
                stopped.append(p)
        os.environ[HOLDER_ENV] = str(os.getpid())
        _HELD.extend([fd, stopped, 1])
    try:
        yield
    finally:
        if _HELD:
            _HELD[2] -= 1
            if _HELD[2] == 0:
                fd, stopped, _ = _HELD
                _HELD.clear()
                os.environ.pop(HOLDER_ENV, None)
                for p in stopped:
                    with contextlib.suppress(Exception):
                        p.send_signal(signal.SIGCONT)
                os.close(fd)
