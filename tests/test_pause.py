"""A long training run pauses while anything is timed, and resumes after (lib.core.pause)."""
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.core import pause

ROOT = Path(__file__).resolve().parent.parent
TTS_LAB = str(Path(sys.executable).parent / "tts-lab")  # the entry point setup.sh installs beside python

# A stand-in for a training run: registers, then counts "steps" of 50 ms, each written to a file.
FAKE_RUN = """
import sys, time
from pathlib import Path
from lib.core import pause
out = Path(sys.argv[1])
y = pause.Yielder("fake-run").register()
n = 0
while True:
    y.between_steps()
    time.sleep(0.05)
    n += 1
    out.write_text(f"{n} {y.paused_s:.3f}")
"""


@pytest.fixture
def locks(tmp_path, monkeypatch):
    monkeypatch.setenv("TTS_LAB_LOCK_DIR", str(tmp_path / "locks"))
    return tmp_path / "locks"


def _steps(path: Path) -> tuple[int, float]:
    for _ in range(100):
        try:
            n, paused = path.read_text().split()
            return int(n), float(paused)
        except (OSError, ValueError):
            time.sleep(0.02)
    raise AssertionError(f"the fake run wrote nothing readable to {path}")


def _stepped_past(path: Path, n: int, timeout_s: float = 30.0) -> tuple[int, float]:
    """The run's count once it exceeds `n`, or its last count after `timeout_s`. Polls rather than sleeping a fixed
    time: in the test command a timed block of the smoke lane may SIGSTOP this lane (this test and its fake run) for
    seconds, and a fixed sleep then ends before the resumed run has had a turn."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = _steps(path)
        if got[0] > n or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def _start_run(tmp_path, locks):
    out = tmp_path / "steps.txt"
    proc = subprocess.Popen([sys.executable, "-c", FAKE_RUN, str(out)], cwd=ROOT,
                            env={**os.environ, "TTS_LAB_LOCK_DIR": str(locks)})
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists(), "the fake run never stepped"
    return proc, out


def test_a_run_pauses_while_a_timing_holds_the_lock_and_resumes_after(tmp_path, locks):
    proc, out = _start_run(tmp_path, locks)
    try:
        assert [r["name"] for r in pause.runs()] == ["fake-run"]
        with pause.timing("a test timing", ack_timeout_s=30):
            assert [r["state"] for r in pause.runs()] == ["paused"], "the timer waited for the run to pause"
            before, _ = _steps(out)
            time.sleep(1.0)
            held, _ = _steps(out)
            assert held == before, f"the run stepped {held - before} times while the lock was held"
        after, paused = _stepped_past(out, held)
        assert after > held, "the run did not resume once the lock was released"
        assert paused >= 0.9, f"the run counted {paused} s paused, though it waited over a second"
    finally:
        proc.kill()
        proc.wait()


def test_the_hold_command_pauses_runs_for_a_whole_command_and_a_killed_holder_frees_them(tmp_path, locks):
    """`tts-lab lab hold -- CMD` holds the lock while CMD runs (as `tts-lab run` does in-process); the kernel drops the
    lock of a holder that is killed, so a crashed timer can never leave a run paused for ever."""
    proc, out = _start_run(tmp_path, locks)
    env = {**os.environ, "TTS_LAB_LOCK_DIR": str(locks)}
    try:
        holder = subprocess.Popen([TTS_LAB, "lab", "hold", "--", "sleep", "30"],
                                  cwd=ROOT, env=env)
        deadline = time.monotonic() + 30
        while [r["state"] for r in pause.runs()] != ["paused"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r["state"] for r in pause.runs()] == ["paused"]
        before, _ = _steps(out)
        time.sleep(1.0)
        assert _steps(out)[0] == before, "the run stepped while the hold command ran"
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert _stepped_past(out, before)[0] > before, "the run stayed paused after its holder was killed"
    finally:
        proc.kill()
        proc.wait()
    assert pause.runs() == [], "a dead run is dropped from the registry"


def test_a_timing_goes_on_when_a_run_does_not_pause_and_says_which(locks, capsys):
    """A registered run that never reaches its next step (stuck) does not hang a timing for ever."""
    (locks / "runs").mkdir(parents=True, exist_ok=True)
    (locks / "runs" / f"{os.getppid()}.json").write_text(
        f'{{"pid": {os.getppid()}, "name": "stuck-run", "state": "running", "since": 0}}')
    t0 = time.monotonic()
    with pause.timing("a test timing", ack_timeout_s=0.5):
        pass
    assert time.monotonic() - t0 < 5
    assert "stuck-run" in capsys.readouterr().err


def test_the_trainer_does_not_count_paused_time_as_training_time(tmp_path):
    import numpy as np
    import torch
    from lib.training.loop import Recipe, Trainer

    class SlowYielder:  # pauses 0.3 s before every step, as if a timing ran each time
        def between_steps(self):
            time.sleep(0.3)
            return 0.3

    net = torch.nn.Linear(4, 1)
    batch_fn = lambda rng: (torch.tensor(rng.standard_normal((8, 4)), dtype=torch.float32),)
    loss_fn = lambda gen, batch: gen(batch[0]).pow(2).mean()
    t0 = time.perf_counter()
    curve = Trainer(net, batch_fn, Recipe(steps=6, log_every=1, checkpoint_every=100), tmp_path / "run",
                    loss_fn=loss_fn, progress=None, yielder=SlowYielder()).fit()
    wall = time.perf_counter() - t0
    assert curve.steps_done == 6 and wall >= 1.8
    assert curve.seconds < wall - 1.5, f"{curve.seconds:.2f} s of training counted, {wall:.2f} s wall with 1.8 s paused"
    assert np.isfinite(curve.frame["loss_g"]).all()


def test_a_timed_block_stops_the_other_lane_for_its_length_and_only_then(tmp_path, monkeypatch):
    """The test command's unit tests and smoke notebooks share the cores as two lanes (lib.core.lanes): a timed block in
    one stops the other, which gets no CPU until the block ends and then goes on; a child of the timing process
    times freely (it would otherwise wait on its own parent), and with one lane nothing is stopped."""
    import psutil
    from lib.core import lanes
    from lib.harness import bench
    monkeypatch.setenv("TTS_LAB_LOCK_DIR", str(tmp_path))  # a registry of its own: the real lanes are not touched
    env = {**os.environ, "TTS_LAB_LOCK_DIR": str(tmp_path)}
    # The other lane starts detached (its shell exits, so it is not in pytest's tree): the test command's own lanes
    # stop and continue pytest's whole tree, and would otherwise continue the spinner this test has stopped.
    spin = f"{TTS_LAB} lab lane -- {sys.executable} -c 'while True: pass'"
    launched = subprocess.run(["sh", "-c", f"{spin} >/dev/null 2>&1 & echo $!"], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=30, start_new_session=True)
    assert launched.stdout.strip().isdigit(), f"the other lane did not start: {launched.stderr}"
    other = psutil.Process(int(launched.stdout.strip()))
    group = os.getpgid(other.pid)  # the shell's new session: the lane and its spinner, killed together at the end
    try:
        assert other.pid not in {p.pid for p in psutil.Process().children(recursive=True)}
        deadline = time.monotonic() + 30
        while other.pid not in lanes.roots() or not other.children():
            assert time.monotonic() < deadline, "the other lane never registered"
            time.sleep(0.1)
        spinner = other.children()[0]
        with bench.Watched(1):  # one lane only (the other): nothing stops
            time.sleep(0.3)
            assert spinner.status() != psutil.STATUS_STOPPED
        with lanes.lane("this test"):
            with bench.Watched(1):
                time.sleep(0.2)
                used = sum(spinner.cpu_times()[:2])
                time.sleep(1.0)
                assert spinner.status() == psutil.STATUS_STOPPED
                assert sum(spinner.cpu_times()[:2]) - used < 0.05, "the other lane kept running while this one timed"
                child = subprocess.run([sys.executable, "-c",
                                        "from lib.core import lanes\nwith lanes.turn(): print('timed')"],
                                       env={**env, **{lanes.HOLDER_ENV: os.environ[lanes.HOLDER_ENV]}}, cwd=ROOT,
                                       capture_output=True, text=True, timeout=60)
                assert child.stdout.strip() == "timed"
            used = sum(spinner.cpu_times()[:2])
            deadline = time.monotonic() + 30  # polled: the test command's smoke lane may stop this lane for a while
            while sum(spinner.cpu_times()[:2]) - used <= 0.3 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert spinner.status() != psutil.STATUS_STOPPED and sum(spinner.cpu_times()[:2]) - used > 0.3
        assert lanes.HOLDER_ENV not in os.environ
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def test_a_run_that_leads_its_session_lowers_its_sessions_group_and_no_other(tmp_path):
    """Under Linux's autogroup, nice orders processes only within a session: a long run started with setsid gives
    its own session's group nice 19 (else it shares the CPU equally with an interactive session); a process inside
    another session (pytest's, say) leaves that session's group as it was. The kernel's file is stood in for by one
    of the test's, so the check holds where /proc/self/autogroup is absent or unreadable (a sandboxed CI)."""
    def run(group: Path, **kw) -> str:
        group.write_text("0")
        code = f"from pathlib import Path; from lib.core import pause; pause.lowest_priority(Path({str(group)!r}))"
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, **kw)
        return group.read_text()

    assert run(tmp_path / "led", start_new_session=True) == "19"
    assert run(tmp_path / "inside") == "0"
