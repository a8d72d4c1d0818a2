"""A run on a lent GPU machine, from a bundle `tts-lab train bundle --bare-gpu` wrote here. That machine has PyTorch,
no registry and none of this project's packages, so this module needs only the standard library: it installs the
bundle's wheels into a folder of their own, puts the bundle's site (piper's training code, a librosa stand-in), those
wheels and the repository first on PYTHONPATH, names the bundle as the teacher, and runs the module asked for:

    python3 -m lib.jobs.device_launch .devrun lib.jobs.device_run --profile h100 --bnb
    python3 -m lib.jobs.device_launch .devrun --check lib.jobs.device_run lib.jobs.train_job lib.jobs.corpus_job

`--check` imports the modules and runs nothing: whether the machine has what they need, before its minutes go."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from lib.core import env

_LOGGER = logging.getLogger(__name__)

SITE, WHEELS, QUERIES = "site", "wheels", "queries.json"  # a bundle's parts for a bare GPU machine
ROOT = Path(__file__).resolve().parents[2]


def launch_env(bundle: Path, installed: Path | None, base: dict[str, str]) -> dict[str, str]:
    """`base` with the bundle named as the teacher and its site, the installed wheels and the repository first on
    PYTHONPATH (before whatever it held)."""
    first = [str(p) for p in (bundle / SITE, installed) if p is not None and p.is_dir()] + [str(ROOT)]
    rest = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**base, env.TEACHER_BUNDLE.name: str(bundle), "PYTHONPATH": os.pathsep.join(first + rest),
            "PYTHONUNBUFFERED": "1"}


def install_wheels(bundle: Path, target: Path) -> Path | None:
    """The bundle's wheels installed into `target` without the registry or their dependencies (each one they need is
    a wheel beside them or in the image); None where the bundle carries none."""
    wheels = sorted((bundle / WHEELS).glob("*.whl"))
    if not wheels:
        _LOGGER.warning("%s holds no wheels: the machine's own packages must do", bundle / WHEELS)
        return None
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)], check=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Install, set the paths, then run one module with its arguments, or (--check) import every module named."""
    ap = argparse.ArgumentParser(prog="python3 -m lib.jobs.device_launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="the folder `tts-lab train bundle --bare-gpu --out` wrote")
    ap.add_argument("module", help="the module to run (lib.jobs.device_run, lib.jobs.train_job, lib.jobs.corpus_job)")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="its arguments; with --check, more modules to import")
    ap.add_argument("--check", action="store_true", help="import the modules and run nothing")
    ap.add_argument("--target", type=Path, default=Path("/tmp/tts-lab-site"), help="where the wheels are installed")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    bundle = a.bundle.resolve()
    if not bundle.is_dir():
        ap.error(f"bundle {a.bundle} is not a folder (write it with `tts-lab train bundle --bare-gpu --out ...`)")
    run_env = launch_env(bundle, install_wheels(bundle, a.target), dict(os.environ))
    if a.check:
        code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n    print('imports:', m)"
        return subprocess.run([sys.executable, "-c", code, a.module, *a.args], env=run_env, cwd=ROOT).returncode
    # the module's main(argv) in a fresh process with the paths set: the modules keep no __main__ of their own
    code = "import importlib, sys\nsys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))"
    return subprocess.run([sys.executable, "-c", code, a.module, *a.args], env=run_env, cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
