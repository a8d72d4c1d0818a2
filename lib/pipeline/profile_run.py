"""`tts-lab run PROFILE [NN ...]`: a profile's numbered notebooks through papermill, in order and past failures, then
the report, as ESPnet's recipes run their stages: `--from NN` resumes at a notebook, `--skip NN` leaves one out, and
the notebooks not run keep their results. The run holds the timing lock (long training runs pause), says its estimate
first, and writes beside the executed notebooks (outputs/PROFILE/notebooks/) its log (run.log), its estimate
(eta.json) and each notebook's status, seconds, calibration, work and fingerprint (run_status.json), which the next
estimate reads. A failed notebook is kept as NN_name.failed.ipynb, named with the cell that raised, and costs no
other notebook its results."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib.core import env, params, pause, quiet, results

_LOGGER = logging.getLogger("tts-lab run")
REPORT = "90_report"  # rendered without its code as outputs/PROFILE/report.html
CALIBRATION_KEYS = ("ort-cpu", "torch-cpu", "judge", "method", "machine")  # eta.json's figures a status keeps
BAD_PARAMETERS = "bad parameters"  # a notebook refused before its kernel starts
KERNEL_NOISE = "Kernel is running over TCP without encryption"  # every kernel says it; papermill has no IPC transport


class RunError(ValueError):
    """A run that cannot start (no such profile or notebook): the message names what was asked and what exists."""


@dataclass
class Plan:
    """What one run does: the profile, its notebooks in order, and where it writes."""
    profile: str
    notebooks: list[Path]
    out: Path  # outputs/PROFILE
    picked: bool  # a subset: the other notebooks' statuses are kept
    timeout_s: int = 3600
    command: str = ""
    done_s: dict[str, int] = field(default_factory=dict)  # this run's finished notebooks' seconds

    @property
    def nbout(self) -> Path:
        return self.out / "notebooks"


def numbered(notebooks_dir: Path | None = None) -> list[Path]:
    """Every numbered notebook, in order."""
    return sorted(Path(notebooks_dir or params.NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))


def plan(profile: str, only: list[str] = (), start: str = "", skip: list[str] = (), timeout_s: int = 3600,
         command: str = "") -> Plan:
    """The notebooks a run takes: `only` (numbers; all where empty), from `start` on, without `skip`. RunError names a
    profile or number that does not exist."""
    if not (params.PARAMS / profile).is_dir():
        have = " ".join(sorted(p.name for p in params.PARAMS.iterdir() if p.is_dir()))
        raise RunError(f"no profile '{profile}' (expected a folder {params.PARAMS / profile}; have: {have})")
    try:
        params.voice_env(profile)
    except params.ParamsError as exc:  # the profile's own voice, checked before anything runs
        raise RunError(str(exc)) from None
    every = numbered()
    by_number = {p.name[:2]: p for p in every}
    for n in [*only, *skip, *([start] if start else [])]:
        if n not in by_number:
            raise RunError(f"no notebook numbered '{n}' (have: {' '.join(by_number)})")
    chosen = [by_number[n] for n in only] if only else every
    if start:
        chosen = [p for p in chosen if p.name[:2] >= start]
    chosen = [p for p in chosen if p.name[:2] not in skip]
    out = results.OUTPUTS / profile
    return Plan(profile, chosen, out, picked=bool(only or start or skip), timeout_s=timeout_s,
                command=command or f"tts-lab run {profile}")


def kernel_env(profile: str, command: str) -> dict[str, str]:
    """What every notebook's kernel is started with beyond this process's environment: the known warnings silenced
    by name, tqdm's bars thinned (a bar shows once its loop ran 5 s, then at most every 30 s), the command its
    metrics.json keeps, and the profile's own voice (params/PROFILE/voice.yaml)."""
    return {"PYTHONWARNINGS": quiet.pythonwarnings(), "TQDM_DELAY": os.environ.get("TQDM_DELAY", "5"),
            "TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", "30"),
            env.COMMAND.name: os.environ.get(env.COMMAND.name) or command, **params.voice_env(profile)}


