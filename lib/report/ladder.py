"""The adaptation ladder drawn (issue 68 item 5): for each method, the words an adapted voice loses beyond the rung's
own clips and the share of the way to the rung's voice it gets, against the rung's distance from the teacher, with
the bounds drawn. Reads the recorded tables only (tts-lab speaker ladder, tts-lab study ladder-judge)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SHARE_TARGET = 0.5  # the SECS target drawn: half the way from the teacher to the rung (the judged table's halfway)


def frame(judged: pd.DataFrame, distances: pd.DataFrame) -> pd.DataFrame:
    """One row per judged pack with its rung's distance (SECS to the teacher, F0 in semitones), nearest rung first."""
    cols = ["rung", "secs_to_teacher", "f0_semitones"]
    out = judged.merge(distances[cols], on="rung", how="left")
    return out.sort_values(["secs_to_teacher", "method"], ascending=[False, True]).reset_index(drop=True)


def table(f: pd.DataFrame) -> pd.DataFrame:
    """The ladder in words a reader needs no key for: rung, distance, method, training clips, budget, WER excess
    [95 % CI] with its verdict, SECS share of the way with its verdict, F0 in Hz of the pack against the rung's."""
    ci = lambda m, lo, hi: f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" if np.isfinite(lo) and np.isfinite(hi) else f"{m:+.3f}"
    return pd.DataFrame({
        "rung": f["rung"], "SECS to teacher": f["secs_to_teacher"].round(3), "method": f["method"],
        "clips": f["clips"] if "clips" in f else np.nan, "steps": f["steps"],
        "machine-hours": f["machine_hours"].round(2), "n": f["n"],
        "WER excess [95 % CI]": [ci(*r) for r in f[["wer_excess", "wer_excess_lo", "wer_excess_hi"]].to_numpy()],
        "WER bound": f["wer_verdict"],
        "SECS share of the way": f["secs_share"].round(2), "half the way": f["secs_verdict"],
        "F0 Hz (pack / rung)": [f"{a:.0f} / {b:.0f}" for a, b in f[["f0_hz", "f0_own_hz"]].to_numpy()]})


def plot(f: pd.DataFrame, wer_bound: float, path: Path):
    """Two panels against the rung's SECS to the teacher (farther to the right): WER excess with its interval and the
    word bound, and the share of the way to the rung's voice with the halfway target; one marker per method."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
    for method, g in f.groupby("method"):
        x = 1 - g["secs_to_teacher"]
        err = np.vstack([g["wer_excess"] - g["wer_excess_lo"], g["wer_excess_hi"] - g["wer_excess"]])
        ax[0].errorbar(x, g["wer_excess"], yerr=np.nan_to_num(err), marker="o", capsize=3, ls="", label=method)
        ax[1].plot(x, g["secs_share"], marker="o", ls="", label=method)
    ax[0].axhline(wer_bound, color="grey", lw=0.8, ls="--")
    ax[0].set_ylabel("WER excess over the rung's own clips")
    ax[1].axhline(SHARE_TARGET, color="grey", lw=0.8, ls="--")
    ax[1].set_ylabel("SECS: share of the way to the rung")
    for a in ax:
        a.set_xlabel("distance: 1 - SECS of the rung to the teacher")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return fig


def reach_lines(f: pd.DataFrame, n) -> list[str]:
    """The ladder's answer per method (issue 68): up to which rung, nearest the teacher first, it keeps its words
    (every rung up to there met the word bound with some pack of the method), and at which it first did not, with
    that pack's WER excess, its interval and n, and its F0 against the rung's; `n` formats and keeps each number."""
    lines = []
    judged = f[f["n"].fillna(0) > 0].sort_values("secs_to_teacher", ascending=False)
    for method, g in judged.groupby("method", sort=False):
        kept, stop = None, None
        for rung, r in g.groupby("rung", sort=False):
            if (r["wer_verdict"] == "met").any():
                kept = r[r["wer_verdict"] == "met"].iloc[0]
                continue
            stop = r.sort_values("wer_excess").iloc[0]  # its best pack on the rung
            break
        said = (f"`{method}` keeps its words up to `{kept['rung']}` (SECS {n(kept['secs_to_teacher'])} to the teacher)"
                if kept is not None else f"`{method}` keeps its words on no rung judged")
        if stop is not None:
            said += (f" and not at `{stop['rung']}` (SECS {n(stop['secs_to_teacher'])}): WER excess "
                     f"{n(stop['wer_excess'], '+.3f')} [{n(stop['wer_excess_lo'], '+.3f')}, "
                     f"{n(stop['wer_excess_hi'], '+.3f')}] over the rung's own clips at n = {n(stop['n'], '.0f')}, "
                     f"{stop['wer_verdict']}, its F0 {n(stop['f0_hz'], '.0f')} Hz where the rung's is "
                     f"{n(stop['f0_own_hz'], '.0f')} Hz")
        lines.append(said + ".")
    return lines
