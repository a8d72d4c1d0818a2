"""The voices and their parts: a front end plus an engine (synth, engine), what a variant is (spec), the PyTorch rebuild
(piper_torch), hub voices, the parts registry by kind, saved parts (artefacts). Imports core and data only."""
import importlib as _importlib

# `from lib.voices import load_voice` keeps working; resolved on first use (PEP 562), so that importing one part
# (lib.voices.spec, lib.voices.artefacts) does not load ONNX Runtime
_NAMES = {"load_voice": "lib.voices.synth"}


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'lib.voices' has no attribute {name!r}")
    return getattr(_importlib.import_module(_NAMES[name]), name)
