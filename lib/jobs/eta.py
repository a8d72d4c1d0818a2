"""How long a profile will take on this machine, said before the long part starts. Each notebook's time is taken
from the newest runs that timed it doing what it does now (the same fingerprint: code cells and parameters) and
starting as it will (warm, with an earlier run's outputs, or fresh); else the newest that timed it, and the estimate
says it is rough. Where such runs were on this kind of machine (lib.core.machine.identity), the estimate is the
median of their times as they were: they saw the whole run, while a calibration sees a few seconds of a VM whose
speed moves 1.8x within minutes (62_calibration_repeat). Else the newest is scaled by a few seconds of calibration
(the voice's RTF on ONNX Runtime and on PyTorch at one thread, the judges' seconds per audio second) against the
median calibration of its machine: each kind of work by its own figure where the run kept where its time went
(lib.core.worktime: judging by the judges', training by PyTorch's, the rest by ONNX Runtime's), else a training
notebook by PyTorch's and the rest by ONNX Runtime's. A profile no run has timed gets no estimate, and says so.
`backtest` estimates every recorded run from those before it, to say how far the estimate is from the time.

    tts-lab study eta default 00_data_and_features 01_baselines --json outputs/default/eta.json
    tts-lab study eta default --backtest outputs/recorded/intel-xeon-amx-2c/65_eta_backtest/backtest.csv
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from lib.core import machine, params, results, text, worktime
from lib.core.results import atomic_write_json, atomic_write_text
from lib.harness import bench
from lib.harness.judges import judge_seconds
from lib.voices import synth as voices

_LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RECORDED = results.RECORDED  # <cpu>/<n>_<profile>_run/: run_status.json with eta.json or 01's RTF rows
TORCH_NOTEBOOKS = ("02_lora_qlora", "04_distillation")  # their time is mostly PyTorch training
CALIBRATION_SENTENCES = 3  # from the judged lists 1-10, as 01 times them
CALIBRATION_REPEATS = 3  # rounds over them: the VM's speed wanders by a third from one few seconds to the next
CALIBRATION_METHOD = 2  # 1 (none recorded): one round after one warm-up call, whose PyTorch figure ran up to 1.7x high
SAME_MACHINE_RUNS = 3  # on this kind of machine, the median of its newest fitting runs: one run's time moves by ~15 %


def timed_runs(profile: str, outputs: Path | None = None, recorded: Path | None = None) -> list[dict]:
    """The runs of `profile` an estimate can take from, newest first, each {'seconds': {notebook: s}, 'rtf':
    {notebook: {'ort-cpu': x, 'torch-cpu': y}}, 'cpu', 'path', 'machine' (its identity, None where unknown), ...}:
    this checkout's last time of each notebook (where run_all.sh kept the RTFs it was calibrated at), then the
    recorded runs by their number."""
    runs = []
    status_file = Path(outputs or results.OUTPUTS) / profile / "run_status.json"
    if status_file.exists():
        done = {k: v for k, v in json.loads(status_file.read_text()).items()
                if v.get("status") == "ok" and "rtf" in v}
        if done:  # times an older run_all.sh kept without RTFs scale nothing
            kept = [v["rtf"]["machine"] for v in done.values() if "machine" in v["rtf"]]
            runs.append(_run(done, {k: v["rtf"] for k, v in done.items()}, "this machine's last run", status_file,
                             kept[0] if kept else None))
    # <n>_<profile>_run, and <n>_<profile>_run_as_<class> (its identity tells it apart)
    folders = [f for f in (recorded or RECORDED).glob(f"*/*_{profile}_run*") if (f / "run_status.json").exists()]
    for folder in sorted(folders, key=lambda f: int(f.name.split("_")[0]), reverse=True):
        status = {k: v for k, v in json.loads((folder / "run_status.json").read_text()).items()
                  if v.get("status") == "ok"}
        envs = sorted(folder.glob("[0-9][0-9]_env.json"))
        env = json.loads(envs[0].read_text()) if envs else {}
        said = json.loads((folder / "eta.json").read_text()) if (folder / "eta.json").exists() else {}
        if said:
            rtf = said["calibration"]
        elif (folder / "01_results.csv").exists():
            rows = pd.read_csv(folder / "01_results.csv")
            rows = rows[(rows.metric == "rtf") & (rows.variant == "fp32") & (rows.threads == 1) & (rows.status == "ok")]
            rtf = {b: float(rows[rows.backend == b].value.iloc[0]) for b in ("ort-cpu", "torch-cpu")}
        else:
            continue  # seconds with nothing to scale them by
        path = folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder
        ident = rtf.get("machine") or (machine.identity_of(env) if env.get("cpu_model") else None)
        runs.append(_run(status, {k: v.get("rtf", rtf) for k, v in status.items()},
                         env.get("cpu_model", folder.parent.name), path, ident, int(folder.name.split("_")[0]),
                         folder.parent.name, said.get("estimate_s", {})))
    _unname_ambiguous(runs)
    return runs


def _run(status: dict, rtf: dict, cpu: str, path, ident: dict | None, number: int | None = None,
         folder: str | None = None, said: dict | None = None) -> dict:
    """One run an estimate can scale from, out of its run_status.json entries (notebook: what run_all.sh kept), with
    the identity of its machine (None: unknown), and where recorded its number, CPU folder and the estimate it said
    at its start."""
    return {"seconds": {k: v["seconds"] for k, v in status.items()}, "rtf": rtf,
            "work": {k: v["work_s"] for k, v in status.items() if v.get("work_s")},
            "fingerprint": {k: v.get("fingerprint") for k, v in status.items()},
            "warm": {k: v.get("warm") for k, v in status.items()}, "cpu": cpu, "path": str(path), "machine": ident,
            "number": number, "folder": folder, "said": said or {}}


def _unname_ambiguous(runs: list[dict]) -> None:
    """A record without family/model names no machine where another CPU folder holds one it cannot be told apart from
    (a Zen 4 and a Zen 5 VM both read 'AMD EPYC' with the same features): its time is then scaled, never taken as is."""
    ambiguous = [r for r in runs if r["machine"] and r["folder"] and not r["machine"].get("cpu_family_model")
                 and any(o["folder"] not in (None, r["folder"]) and machine.same_machine(o["machine"], r["machine"])
                         for o in runs)]
    for r in ambiguous:
        r["machine"] = None


def _fingerprint(profile: str, notebook: str) -> str | None:
    """The notebook's fingerprint on `profile` (lib.core.params), or None where its files cannot say."""
    try:
        return params.fingerprint(profile, notebook)
    except (params.ParamsError, OSError, ValueError):
        return None


