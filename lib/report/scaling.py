"""How much teacher speech a student needs (issue 49): one student's runs that differ only in the hours of teacher
corpus they learned from, compared at equal steps. Each point is a packed checkpoint: its held-out mel L1 from the
ledger, and each judge's paired difference to the teacher's own audio on the held-out sentences with its 95 %
bootstrap interval (the judged file beside the ledger). Reads the ledger and the judged file only."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.report import verdicts
from lib.report.arms import JUDGES

PANELS = {"heldout_mel_l1": "held-out mel L1 (lower is better)", "dnsmos_sig": "DNSMOS SIG",
          "dnsmos_p808": "DNSMOS P.808", "distillmos": "Distill-MOS"}
COLUMNS = ["run", "steps", "corpus_hours", "metric", "value", "lo", "hi", "n"]


def empty() -> pd.DataFrame:
    """A curve with no point (the table a notebook records where the runs are not packed yet)."""
    return pd.DataFrame(columns=COLUMNS)


class ScalingError(ValueError):
    """A run of the curve that the ledger lacks, or whose checkpoints share no step with the others'."""


def curve(ledger: pd.DataFrame, judged: pd.DataFrame, runs: list[str]) -> pd.DataFrame:
    """One row per run and metric at the latest step every run in `runs` has a ledger row for: the run's corpus
    hours, its held-out mel L1 (`value`, no interval), and each judge's mean paired difference to the teacher with
    its interval. ScalingError names a run the ledger lacks, or says that the runs share no step."""
    missing = [r for r in runs if r not in set(ledger["run"])]
    if missing:
        raise ScalingError(f"no ledger row for {missing}: pack them with `tts-lab train pack --ledger`")
    steps = set.intersection(*[set(ledger.loc[ledger["run"] == r, "steps"].astype(int)) for r in runs])
    if not steps:
        raise ScalingError(f"the runs {runs} share no packed step: compare them at equal steps (--stop-at)")
    step = max(steps)
    rows = []
    for run in runs:
        row = ledger[(ledger["run"] == run) & (ledger["steps"].astype(int) == step)].iloc[-1]
        hours = float(row["corpus_hours"])
        rows.append({"run": run, "steps": step, "corpus_hours": hours, "metric": "heldout_mel_l1",
                     "value": float(row["heldout_mel_l1"]), "lo": np.nan, "hi": np.nan, "n": np.nan})
        own = judged[(judged["run"] == run) & (judged["steps"].astype(int) == step)]
        for metric, c in own.groupby("metric"):
            j = verdicts.judge((c["value"] - c["teacher"]).to_numpy(float), 0.0, True)
            rows.append({"run": run, "steps": step, "corpus_hours": hours, "metric": metric, "value": j["mean"],
                         "lo": j["lo"], "hi": j["hi"], "n": j["n"]})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["metric", "corpus_hours"], kind="stable",
                                                           ignore_index=True)


def last_doubling(table: pd.DataFrame, metric: str) -> float | None:
    """The change in `metric` per doubling of corpus hours between the curve's two largest corpora; None where the
    curve has fewer than two corpora for it."""
    rows = table[table["metric"] == metric].sort_values("corpus_hours")
    if len(rows) < 2:
        return None
    a, b = rows.iloc[-2], rows.iloc[-1]
    return float((b["value"] - a["value"]) / np.log2(b["corpus_hours"] / a["corpus_hours"]))


def plot(table: pd.DataFrame):
    """One panel per metric against corpus hours (log scale): held-out mel L1, then each judge's difference to the
    teacher (0: the teacher's own score) with its interval."""
    metrics = [m for m in PANELS if m in set(table["metric"])]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)), 2.9), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        own = table[table["metric"] == metric].sort_values("corpus_hours")
        err = np.vstack([own["value"] - own["lo"], own["hi"] - own["value"]])
        ax.errorbar(own["corpus_hours"], own["value"], yerr=np.nan_to_num(err), marker="o", ms=4, capsize=2, lw=1)
        if metric in JUDGES:
            ax.axhline(0.0, color="k", lw=0.6)
        ax.set_xscale("log")
        ax.set_title(PANELS[metric], fontsize=9, loc="left")
        ax.set_xlabel("hours of teacher speech")
    axes[0][0].set_ylabel(f"at {int(table['steps'].iloc[0]):,} steps" if len(table) else "")
    fig.tight_layout()
    return fig
