import os
import warnings

# The unit suite acts as an AVX2-only CPU (no AVX-512, VNNI, bf16 or AMX; torch and oneDNN kernels capped at AVX2),
# so a session on a newer CPU proves the older one too; the smoke notebooks (test_notebooks) run on this CPU as it is.
# TTS_LAB_CPU_AS=avx2 runs everything as AVX2-only, TTS_LAB_CPU_AS=native everything as this CPU is.
CPU_AS_ASKED = os.environ.get("TTS_LAB_CPU_AS")
os.environ.setdefault("TTS_LAB_CPU_AS", "avx2")
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
    items[:] = [i for i in items if i not in smoke] + smoke
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
