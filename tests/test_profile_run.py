"""`tts-lab run` owns the run (issue 70 item 1): its stages are chosen by number, resumed and skipped; what cannot
start is refused with what exists; the kernels' start notice is filtered from what it relays; and no logic is left in
shell (run_all.sh execs it) nor in modules' own `__main__`. The runs themselves: the smoke fixture (test_notebooks)
and the copied profile (test_notebook_files) go through run_all.sh, hence through this."""
import io
import os
import re
from pathlib import Path

import pytest

from lib.pipeline import profile_run

ROOT = Path(__file__).resolve().parent.parent


def names(plan) -> list[str]:
    return [p.name[:2] for p in plan.notebooks]


def test_stages_are_picked_resumed_and_skipped_by_number():
    every = names(profile_run.plan("smoke"))
    assert every[:3] == ["00", "01", "02"] and every[-1] == "90" and len(every) >= 8
    assert not profile_run.plan("smoke").picked
    assert names(profile_run.plan("smoke", only=["02", "90"])) == ["02", "90"]
    resumed = profile_run.plan("smoke", start="05")
    assert names(resumed) == [n for n in every if n >= "05"] and resumed.picked
    assert names(profile_run.plan("smoke", start="03", skip=["04", "90"])) == [
        n for n in every if n >= "03" and n not in ("04", "90")]
    assert profile_run.plan("smoke", command="./run_all.sh smoke").command == "./run_all.sh smoke"


def test_what_cannot_start_is_refused_naming_what_exists():
    with pytest.raises(profile_run.RunError, match=r"no notebook numbered '07' \(have: 00 01 .*90\)"):
        profile_run.plan("smoke", only=["07"])
    with pytest.raises(profile_run.RunError, match="no notebook numbered 'x'"):
        profile_run.plan("smoke", start="x")
    with pytest.raises(profile_run.RunError, match=r"no profile 'nope' .*have: .*default.*smoke"):
        profile_run.plan("nope")


def test_the_relay_drops_the_kernels_notice_and_keeps_the_rest(tmp_path):
    r, w = os.pipe()
    os.write(w, b"bar  10%\rbar  50%\r[IPKernelApp] WARNING | " + profile_run.KERNEL_NOISE.encode()
             + b". All communication ...\nExecuting\nlast without newline")
    os.close(w)
    out = io.BytesIO()
    with os.fdopen(r, "rb") as stream:
        profile_run.relay(stream, out, tmp_path / "run.log")
    shown = out.getvalue()
    assert shown == b"bar  10%\rbar  50%\rExecuting\nlast without newline"
    assert (tmp_path / "run.log").read_bytes() == shown


def test_a_status_row_keeps_the_calibration_the_work_and_the_fingerprint(tmp_path):
    plan = profile_run.Plan("p", [], tmp_path, picked=False)
    (tmp_path / "eta.json").write_text('{"calibration": {"torch-cpu": 0.5, "ort-cpu": 0.1, "other": 1}}')
    (tmp_path / "nb").mkdir()
    (tmp_path / "nb" / "metrics.json").write_text('{"work_seconds": {"judge": 12.0}}')
    row = profile_run.status_entry(plan, "nb", "ok", 30, 0.0, "abc", warm=True)
    assert row == {"status": "ok", "seconds": 30, "rtf": {"ort-cpu": 0.1, "torch-cpu": 0.5},
                   "work_s": {"judge": 12.0}, "fingerprint": "abc", "warm": True}
    stale = profile_run.status_entry(plan, "nb", "failed", 3, 1e12, "", warm=False)  # metrics older than the run
    assert "work_s" not in stale and "fingerprint" not in stale and stale["status"] == "failed"


def test_no_run_logic_is_left_in_shell_nor_in_a_modules_own_main():
    """Issue 70's done-when: no `python -c` nor `python -m lib....` in run_all.sh; `__main__` only in the command
    line's entry and the bare GPU machine's launcher (it has only the standard library)."""
    shell = (ROOT / "run_all.sh").read_text()
    assert len(re.findall(r"python -c|python -m lib", shell)) == 0
    assert "tts-lab run" in shell
    mains = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "lib").rglob("*.py") if "__main__" in p.read_text())
    assert mains == ["lib/cli.py", "lib/jobs/device_launch.py"], mains
