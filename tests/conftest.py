import os

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
    # numba's on-disk cache of librosa's kernels (pyin's Viterbi, ...) is one folder beside librosa: two workers
    # writing and reading it at once crashed one (a segfault in librosa.pyin, 2026-11-27); each worker keeps its own
    os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "tts-lab", "numba",
                                                          os.environ["PYTEST_XDIST_WORKER"]))
import lib  # noqa: F401  (applies the kernel caps before torch is imported)

import pytest



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


def run_all(outputs, params_dir=None, profile="smoke", pick=()):
    """./run_all.sh PROFILE [PICK...] into `outputs` with the profiles under `params_dir` (the repository's by
    default): the completed process."""
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    return subprocess.run(["bash", str(root / "run_all.sh"), profile, *pick], cwd=root,
                          env=run_all_env(outputs, params_dir or root / "params"), capture_output=True, text=True,
                          timeout=3000)


# The unit-test files that take longest, longest first (their tests' summed durations in a run of the test command
# on an Intel Xeon with AMX, 2026-11-27), handed out first in xdist workers: the longest files start while the other
# worker runs the notebooks, and the short ones fill the end, so neither worker idles long at the end (in pytest's
# order the 171 s speaker file came among the last). A hint only: a file missing here runs all the same, later.
LONG_FILES = ("test_speaker_adapt.py",  # 171 s
              "test_regress_recipe.py",  # 108 s
              "test_training.py",  # 63 s
              "test_evaluate.py",  # 56 s
              "test_compress.py", "test_own_voice.py", "test_voices.py", "test_train_job.py",  # 23-30 s
              "test_notebook_files.py", "test_metrics.py", "test_frontend_student.py", "test_backends.py",
              "test_artefacts.py", "test_readme.py",  # 14-22 s
              "test_machine.py", "test_pause.py", "test_step_costs.py", "test_istft_decoder.py")  # 6-10 s


def pytest_collection_modifyitems(session, config, items):
    """The order tests are handed out in. In one process the smoke notebooks' tests go last, so the unit tests'
    failures show at once. In xdist workers (--dist loadfile: one worker takes all of tests/test_notebooks.py, so the
    smoke run happens once; --no-loadscope-reorder: files are handed out in this order, not by their number of tests,
    which put the smoke file eighth) the smoke file goes first, then LONG_FILES, so one worker runs the notebooks
    from the start while the other takes the unit tests; either worker's timed blocks stop the other for their length
    (each worker is a lane, lib.core.lanes)."""
    smoke = [i for i in items if "smoke" in getattr(i, "fixturenames", ())]
    rest = [i for i in items if i not in smoke]
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        items[:] = rest + smoke
        return
    smoke_files = {i.path.name for i in smoke}
    rank = {name: n for n, name in enumerate(LONG_FILES)}
    items[:] = smoke + sorted(rest, key=lambda i: (i.path.name not in smoke_files,
                                                   rank.get(i.path.name, len(LONG_FILES))))


WORKER_LANE: list = []  # this xdist worker's lane (lib.core.lanes): a timed block in one worker stops the others


def pytest_configure(config):
    """The lab's known warnings are ignored by name (lib.core.quiet.KNOWN, the one list tts-lab, run_all.sh and the
    notebooks apply); any other shows in the summary. Each xdist worker is a lane of its own: the unit tests share
    the cores, and a timed block in one worker stops the other workers for its length, so no timing is contended."""
    import re
    from lib.core import quiet
    for category, message, _ in quiet.KNOWN:
        config.addinivalue_line("filterwarnings", f"ignore:{re.escape(message)}:{category.__name__}")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not WORKER_LANE:
        from lib.core import lanes
        WORKER_LANE.append(lanes.lane(f"pytest worker {worker}"))
        WORKER_LANE[0].__enter__()


UNIT_NICENESS = 10  # the unit tests' priority beside the smoke notebooks (CFS weight 110 against 1024)
_RENICED: list = []


def pytest_runtest_setup(item):
    """In xdist workers the unit tests yield the cores to the smoke notebooks, the test command's longest lane: the
    first unit test a worker runs lowers that worker's priority (every thread's: Linux keeps a nice value per thread),
    so the notebooks run nearly as fast as alone and the unit tests fill the cores they leave idle. The worker that ran
    the notebooks lowers its own only after them (their tests go first in it). Timed blocks are unaffected: a block
    stops the other lanes for its length, whatever their priority."""
    if _RENICED or not os.environ.get("PYTEST_XDIST_WORKER") or "smoke" in getattr(item, "fixturenames", ()):
        return
    _RENICED.append(True)
    tasks = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for tid in tasks:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < UNIT_NICENESS:
                os.setpriority(os.PRIO_PROCESS, tid, UNIT_NICENESS)
        except OSError:  # a thread that ended meanwhile
            pass


def pytest_runtest_logreport(report):
    """With TTS_LAB_TEST_TIMELINE=FILE, each phase of each test (setup, call, teardown) as one JSON line: the worker,
    the test, the phase and its wall-clock start and stop, to see where the test command's time goes across its
    workers (--durations gives each test's time, not when or where it ran)."""
    path = os.environ.get("TTS_LAB_TEST_TIMELINE")
    if path and getattr(report, "start", None) is not None and not os.environ.get("PYTEST_XDIST_WORKER"):
        import json  # written once, by the controller (xdist hands it each worker's report with its node)
        gateway = getattr(getattr(report, "node", None), "gateway", None)
        line = json.dumps({"worker": gateway.id if gateway else "main", "test": report.nodeid,
                           "when": report.when, "outcome": report.outcome, "start": report.start,
                           "stop": report.stop})
        with open(path, "a") as f:
            f.write(line + "\n")


def pytest_unconfigure(config):
    if WORKER_LANE:
        WORKER_LANE.pop().__exit__(None, None, None)


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