def execute(nb: Path, plan_: Plan) -> str | None:
    """Run one notebook with its profile's parameters; None when it ran, else the line saying why it failed. The
    executed copy replaces the last good one only when it ran; a failed one is kept as NAME.failed.ipynb."""
    from lib.report.failed import failure
    name = nb.stem
    try:
        params.load(plan_.profile, name)  # every key known and typed, or the error names it
        errors = params.shared_mismatches(plan_.profile, name)
    except params.ParamsError as exc:
        errors = [str(exc)]
    if errors:
        for e in errors:
            _LOGGER.error("params error: %s", e)
        return BAD_PARAMETERS
    tmp = plan_.nbout / f".{name}.running.ipynb"
    # papermill in a process of its own, as its command line runs it: its kernel's stderr is then this relay's to
    # filter (in-process, the kernel would write to this process's stderr directly)
    values = params.PARAMS / plan_.profile / f"{name}.yaml"
    cmd = [sys.executable, "-m", "papermill", str(nb), str(tmp), "-f", str(values), "-p", "profile", plan_.profile,
           "-k", "python3", "--cwd", str(params.ROOT),
           "--execution-timeout", str(plan_.timeout_s), "--progress-bar", "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    relay(proc.stdout, sys.stderr.buffer, plan_.out / "run.log")
    if proc.wait() != 0:
        failed = plan_.nbout / f"{name}.failed.ipynb"
        if tmp.exists():
            tmp.replace(failed)
            return failure(failed)
        return f"papermill exited with {proc.returncode} and kept no notebook"
    tmp.replace(plan_.nbout / f"{name}.ipynb")
    return None


def relay(stream, out, log: Path) -> None:
    """Copy papermill's output (its progress bar's redraws included) to `out` and to the run's log as it comes, less
    the notice every kernel prints on start (KERNEL_NOISE)."""
    pending = b""
    with open(log, "ab") as kept:
        while chunk := os.read(stream.fileno(), 4096):
            pending += chunk
            *whole, pending = re.split(rb"(?<=[\r\n])", pending)
            for piece in whole:
                if KERNEL_NOISE.encode() not in piece:
                    out.write(piece)
                    kept.write(piece)
            out.flush()
        if pending and KERNEL_NOISE.encode() not in pending:
            out.write(pending)
            kept.write(pending)


def render(notebook: Path, html: Path, code: bool = True) -> None:
    """The executed notebook as HTML (without its code cells where `code` is False), made to work offline."""
    from nbconvert import HTMLExporter

    from lib.report.media import make_offline
    logging.getLogger("traitlets").setLevel(logging.ERROR)  # nbconvert's notes on figures' alt text: not the run's
    body, _ = HTMLExporter(exclude_input=not code).from_filename(str(notebook))
    results.atomic_write_text(html, body)
    make_offline(html)


def status_entry(plan_: Plan, name: str, state: str, seconds: int, started: float, fingerprint: str,
                 warm: bool) -> dict:
    """A notebook's row of run_status.json: its status and seconds, the calibration the run was estimated at, where
    its time went (its metrics.json's work_seconds, when this run wrote it), what it ran and whether it found an
    earlier run's outputs."""
    try:
        cal = json.loads((plan_.out / "eta.json").read_text()).get("calibration", {})
    except (OSError, ValueError):
        cal = {}
    metrics = plan_.out / name / "metrics.json"
    work = {}
    if metrics.exists() and metrics.stat().st_mtime >= started:
        with contextlib.suppress(OSError, ValueError):
            work = json.loads(metrics.read_text()).get("work_seconds", {})
    row = {"status": state, "seconds": seconds}
    if "torch-cpu" in cal:
        row["rtf"] = {k: cal[k] for k in CALIBRATION_KEYS if k in cal}
    if work:
        row["work_s"] = work
    if fingerprint:
        row["fingerprint"] = fingerprint
    return {**row, "warm": warm}


def estimate(plan_: Plan) -> None:
    """Before the long part: roughly how long the notebooks take here (a few seconds of calibration)."""
    from lib.jobs import eta
    try:
        eta.report(plan_.profile, [p.stem for p in plan_.notebooks], str(plan_.out / "eta.json"))
    except Exception as exc:  # an estimate is a courtesy: the run goes on without one
        _LOGGER.warning("no time estimate: the calibration failed (%s: %s)", type(exc).__name__, exc)


def one(plan_: Plan, i: int, nb: Path, status: dict) -> str | None:
    """Run notebook number `i` of the plan, record its status and render it; returns None when it ran, else what
    the failures' list says of it."""
    from lib.core.pace import line
    name = nb.stem
    _LOGGER.info("[%d/%d] %s (%s%s)", i, len(plan_.notebooks), name, plan_.profile,
                 line(plan_.out / "eta.json", name, plan_.done_s))
    warm = (plan_.out / name / "results.csv").exists()  # an earlier run's judged clips and states are reused
    t0 = time.time()
    error = execute(nb, plan_)
    seconds = int(time.time() - t0)
    state = "failed" if error else "ok"
    _LOGGER.info("    -> %s in %ds", state, seconds)
    if error:
        _LOGGER.error("    error: %s", error)
    else:
        plan_.done_s[name] = seconds
    try:
        fp = params.fingerprint(plan_.profile, name)
    except (params.ParamsError, ValueError, OSError):
        fp = ""
    status[name] = status_entry(plan_, name, state, seconds, t0, fp, warm)
    results.atomic_write_text(plan_.out / "run_status.json", json.dumps(status))
    if not error and name != REPORT:
        try:
            render(plan_.nbout / f"{name}.ipynb", plan_.nbout / f"{name}.html")
        except Exception as exc:  # the notebook ran; only its page is missing
            _LOGGER.warning("    (could not render %s.ipynb to HTML: %s)", name, exc)
    if error == BAD_PARAMETERS:
        return f"{name} ({BAD_PARAMETERS})"
    return error and f"{name} (see {plan_.nbout / (name + '.failed.ipynb')})"


class _DropKernelNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return KERNEL_NOISE not in record.getMessage()


@contextlib.contextmanager
def logged(path: Path):
    """Everything the run logs also goes to `path` (appended); the kernels' TCP notice goes nowhere."""
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    noise = _DropKernelNoise()
    root.addHandler(handler)
    for h in root.handlers:
        h.addFilter(noise)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        for h in root.handlers:
            h.removeFilter(noise)


def run(plan_: Plan) -> int:
    """Carry out a plan: 0 when every notebook and the report ran, 1 naming each failure."""
    plan_.nbout.mkdir(parents=True, exist_ok=True)
    os.environ.update(kernel_env(plan_.profile, plan_.command))
    try:
        status = json.loads((plan_.out / "run_status.json").read_text()) if plan_.picked else {}
    except (OSError, ValueError):
        status = {}
    failures = []
    with logged(plan_.out / "run.log"), pause.timing(plan_.command[:60]):
        from lib.harness.bench import git_hash
        _LOGGER.info("== %s %s at %s", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), plan_.command, git_hash())
        if os.environ.get(env.VOICE.name):
            _LOGGER.info("voice: %s (speaker %s)", os.environ[env.VOICE.name], os.environ.get(env.SPEAKER.name))
        estimate(plan_)
        started = time.time()
        for i, nb in enumerate(plan_.notebooks, 1):
            failed = one(plan_, i, nb, status)
            if failed:
                failures.append(failed)
        report = plan_.nbout / f"{REPORT}.ipynb"
        if report.exists():
            try:
                render(report, plan_.out / "report.html", code=False)
                _LOGGER.info("report: %s", plan_.out / "report.html")
            except Exception as exc:
                _LOGGER.error("could not render the report: %s", exc)
                failures.append("report rendering")
        _LOGGER.info("total: %ds", int(time.time() - started))
        if failures:
            _LOGGER.error("FAILED (%d):\n%s", len(failures), "\n".join(f"  - {f}" for f in failures))
            return 1
        _LOGGER.info("all notebooks ran for profile '%s'", plan_.profile)
    return 0
