"""A bare GPU machine (issue 51 item 7): the GPU entry points import with only what such a machine had (the packages
the recorded H100 run found absent are hidden here, piper-tts and librosa among them) and what the bundle brings
(piper's training code and a librosa stand-in in its site; the wheels, at this machine's versions, stand in as the
installed packages of those versions). Without pydantic, which only a wheel brings, they do not."""
import json
import os
import site
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from lib.jobs import device_launch, device_site

ROOT = Path(__file__).resolve().parent.parent
GPU_ENV = ROOT / "outputs" / "recorded" / "h100" / "05_hardware_benchmark" / "env.json"
ENTRY_POINTS = ("lib.jobs.device_run", "lib.jobs.train_job", "lib.jobs.corpus_job", "lib.cli")
HIDER = '''import importlib.machinery, json, os, sys
_HIDDEN = set(json.loads(os.environ["HIDE_MODULES"]))
_FROM = set(json.loads(os.environ["HIDE_FROM"]))


class _Hide:
    """Top-level modules in _HIDDEN are looked up everywhere but the installed packages' folders."""
    @staticmethod
    def find_spec(name, path=None, target=None):
        if path is not None or name not in _HIDDEN:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, [p for p in sys.path if p not in _FROM])
        if spec is None:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: a bare GPU machine lacks it)", name=name)
        return spec


sys.meta_path.insert(0, _Hide())
'''


def absent_on_the_gpu_machine() -> set[str]:
    """The import names of the distributions the recorded H100 run found absent (its env.json's versions)."""
    absent = {d.lower() for d, v in json.loads(GPU_ENV.read_text())["versions"].items() if v is None}
    return {name for name, dists in metadata.packages_distributions().items()
            if any(d.lower().replace("_", "-") in absent for d in dists)}


def run_hidden(tmp_path: Path, hidden: set[str], *args: str) -> subprocess.CompletedProcess:
    hider = tmp_path / "hider"
    hider.mkdir(exist_ok=True)
    (hider / "sitecustomize.py").write_text(HIDER)
    env = {**os.environ, "PYTHONPATH": str(hider), "HIDE_MODULES": json.dumps(sorted(hidden)),
           "HIDE_FROM": json.dumps(site.getsitepackages())}
    return subprocess.run([sys.executable, "-m", "lib.jobs.device_launch", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_launch_env_puts_the_bundle_first_and_names_it(tmp_path):
    (tmp_path / device_launch.SITE).mkdir()
    got = device_launch.launch_env(tmp_path, tmp_path / "missing", {"PYTHONPATH": "/x", "HOME": "/h"})
    assert got["PYTHONPATH"].split(os.pathsep) == [str(tmp_path / device_launch.SITE), str(ROOT), "/x"]
    assert got["TTS_LAB_TEACHER_BUNDLE"] == str(tmp_path) and got["HOME"] == "/h"


def test_gpu_entry_points_need_only_the_machine_and_the_bundle(tmp_path):
    hidden = absent_on_the_gpu_machine()
    assert {"piper", "librosa"} <= hidden, sorted(hidden)
    bundle = tmp_path / "bundle"
    device_site.write_site(bundle / device_launch.SITE)
    proc = run_hidden(tmp_path, hidden, str(bundle), "--check", *ENTRY_POINTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [ln for ln in proc.stdout.splitlines() if ln.startswith("imports:")] == [
        f"imports: {m}" for m in ENTRY_POINTS]
    # the hider works: piper comes from the bundle's site, and without pydantic (only its wheel brings it) nothing runs
    assert "pydantic" in device_site.BARE_GPU_WHEELS
    failed = run_hidden(tmp_path, hidden | {"pydantic"}, str(bundle), "--check", "lib.jobs.device_run")
    assert failed.returncode != 0 and "No module named 'pydantic' (hidden" in failed.stderr, failed.stderr[-2000:]
    # a module runs by its main(argv), with no __main__ of its own
    helped = run_hidden(tmp_path, hidden, str(bundle), "lib.jobs.device_run", "--help")
    assert helped.returncode == 0 and "device_launch BUNDLE lib.jobs.device_run" in helped.stdout, helped.stderr


def test_the_gpu_run_without_queries_names_the_command_that_writes_them(tmp_path, monkeypatch, capsys):
    from lib.jobs import device_run
    monkeypatch.delenv("TTS_LAB_TEACHER_BUNDLE", raising=False)
    with pytest.raises(SystemExit):
        device_run.main(["--device", "cpu"])
    assert "no query lists at --queries: write them with `tts-lab train bundle --queries" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        device_run.main(["--device", "cpu", "--queries", str(tmp_path / "none.json")])
    assert f"no query lists at {tmp_path / 'none.json'}" in capsys.readouterr().err
