"""The training ledger, `outputs/recorded/training_ledger.csv`: one row per packed checkpoint of a long run
(lib.jobs.train_job pack), with its cumulative machine-hours across sessions and its held-out quality; read by notebook
04 and the report, which plot quality against machine-hours and say what the last doubling of hours bought."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core.results import atomic_write_text

ROOT = Path(__file__).resolve().parents[2]
LEDGER = ROOT / "outputs" / "recorded" / "training_ledger.csv"
JUDGED = LEDGER.with_name("training_heldout_judged.csv")  # per packed checkpoint, the judges' per-sentence scores
JUDGE_COLUMNS = ["heldout_p808", "heldout_sig", "heldout_ovrl", "heldout_distillmos"]  # their means, per row
COLUMNS = ["run", "part", "recipe", "device", "cpu_model", "steps", "hours", "heldout_pesq", "heldout_mel_l1",
           "heldout_secs", "heldout_wer", *JUDGE_COLUMNS, "corpus_hours", "commit", "date"]
# heldout_secs/_wer: adapters' SECS to their speaker and WER on its validation split (empty for students);
# corpus_hours: the teacher speech a student learned from (the rows of the decoders and flows packed before it was
# recorded: Harvard lists 11-30 at two draws, 0.2418 h, measured; empty for front ends, which learn text)
ADDED_LATER = ("heldout_wer", *JUDGE_COLUMNS, "corpus_hours")  # columns older ledgers and other parts' rows lack: empty
JUDGED_COLUMNS = ["run", "steps", "hours", "id", "metric", "value", "teacher"]


class LedgerError(ValueError):
    """The ledger file is not what the columns say (names the file and what is wrong)."""


def append(path: Path, row: dict) -> None:
    """One row more, written atomically (the whole file rewritten beside and swapped in)."""
    missing = [c for c in COLUMNS if c not in row and c not in ADDED_LATER]
    if missing:
        raise LedgerError(f"a ledger row for {path} lacks {missing}")
    row = {**{c: np.nan for c in ADDED_LATER}, **row}
    old = read(path) if Path(path).exists() else pd.DataFrame(columns=COLUMNS)
    frame = pd.concat([old, pd.DataFrame([row])[COLUMNS]], ignore_index=True)
    atomic_write_text(Path(path), frame.to_csv(index=False))


def append_judged(path: Path, clips: pd.DataFrame, *, run: str, steps: int, hours: float) -> None:
    """A packed checkpoint's judged held-out sentences (id, metric, value, teacher) added to `path`, atomically."""
    rows = clips.assign(run=run, steps=steps, hours=round(hours, 4))[JUDGED_COLUMNS]
    old = read_judged(path)
    atomic_write_text(Path(path), pd.concat([old, rows], ignore_index=True).to_csv(index=False) if len(old) else
                      rows.to_csv(index=False))


