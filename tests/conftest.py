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
