import os
import warnings

# The unit suite acts as an AVX2-only CPU (no AVX-512, VNNI, bf16 or AMX; torch and oneDNN kernels capped at AVX2),
# so a session on a newer CPU proves the older one too; the smoke notebooks (test_notebooks) run on this CPU as it is.
# TTS_LAB_CPU_AS=avx2 runs everything as AVX2-only, TTS_LAB_CPU_AS=native everything as this CPU is.
CPU_AS_ASKED = os.environ.get("TTS_LAB_CPU_AS")
os.environ.setdefault("TTS_LAB_CPU_AS", "avx2")
# The suite runs in two xdist workers on 2 cores (pyproject's addopts): idle OpenMP and ONNX Runtime threads sleep
# instead of spinning, or two workers' spinning threads take the cores from each other's work (units: 680 s in one
# process, 14.5 min in two that spun, 522 s in two that slept; AMD EPYC family 23, AVX2 only).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import lib  # noqa: E402  (applies the kernel caps before torch is imported)

import pytest  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)


def notebook_env() -> dict:
    """The environment the smoke notebooks run in: this CPU as it is, unless TTS_LAB_CPU_AS was given."""
    from lib.core import machine
    env = {k: v for k, v in os.environ.items() if k not in machine.KERNEL_CAPS_SET or CPU_AS_ASKED}
    env["TTS_LAB_CPU_AS"] = CPU_AS_ASKED or "native"
    return env


def run_all_env(outputs, params_dir) -> dict:
    """run_all.sh's environment for the smoke notebooks: timings on a busy machine are waited for and repeated
    (require_quiet), so the tests' bounds judge numbers."""
    import sys
    from pathlib import Path
    return {**notebook_env(), "TTS_LAB_OUTPUTS": str(outputs), "TTS_LAB_PARAMS": str(params_dir),
            "TTS_LAB_REQUIRE_QUIET": "120", "PYTHON": sys.executable,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}


SMOKE_BESIDE: dict = {}  # the smoke notebooks started beside the unit tests: {'proc', 'outputs', 'log'}


def pytest_collection_modifyitems(session, config, items):
    """The tests of the smoke notebooks go last. With TTS_LAB_SMOKE_BESIDE=1 the notebooks start at once, in a lane
    of their own beside the unit tests (lib.core.lanes): either side's timed blocks stop the other for their length, so
    no timing is contended while the two share the cores. Off by default: on 2 cores it was slower (pytest 1,097 s
    against 318 + 515 s one after the other, AMD EPYC Zen 4), since a lane stopped for the other's timings idles a
    core, and most of the smoke notebooks' time is timed."""
    smoke = [i for i in items if "smoke" in getattr(i, "fixturenames", ())]
    if not smoke:
        return
    # one process: the unit tests first, so their failures show at once; xdist workers (--dist loadfile: one worker
    # runs all of tests/test_notebooks.py, so the smoke run happens once): the smoke notebooks first, so one worker
    # runs them while the other takes the unit tests, and both cores work from the start
    rest = [i for i in items if i not in smoke]
    items[:] = smoke + rest if os.environ.get("PYTEST_XDIST_WORKER") else rest + smoke
    if os.environ.get("TTS_LAB_SMOKE_BESIDE", "0") != "1" or len(smoke) == len(items) or SMOKE_BESIDE:
        return
    import subprocess
    import sys
    import tempfile
    from pathlib import Path
    from lib.core import lanes
    root = Path(__file__).resolve().parent.parent
    outputs = Path(tempfile.mkdtemp(prefix="tts-lab-smoke-"))
    log = (outputs / "run_all.log").open("w")
    SMOKE_BESIDE["lane"] = lanes.lane("the unit tests")
    SMOKE_BESIDE["lane"].__enter__()
    SMOKE_BESIDE.update(outputs=outputs, log=log, proc=subprocess.Popen(
        [sys.executable, "-m", "lib.core.lanes", "run", "--", "bash", str(root / "run_all.sh"), "smoke"], cwd=root,
        env=run_all_env(outputs, root / "params"), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))


WORKER_LANE: list = []  # this xdist worker's lane (lib.core.lanes): a timed block in one worker stops the others


def pytest_configure(config):
    """Each xdist worker is a lane of its own: the unit tests share the cores, and a timed block in one worker stops
    the other workers for its length, so no timing is contended."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not WORKER_LANE:
        from lib.core import lanes
        WORKER_LANE.append(lanes.lane(f"pytest worker {worker}"))
        WORKER_LANE[0].__enter__()


def pytest_unconfigure(config):
    if WORKER_LANE:
        WORKER_LANE.pop().__exit__(None, None, None)


def pytest_sessionfinish(session, exitstatus):
    """A session that ends before its smoke notebooks did (a failure with -x, ^C) stops them."""
    proc = SMOKE_BESIDE.get("proc")
    if proc is not None and proc.poll() is None:
        import psutil
        tree = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
    if "lane" in SMOKE_BESIDE:
        SMOKE_BESIDE.pop("lane").__exit__(None, None, None)


@pytest.fixture(scope="session", autouse=True)
def _training_runs_pause():
    """Long training runs on this machine (lib.core.pause) wait while the tests run, so no timing here is contended."""
    from lib.core import pause
    with pause.timing("the tests"):
        yield


@pytest.fixture(scope="session")
def ort_voice():
    from lib.voices import synth as voices
    return voices.load_voice(backend="ort-cpu", threads=2)


@pytest.fixture(scope="session")
def quiet_voices():
    """ONNX Runtime and PyTorch voices with sampling noise and peak normalisation off (deterministic)."""
    from lib.voices import synth as voices
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    return voices.load_voice(backend="ort-cpu", **q), voices.load_voice(backend="torch-cpu", **q)


@pytest.fixture(scope="session")
def sample_clip(ort_voice):
    text = "The birch canoe slid on the smooth planks."
    return text, ort_voice.synthesize(text)
