"""The notebooks' figures that take more than a call: each draws from values a study returned, saves the PNG beside
the run's results and returns the figure (the notebook shows it)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from lib.report.report import label_points


def _save(fig, path: Path | None):
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def adaptation_runs(ledger: pd.DataFrame, path: Path | None = None):
    """Notebook 02's long runs: validation SECS and WER of each packed checkpoint against machine-hours, one line per
    run (the ledger's adapter rows that carry a WER)."""
    import matplotlib.pyplot as plt
    rows = ledger[(ledger["part"] == "adapter") & ledger["heldout_wer"].notna()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for run, g in rows.sort_values("hours").groupby("run"):
        for ax, col in zip(axes, ("heldout_secs", "heldout_wer")):
            ax.plot(g["hours"], g[col], marker="o", ms=3, label=run)
    axes[0].set_ylabel("SECS to the speaker (validation)"); axes[1].set_ylabel("WER (validation)")
    for ax in axes:
        ax.set_xlabel("machine-hours")
    if len(rows):
        axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _save(fig, path)


def secs_vs_trainable(table: pd.DataFrame, methods, speaker: str, path: Path | None = None):
    """Notebook 02: SECS to the target speaker against trainable parameters (% of full), with the unadapted voice and
    the speaker's self-similarity as lines."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    pts, t = table[table["variant"].isin(list(methods))], table.set_index("variant")
    ax.scatter(pts["trainable_pct_of_full"], pts["secs"], s=30)
    label_points(ax, pts["trainable_pct_of_full"], pts["secs"], pts["variant"])
    ax.axhline(t.loc["teacher", "secs"], color="grey", lw=0.8, ls="--", label="teacher (no adaptation)")
    ax.axhline(t.loc[speaker, "secs"], color="green", lw=0.8, ls=":", label="the speaker's self-similarity (ceiling)")
    ax.set_xscale("log"); ax.set_xlabel("trainable parameters, % of full fine-tuning")
    ax.set_ylabel("SECS to the target speaker"); ax.legend(fontsize=8)
    ax.set_title("speaker similarity against what was trained (held-out sentences)")
    return _save(fig, path)


def throughput_ttfa(curves: dict, ttfa: pd.DataFrame, *, throughput_target: float, ttfa_target_ms: float,
                    gpu_ttfa_target_ms: float, ttfa_words: int, path: Path | None = None):
    """Notebook 05: offline throughput by batch size per (variant, source) (`hardware.throughput_curves`), and time
    to first audio per engine (`hardware.ttfa_frame`), with the targets as lines."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for (label, source), g in curves.items():
        ax[0].plot(g["batch"], g["throughput_xrt"], "-o" if source == "cpu" else "--s", label=f"{label} ({source})")
    ax[0].set_xscale("log", base=2); ax[0].set_yscale("log"); ax[0].axhline(throughput_target, color="grey", lw=0.5)
    ax[0].set_xlabel("batch size"); ax[0].set_ylabel("audio s per wall s"); ax[0].set_title("offline throughput")
    ax[0].legend(fontsize=6)
    ttfa.plot.barh(ax=ax[1], logx=True)
    ax[1].axvline(ttfa_target_ms, color="grey", lw=0.5)
    ax[1].axvline(gpu_ttfa_target_ms, color="grey", lw=0.5, ls="--")
    ax[1].set_xlabel("time to first audio (ms)"); ax[1].set_title(f"streaming, {ttfa_words}-word sentences")
    return _save(fig, path)