JUDGE = "judge"  # the calibration's key for the judges' seconds per audio second
SCALE_BY = {worktime.JUDGE: JUDGE, worktime.TRAIN: "torch-cpu"}  # each tallied kind of work, the figure it scales by


def calibrate(sentences: int = CALIBRATION_SENTENCES, judges: bool = True) -> dict:
    """The voice's median RTF here at one thread on ONNX Runtime and PyTorch, timed call by call in turn after two
    warm-up calls each (PyTorch's first calls run slower), the judges' median seconds per audio second in one process
    (Whisper base, DNSMOS, Distill-MOS; `judge`), and whether the timing was contended."""
    texts = [s.text for s in text.harvard_sentences([1])[:sentences]]
    engines = {b: voices.load_voice(backend=b, threads=1) for b in ("ort-cpu", "torch-cpu")}
    timed = bench.time_interleaved({b: v.synthesize for b, v in engines.items()}, texts, lambda a: a.duration,
                                   warmup=2, repeats=CALIBRATION_REPEATS, threads=1)
    out = {b: float(np.median(t.latencies_s / t.audio_s)) for b, t in timed.items()}
    out["contended"] = any(t.status[0] == "contended" for t in timed.values())
    out["method"] = CALIBRATION_METHOD
    out["machine"] = machine.identity()
    if judges:
        clip = engines["ort-cpu"].synthesize(texts[0])
        out[JUDGE] = judge_seconds(clip, "whisper-base") / clip.duration
    return out


def scaled(seconds: float, work: dict | None, cal: dict, ref: dict, torch_notebook: bool) -> float:
    """One notebook's `seconds` from a run calibrated at `ref`, on a machine calibrated at `cal`: each kind of work
    the run tallied (`work`) by its own figure and the rest by ONNX Runtime's, where both calibrations have the
    figures; else all of it by PyTorch's (a training notebook) or ONNX Runtime's."""
    ratio = {k: cal[k] / ref[k] for k in ("ort-cpu", "torch-cpu", JUDGE) if cal.get(k) and ref.get(k)}
    if work and all(SCALE_BY[k] in ratio for k in work):
        rest = max(seconds - sum(work.values()), 0.0)
        return rest * ratio["ort-cpu"] + sum(s * ratio[SCALE_BY[k]] for k, s in work.items())
    return seconds * ratio["torch-cpu" if torch_notebook else "ort-cpu"]


