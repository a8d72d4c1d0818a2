"""Each decoder's training arms compared at equal machine-hours (issue 39): each judged checkpoint's paired
difference to the teacher's own audio on the held-out sentences, per judge, with its 95 % bootstrap interval; one
row of panels per decoder, one panel per judge, against machine-hours. Reads the judged file beside the ledger
(lib.training.ledger.JUDGED) only."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lib.report import verdicts

# the panels, in order: the signal score first (where the students lose), then the words
JUDGES = {"dnsmos_sig": "DNSMOS SIG", "dnsmos_ovrl": "DNSMOS OVRL", "dnsmos_p808": "DNSMOS P.808",
          "distillmos": "Distill-MOS", "wer": "WER"}
LOWER_IS_BETTER = {"wer"}  # the judges whose difference to the teacher is better below zero
COLUMNS = ["decoder", "arm", "run", "steps", "hours", "metric", "delta", "lo", "hi", "n", "own"]


def compare(judged: pd.DataFrame, decoders: dict[str, dict[str, list[str]]]) -> pd.DataFrame:
    """Per decoder, arm (its label -> the ledger runs it is made of, e.g. the regression pack it started from and its
    own run), checkpoint and judge: machine-hours, steps, the mean paired difference to the teacher with its
    interval, and whether the checkpoint is the arm's own (of its last run) or its start."""
    wanted = {run for arms in decoders.values() for runs in arms.values() for run in runs}
    points = []  # each checkpoint judged once, however many arms share it (the regression pack is every arm's start)
    for (run, steps, metric), c in judged[judged["run"].isin(wanted)].groupby(["run", "steps", "metric"]):
        j = verdicts.judge((c["value"] - c["teacher"]).to_numpy(float), 0.0, True)
        points.append({"run": run, "steps": int(steps), "hours": float(c["hours"].iloc[0]), "metric": metric,
                       "delta": j["mean"], "lo": j["lo"], "hi": j["hi"], "n": j["n"]})
    rows = [{"rank": rank, "decoder": decoder, "arm": arm, **p, "own": p["run"] == runs[-1]}
            for rank, (decoder, arm, runs) in enumerate((d, a, r) for d, arms in decoders.items()
                                                        for a, r in arms.items())
            for p in points if p["run"] in runs]
    table = pd.DataFrame(rows, columns=["rank", *COLUMNS]).sort_values(["rank", "metric", "hours"], kind="stable")
    return table.drop(columns="rank").reset_index(drop=True)  # the decoders and their arms in the order given


def at_equal_hours(table: pd.DataFrame) -> pd.DataFrame:
    """Per decoder, each arm's latest judged checkpoint at or before the machine-hours all its arms that went on
    have reached, one row per arm and judge, with that common budget. An arm that added no machine time (the
    regression pack the others start from, or a phase on a lent GPU), or under half the time of the arm second
    furthest (one stopped early, or just begun: `short`), shows its own latest hours and does not hold the others
    back. A decoder with fewer than two arms compares with nothing."""
    parts = []
    for _, own in table.groupby("decoder", sort=False):
        if own["arm"].nunique() < 2:
            continue
        tops = own.groupby("arm")["hours"].max()
        shared = own.groupby("run")["arm"].nunique().pipe(lambda n: n[n > 1].index)  # runs in several arms: starts
        start = own.loc[own["run"].isin(shared), "hours"].max() if len(shared) else own["hours"].min()
        went_on = tops[tops > start + 1e-9] - start  # each arm's own machine-hours
        cut = went_on.sort_values(ascending=False).iloc[min(1, len(went_on) - 1)] / 2 if len(went_on) else 0.0
        short = went_on.index[went_on < cut - 1e-9]  # against the second furthest: no one long arm pushes all out
        went_on = went_on.drop(short)
        budget = float(went_on.min() + start if len(went_on) else tops.min())
        upto = own[own["hours"] <= budget + 1e-9].sort_values("hours", kind="stable")
        parts.append(upto.groupby(["arm", "metric"]).tail(1).sort_index().assign(
            budget_hours=budget, short=lambda f: f["arm"].isin(short)))
    return (pd.concat(parts, ignore_index=True) if parts
            else pd.DataFrame(columns=COLUMNS + ["budget_hours", "short"]))