def read_judged(path: Path = JUDGED) -> pd.DataFrame:
    """Every packed checkpoint's judged held-out sentences; an empty frame where none is recorded yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=JUDGED_COLUMNS)
    frame = pd.read_csv(path)
    missing = [c for c in JUDGED_COLUMNS if c not in frame]
    if missing:
        raise LedgerError(f"{path} lacks the columns {missing}")
    return frame


def judge_means(clips: pd.DataFrame) -> dict:
    """The ledger row's means of a checkpoint's judged sentences (heldout_p808, heldout_sig, ...: JUDGE_COLUMNS only;
    a student's WER stays in the judged file, as the ledger's heldout_wer is an adapter's)."""
    means = clips.groupby("metric")["value"].mean()
    named = {f"heldout_{m.removeprefix('dnsmos_')}": round(float(v), 4) for m, v in means.items()}
    return {k: v for k, v in named.items() if k in JUDGE_COLUMNS}


def read(path: Path = LEDGER) -> pd.DataFrame:
    """The ledger, oldest row first; an empty frame where none is recorded yet."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame(columns=COLUMNS)
    frame = pd.read_csv(path)
    for c in ADDED_LATER:
        if c not in frame:
            frame[c] = np.nan
    frame = frame[[c for c in COLUMNS if c in frame] + [c for c in frame if c not in COLUMNS]]
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise LedgerError(f"{path} lacks the columns {missing}")
    return frame


def has_row(path: Path, run: str, steps: int) -> bool:
    """Whether `run`'s latest row in the ledger at `path` is at `steps` (that checkpoint is recorded already)."""
    mine = read(path)
    mine = mine[mine["run"] == run]
    return not mine.empty and int(mine["steps"].iloc[-1]) == steps


def last_doubling(frame: pd.DataFrame, metric: str = "heldout_pesq") -> pd.DataFrame:
    """Per run: its latest hours and `metric`, the change over the last doubling of machine-hours (from the row at
    or before half its hours), and that change carried to the next doubling (a log-linear curve's prediction)."""
    rows = []
    for run, g in frame.sort_values("hours").groupby("run"):
        last = g.iloc[-1]
        half = g[g["hours"] <= last["hours"] / 2]
        change = float(last[metric] - half.iloc[-1][metric]) if len(half) else np.nan
        rows.append({"run": run, "recipe": last["recipe"], "hours": float(last["hours"]), "steps": int(last["steps"]),
                     metric: float(last[metric]), f"{metric}_last_doubling": change,
                     f"{metric}_next_doubling": float(last[metric]) + change if np.isfinite(change) else np.nan})
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, metric: str = "heldout_pesq", ax=None):
    """Held-out quality against machine-hours (log axis) on one axis, one line per run, coloured by recipe, the
    legend outside the axes."""
    import matplotlib.pyplot as plt
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    for (run, recipe), g in frame.sort_values("hours").groupby(["run", "recipe"]):
        if g[metric].notna().any():
            ax.plot(g["hours"].clip(lower=1e-3), g[metric], marker="o", ms=3, label=f"{run} ({recipe})")
    ax.set_xscale("log")
    ax.set_xlabel("machine-hours (log; 1 = an hour of both cores of a 2-core machine)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return ax


PANELS = (("decoder", "heldout_pesq"), ("istft_decoder", "heldout_pesq"), ("flow", "heldout_pesq"),
          ("frontend", "heldout_pesq"), ("adapter", "heldout_secs"))  # each part's panel and its held-out figure


def plot_parts(frame: pd.DataFrame):
    """One panel per part (decoders, frame-rate decoder, flow, front end: PESQ against the teacher; adapters: SECS to
    their speaker), each run a line against machine-hours, the legends outside the axes. Returns the figure."""
    import matplotlib.pyplot as plt
    panels = [(part, metric) for part, metric in PANELS if frame[(frame["part"] == part)][metric].notna().any()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 2.4 * len(panels)), squeeze=False, sharex=True)
    for ax, (part, metric) in zip(axes[:, 0], panels):
        plot(frame[frame["part"] == part], metric, ax=ax)
        ax.set_title(part, fontsize=9, loc="left")
        ax.set_xlabel("")
    axes[-1, 0].set_xlabel("machine-hours (log; 1 = an hour of both cores of a 2-core machine)")
    fig.tight_layout()
    return fig


def at_equal_hours(frame: pd.DataFrame, part: str = "decoder", metric: str = "heldout_pesq",
                   runs: Sequence[str] | None = None) -> pd.DataFrame:
    """The runs of one `part` (only those named in `runs`, where given: one student's recipes) compared at equal
    machine time: each run's latest `metric` at or before the hours that every one of them has reached (the
    shortest run's last row), with that common budget."""
    book = frame[(frame["part"] == part) & (frame["run"].isin(runs) if runs is not None else True)].sort_values("hours")
    if book["run"].nunique() < 2:
        return pd.DataFrame(columns=["run", "recipe", "hours", "steps", metric])
    budget = float(book.groupby("run")["hours"].max().min())
    rows = []
    for run, g in book.groupby("run"):
        upto = g[g["hours"] <= budget + 1e-9]
        if len(upto):
            last = upto.iloc[-1]
            rows.append({"run": run, "recipe": last["recipe"], "hours": float(last["hours"]),
                         "steps": int(last["steps"]), metric: float(last[metric]), "budget_hours": budget})
    return pd.DataFrame(rows).sort_values(metric, ascending=False, ignore_index=True)