class Estimate(NamedTuple):
    seconds: float
    run: dict  # the newest run the time is taken from
    here: int  # how many runs on this kind of machine it is the median of; 0 where scaled from another machine's


def reference_calibration(run: dict, notebook: str, runs: list[dict]) -> dict:
    """The figures `run` is scaled against: the median of each over the calibrations (of its method) of every run on
    its machine, so that one calibration's moment does not set it; its own where its machine is unknown."""
    own = run["rtf"][notebook]
    same = [r["rtf"].get(notebook) or next(iter(r["rtf"].values())) for r in runs
            if r is run or machine.same_machine(r.get("machine"), run.get("machine"))]
    kept = {k: [c[k] for c in same if c.get(k)] for k in ("ort-cpu", JUDGE)}
    # the older method's PyTorch figure ran high (CALIBRATION_METHOD): PyTorch's only from the run's own method
    kept["torch-cpu"] = [c["torch-cpu"] for c in same if c.get("torch-cpu")
                         and c.get("method", 1) == own.get("method", 1)]
    return {**own, **{k: float(np.median(v)) for k, v in kept.items() if v}}


def estimate(notebooks: list[str], cal: dict, runs: list[dict], now: dict[str, str] | None = None,
             warm: dict[str, bool] | None = None) -> dict[str, Estimate]:
    """Seconds per notebook here, from the runs that fit best: those that timed the work the notebook does now (its
    fingerprint in `now`) and started as this one will (`warm`: with an earlier run's outputs, whose judged clips and
    trained states it reuses, or fresh); else those that match in one, else all that timed it. Where some of them
    ran on this kind of machine (`cal['machine']`), the median time of the newest SAME_MACHINE_RUNS; else the newest
    scaled by `scaled` against its machine's reference calibration."""
    out = {}
    for nb in notebooks:
        def fits(r: dict) -> tuple[bool, bool]:
            same_work = bool(now and now.get(nb) and r.get("fingerprint", {}).get(nb) == now[nb])
            same_start = bool(warm and nb in warm and r.get("warm", {}).get(nb) == warm[nb])
            return same_work, same_start
        timed = [r for r in runs if nb in r["seconds"]]  # newest first
        if not timed:
            continue
        best = max(fits(r) for r in timed)
        pool = [r for r in timed if fits(r) == best]
        here = [r for r in pool if machine.same_machine(r.get("machine"), cal.get("machine"))][:SAME_MACHINE_RUNS]
        if here:
            out[nb] = Estimate(float(np.median([r["seconds"][nb] for r in here])), here[0], len(here))
        else:
            run = pool[0]
            out[nb] = Estimate(scaled(run["seconds"][nb], run.get("work", {}).get(nb), cal,
                                      reference_calibration(run, nb, runs), nb in TORCH_NOTEBOOKS), run, 0)
    return out


def backtest(profile: str, recorded: Path | None = None) -> pd.DataFrame:
    """Every recorded run of `profile` that kept its calibration, estimated as this module would have at its start
    (from the runs recorded before it, at the calibration it was made at), against the time it took: one row per run,
    with the estimate the run itself said then (`said_s`, by the method of its day) where it kept one."""
    runs = [r for r in timed_runs(profile, recorded=recorded) if r["number"] is not None]  # recorded ones only
    rows = []
    for target in sorted(runs, key=lambda r: r["number"]):
        cal = next((c for c in target["rtf"].values() if c.get("ort-cpu") and c.get("torch-cpu")), None)
        earlier = [r for r in runs if r["number"] < target["number"]]
        if cal is None or not earlier:
            continue
        cal = {**cal, "machine": cal.get("machine") or target["machine"]}
        nbs = list(target["seconds"])
        est = estimate(nbs, cal, earlier, target["fingerprint"], target["warm"])
        if not est:
            continue
        said = target["said"]
        took, estimated = sum(target["seconds"][nb] for nb in est), sum(e.seconds for e in est.values())
        rows.append({"run": target["path"], "cpu": target["folder"], "notebooks": len(est), "took_s": took,
                     "estimate_s": round(estimated), "error": round(estimated / took - 1, 3),
                     "same_machine_notebooks": sum(e.here > 0 for e in est.values()),
                     "same_work_notebooks": sum(bool(target["fingerprint"].get(nb)) and
                                                e.run["fingerprint"].get(nb) == target["fingerprint"][nb]
                                                for nb, e in est.items()),
                     "said_s": round(sum(said[nb] for nb in est)) if all(nb in said for nb in est) else None,
                     "references": " ".join(sorted({str(e.run["number"]) for e in est.values()}, key=int))})
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["said_error"] = [round(s / t - 1, 3) if s else None for s, t in zip(frame.said_s, frame.took_s)]
    return frame


