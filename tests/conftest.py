import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(scope="session", autouse=True)
def _training_runs_pause():
    """Long training runs on this machine (lib.pause) wait while the tests run, so no timing here is contended."""
    from lib import pause
    with pause.timing("the tests"):
        yield


@pytest.fixture(scope="session")
def ort_voice():
    from lib import voices
    return voices.load_voice(backend="ort-cpu", threads=2)


@pytest.fixture(scope="session")
def quiet_voices():
    """ONNX Runtime and PyTorch voices with sampling noise and peak normalisation off (deterministic)."""
    from lib import voices
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    return voices.load_voice(backend="ort-cpu", **q), voices.load_voice(backend="torch-cpu", **q)


@pytest.fixture(scope="session")
def sample_clip(ort_voice):
    text = "The birch canoe slid on the smooth planks."
    return text, ort_voice.synthesize(text)
