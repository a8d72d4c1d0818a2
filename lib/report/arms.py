"""A decoder's training arms compared at equal machine-hours (issue 39): each judged checkpoint's paired difference
to the teacher's own audio on the held-out sentences, per judge, with its 95 % bootstrap interval; one panel per judge
against machine-hours. Reads the judged file beside the ledger (lib.training.ledger.JUDGED) only."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.report import verdicts

JUDGES = {"dnsmos_sig": "DNSMOS SIG", "dnsmos_ovrl": "DNSMOS OVRL", "dnsmos_p808": "DNSMOS P.808",
          "distillmos": "Distill-MOS"}  # the panels, in order: the signal score first (where the students lose)
COLUMNS = ["arm", "run", "steps", "hours", "metric", "delta", "lo", "hi", "n"]


def compare(judged: pd.DataFrame, arms: dict) -> pd.DataFrame:
    """Per arm (its label -> the ledger runs it is made of, e.g. the regression pack it started from and its own run),
    checkpoint and judge: machine-hours, steps, and the mean paired difference to the teacher with its interval."""
    rows = []
    for arm, runs in arms.items():
        for (run, steps, metric), c in judged[judged["run"].isin(runs)].groupby(["run", "steps", "metric"]):
            j = verdicts.judge((c["value"] - c["teacher"]).to_numpy(float), 0.0, True)
            rows.append({"arm": arm, "run": run, "steps": int(steps), "hours": float(c["hours"].iloc[0]),
                         "metric": metric, "delta": j["mean"], "lo": j["lo"], "hi": j["hi"], "n": j["n"]})
    return pd.DataFrame(rows, columns=COLUMNS).sort_values(["arm", "metric", "hours"], ignore_index=True)


def at_equal_hours(table: pd.DataFrame) -> pd.DataFrame:
    """Each arm's latest judged checkpoint at or before the machine-hours every arm has reached, one row per arm
    and judge, with that common budget; empty with fewer than two arms."""
    if table["arm"].nunique() < 2:
        return pd.DataFrame(columns=COLUMNS + ["budget_hours"])
    budget = float(table.groupby("arm")["hours"].max().min())
    upto = table[table["hours"] <= budget + 1e-9].sort_values("hours")
    return upto.groupby(["arm", "metric"]).tail(1).assign(budget_hours=budget).reset_index(drop=True)


def plot(table: pd.DataFrame):
    """One panel per judge: each arm's paired difference to the teacher (0 = the teacher's own score) against
    machine-hours, with 95 % intervals; legend outside the axes. Returns the figure."""
    metrics = [m for m in JUDGES if m in set(table["metric"])]
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.2 * max(1, len(metrics)) + 2.0, 3.2), squeeze=False,
                             sharex=True)
    for ax, metric in zip(axes[0], metrics):
        for arm, g in table[table["metric"] == metric].groupby("arm", sort=False):
            err = np.vstack([g["delta"] - g["lo"], g["hi"] - g["delta"]])
            ax.errorbar(g["hours"], g["delta"], yerr=np.nan_to_num(err), marker="o", ms=4, capsize=2, lw=1, label=arm)
        ax.axhline(0.0, color="k", lw=0.6)
        ax.set_title(JUDGES[metric], fontsize=9, loc="left")
        ax.set_xlabel("machine-hours")
    axes[0, 0].set_ylabel("student - teacher (held-out)")
    if metrics:
        axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def best_arm(table: pd.DataFrame, metric: str = "dnsmos_sig") -> dict | None:
    """The arm whose latest judged checkpoint is closest to the teacher on `metric`, with its slope over the last
    doubling of machine-hours: the change from its checkpoint nearest half those hours (its earliest where none is
    that early), per doubling. None where no arm is judged on `metric`."""
    rows = table[table["metric"] == metric].sort_values("hours")
    if rows.empty:
        return None
    last = rows.groupby("arm").tail(1).sort_values("delta", ascending=False).iloc[0]
    own = rows[rows["arm"] == last["arm"]]
    then = own[own["hours"] <= last["hours"] / 2]
    then = then.iloc[-1] if len(then) else own.iloc[0]
    doublings = np.log2(last["hours"] / then["hours"]) if then["hours"] > 0 else 0.0
    return {"arm": last["arm"], "run": last["run"], "hours": float(last["hours"]), "delta": float(last["delta"]),
            "lo": float(last["lo"]), "hi": float(last["hi"]), "from_hours": float(then["hours"]),
            "slope": float((last["delta"] - then["delta"]) / doublings) if doublings > 0 else np.nan}


def best_line(best: dict, max_drop: float, metric: str = "dnsmos_sig") -> str:
    """best_arm's finding: the arm, its distance to the teacher against the bound (a drop of `max_drop`) and its
    slope per doubling of machine-hours, or that it has no earlier checkpoint to take one from."""
    margin = best["delta"] + max_drop  # >= 0: within the bound
    slope = (f"over the last doubling of machine-hours ({best['from_hours']:.2f} to {best['hours']:.2f}) it moved "
             f"{best['slope']:+.3f} per doubling" if np.isfinite(best["slope"]) else
             "it has no judged checkpoint at half its hours, so no slope yet")
    return (f"Best arm on {JUDGES[metric]}: {best['arm']} (`{best['run']}`, {best['hours']:.2f} machine-hours), "
            f"{best['delta']:+.3f} [{best['lo']:+.3f}, {best['hi']:+.3f}] against the teacher on the held-out sentences, "
            f"{'within' if margin >= 0 else 'outside'} the bound of a {max_drop:.2f} drop by {abs(margin):.3f}; {slope}.")