def write_backtest(profile: str, csv: Path, recorded: Path | None = None) -> pd.DataFrame:
    """`backtest` written to `csv` (atomically) and said run by run; an error naming the profile where no recorded
    run of it can be estimated."""
    frame = backtest(profile, recorded)
    if frame.empty:
        raise ValueError(f"no recorded run of profile '{profile}' kept a calibration and had an earlier run to be "
                         "estimated from")
    atomic_write_text(csv, frame.to_csv(index=False))
    for row in frame.itertuples():
        _LOGGER.info(f"{row.run}: took {row.took_s / 60:.1f} min, estimated {row.estimate_s / 60:.1f} "
                     f"({row.error:+.0%}; {row.same_machine_notebooks} of {row.notebooks} notebooks from this kind of "
                     f"machine, {row.same_work_notebooks} timed doing the same work)")
    return frame


def report(profile: str, notebooks: list[str], json_path: str = "", outputs: Path | None = None) -> int:
    """Say how long `notebooks` of `profile` (every one a run timed, where empty) will take here; write it to
    `json_path`."""
    runs = timed_runs(profile, outputs)
    wanted = notebooks or sorted({nb for r in runs for nb in r["seconds"]})
    missing = [nb for nb in wanted if not any(nb in r["seconds"] for r in runs)]
    if len(missing) == len(wanted):
        if json_path:
            Path(json_path).unlink(missing_ok=True)  # no stale estimate of an earlier run
        _LOGGER.warning("no time estimate: no run of profile '%s' timed %s to scale from", profile,
                        ", ".join(wanted) or "any notebook")
        return 0
    cal = calibrate()
    now = {nb: _fingerprint(profile, nb) for nb in wanted}
    warm = {nb: (Path(outputs or results.OUTPUTS) / profile / nb / "results.csv").exists() for nb in wanted}
    est = estimate(wanted, cal, runs, now, warm)
    changed = [nb for nb, e in est.items() if not now[nb] or e.run.get("fingerprint", {}).get(nb) != now[nb]]
    unlike = [nb for nb, e in est.items() if e.run.get("warm", {}).get(nb) not in (None, warm[nb])]
    other_method = [nb for nb, e in est.items()
                    if not e.here and e.run["rtf"][nb].get("method", 1) != cal.get("method", 1)]
    here = sorted({e.run["path"] for e in est.values() if e.here})
    scaled_from = sorted({f"{e.run['path']} ({e.run['cpu']})" for e in est.values() if not e.here})
    sources = ([f"the median time of up to {SAME_MACHINE_RUNS} runs on this kind of machine, newest "
                + ", ".join(here)] if here else [])
    sources += (["scaled (by kind of work where the run kept where its time went) from the newest run that timed "
                 "each, against its machine's median calibration: " + ", ".join(scaled_from)] if scaled_from else [])
    rough = "; the calibration was contended, so the estimate is rough" if cal["contended"] else ""
    rough += f"; no run timed {', '.join(missing)}" if missing else ""
    rough += (f"; rough for {', '.join(changed)}: no run timed what they do now (their code or parameters changed)"
              if changed else "")
    rough += (f"; rough for {', '.join(unlike)}: timed on a run that started otherwise (warm, with an earlier run's "
              "judged clips and trained states, or fresh) than this one will" if unlike else "")
    rough += (f"; rough for {', '.join(other_method)}: timed on a run calibrated by another method" if other_method
              else "")
    _LOGGER.info(f"estimate: about {sum(e.seconds for e in est.values()) / 60:.0f} minutes for {len(est)} notebook(s) "
                 f"on this {machine.cpu_model()} ({machine.cpu_family_model() or 'family/model unknown'}; "
                 f"{machine.feature_line()}; RTF {cal['ort-cpu']:.3f} on ONNX Runtime, {cal['torch-cpu']:.3f} on "
                 f"PyTorch, 1 thread; the judges {cal.get(JUDGE, float('nan')):.2f} s per audio second): "
                 + "; ".join(sources) + rough)
    if json_path:
        atomic_write_json(Path(json_path), {"estimate_s": {nb: e.seconds for nb, e in est.items()}, "calibration": cal,
                                            "reference": {nb: e.run["path"] for nb, e in est.items()},
                                            "same_machine_runs": {nb: e.here for nb, e in est.items()},
                                            "changed": changed, "unlike_start": unlike,
                                            "other_calibration": other_method})
    return 0