def equal_hours_lines(equal: pd.DataFrame, n) -> str:
    """One decoder's at_equal_hours rows as a nested Markdown list: an item per arm (at its hours; said where it is
    short of the budget, or where no checkpoint of its own is judged yet) with each judge's difference to the
    teacher and its interval, in JUDGES' order; a judge read at other hours names them. `n` formats (and keeps) each
    number, as Findings.number does."""
    items = []
    for arm, own in equal[equal["metric"].isin(JUDGES)].groupby("arm", sort=False):
        own = own.assign(order=own["metric"].map(list(JUDGES).index)).sort_values("order")
        hours = own["hours"].max()
        note = (" (no checkpoint of its own judged yet: its start)" if not own["own"].any() else
                " (short of the budget: stopped early or just begun)" if own["short"].any() else "")
        items.append(f"\n  - {arm}, {n(hours)} h{note}: " + ", ".join(
            f"{JUDGES[r.metric]} {n(r.delta, '+.3f')} [{n(r.lo, '+.3f')}, {n(r.hi, '+.3f')}]"
            + (f" (at {n(r.hours)} h)" if r.hours < hours - 1e-9 else "") for r in own.itertuples()))
    return "".join(items)


def plot(table: pd.DataFrame):
    """One row of panels per decoder, one panel per judge: each arm's paired difference to the teacher (0 = the
    teacher's own score) against machine-hours, with 95 % intervals; each row's legend outside its axes."""
    metrics = [m for m in JUDGES if m in set(table["metric"])]
    decoders = list(dict.fromkeys(table["decoder"])) or [""]
    cols = max(1, len(metrics))
    fig, axes = plt.subplots(len(decoders), cols, figsize=(3.2 * cols + 2.6, 3.0 * len(decoders)), squeeze=False)
    for row, decoder in zip(axes, decoders):
        for ax, metric in zip(row, metrics):
            own = table[(table["decoder"] == decoder) & (table["metric"] == metric)]
            groups = list(own.groupby("arm", sort=False))
            for rank, (arm, g) in enumerate(groups):  # the first arm on top: the shared start shows as its point
                err = np.vstack([g["delta"] - g["lo"], g["hi"] - g["delta"]])
                ax.errorbar(g["hours"], g["delta"], yerr=np.nan_to_num(err), marker="o", ms=4, capsize=2, lw=1,
                            label=arm, zorder=2 + len(groups) - rank)
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_title(JUDGES[metric] + (" (lower is better)" if metric in LOWER_IS_BETTER else ""), fontsize=9,
                         loc="left")
            ax.set_xlabel("machine-hours")
        row[0].set_ylabel(f"{decoder}\nstudent - teacher (held-out)" if decoder else "student - teacher (held-out)",
                          fontsize=9)
        if metrics and row[-1].get_legend_handles_labels()[0]:
            row[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def best_arm(table: pd.DataFrame, metric: str = "dnsmos_sig", decoder: str | None = None) -> dict | None:
    """The arm (of `decoder`, else of any) whose latest judged checkpoint is closest to the teacher on `metric`, with
    its slope over the last doubling of machine-hours: the change from its checkpoint nearest half those hours (its
    earliest where none is that early), per doubling. None where no arm is judged on `metric`."""
    rows = table[(table["metric"] == metric) & ((table["decoder"] == decoder) if decoder is not None else True)]
    rows = rows.sort_values("hours", kind="stable")
    if rows.empty:
        return None
    last = rows.groupby(["decoder", "arm"], sort=False).tail(1).drop_duplicates("run")  # no own run yet: its start
    last = last.sort_values("delta", ascending=metric in LOWER_IS_BETTER, kind="stable").iloc[0]
    own = rows[(rows["decoder"] == last["decoder"]) & (rows["arm"] == last["arm"])]
    then = own[own["hours"] <= last["hours"] / 2]
    then = then.iloc[-1] if len(then) else own.iloc[0]
    doublings = np.log2(last["hours"] / then["hours"]) if then["hours"] > 0 else 0.0
    return {"decoder": last["decoder"], "arm": last["arm"], "run": last["run"], "hours": float(last["hours"]),
            "delta": float(last["delta"]), "lo": float(last["lo"]), "hi": float(last["hi"]),
            "from_hours": float(then["hours"]),
            "slope": float((last["delta"] - then["delta"]) / doublings) if doublings > 0 else np.nan}


def best_line(best: dict, max_drop: float, metric: str = "dnsmos_sig") -> str:
    """best_arm's finding: the arm, its distance to the teacher against the bound (a drop of `max_drop`) and its
    slope per doubling of machine-hours, or that it has no earlier checkpoint to take one from."""
    margin = best["delta"] + max_drop  # >= 0: within the bound
    slope = (f"over the last doubling of machine-hours ({best['from_hours']:.2f} to {best['hours']:.2f}) it moved "
             f"{best['slope']:+.3f} per doubling" if np.isfinite(best["slope"]) else
             "it has no judged checkpoint at half its hours, so no slope yet")
    of = f" of the {best['decoder']}" if best.get("decoder") else ""
    return (f"Best arm{of} on {JUDGES[metric]}: {best['arm']} (`{best['run']}`, {best['hours']:.2f} machine-hours), "
            f"{best['delta']:+.3f} [{best['lo']:+.3f}, {best['hi']:+.3f}] against the teacher on the held-out "
            f"sentences, {'within' if margin >= 0 else 'outside'} the bound of a {max_drop:.2f} drop "
            f"by {abs(margin):.3f}; {slope}.")


def gap_table(frame: pd.DataFrame) -> pd.DataFrame:
    """lib.studies.phase_gap's scores as, per decoder, swap and judge, the mean paired difference to the teacher's
    own audio with its 95 % bootstrap interval (decoder, swap, metric, delta, lo, hi, n; no interval under two
    sentences), in the frame's order."""
    rows = []
    for (decoder, swap, metric), c in frame.groupby(["decoder", "swap", "metric"], sort=False):
        d = (c["value"] - c["teacher"]).to_numpy(float)
        j = verdicts.judge(d, 0.0, True)  # no interval under two sentences; the mean of the finite ones still stands
        mean = float(np.mean(d[np.isfinite(d)])) if np.isfinite(d).any() else np.nan
        rows.append({"decoder": decoder, "swap": swap, "metric": metric, "delta": mean, "lo": j["lo"],
                     "hi": j["hi"], "n": j["n"]})
    return pd.DataFrame(rows, columns=["decoder", "swap", "metric", "delta", "lo", "hi", "n"])


def gap_lines(table: pd.DataFrame, n, metric: str = "dnsmos_sig") -> str:
    """gap_table's `metric` as a nested Markdown list, an item per decoder: each swap's difference to the teacher
    with its interval, and the share of its own gap that the teacher's phase closes (the swaps named as
    lib.studies.phase_gap.SWAPS names them). `n` formats (and keeps) each number, as Findings.number does."""
    items = []
    for decoder, own in table[table["metric"] == metric].groupby("decoder", sort=False):
        by = own.set_index("swap")
        parts = [f"with {swap} {n(r.delta, '+.3f')}" + (f" [{n(r.lo, '+.3f')}, {n(r.hi, '+.3f')}]" if np.isfinite(r.lo)
                                                        else "") for swap, r in by.iterrows()]
        first, phase = by["delta"].get("its own spectra", np.nan), by["delta"].get("the teacher's phase", np.nan)
        share = (f"; the teacher's phase closes {n(100 * (1 - phase / first), '.0f')} % of its gap"
                 if first < 0 and np.isfinite(phase) else "")  # NaN compares False: no share
        items.append(f"\n  - `{decoder}`: " + ", ".join(parts) + share)
    return "".join(items)
