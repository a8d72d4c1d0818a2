"""The notebooks' figures that take more than a call: each draws from values a study returned, saves the PNG beside
the run's results and returns the figure (the notebook shows it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lib.report.report import NOTEBOOK_TITLES


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


CURVE_PANELS = (("loss_mel", "mel L1"), ("loss_adv", "generator (LSGAN)"), ("loss_d", "discriminator (LSGAN)"),
                ("loss_fm", "feature matching"), ("loss_kl", "KL (posterior to prior)"),
                ("loss_dur", "duration"), ("heldout_mel", "held-out mel L1"), ("heldout_pesq", "held-out PESQ-WB"),
                ("loss_g", "generator total"))


def plot_curves(curves: dict, path: Path | None = None, smooth: int = 5):
    """The training curves of several runs (name -> a DataFrame or a training.Curve), one panel per loss that any
    run logged; the steps where discriminators were on are where their curves start."""
    import matplotlib.pyplot as plt
    frames = {n: getattr(c, "frame", c) for n, c in curves.items()}
    panels = [(k, t) for k, t in CURVE_PANELS if any(k in f and f[k].notna().any() for f in frames.values())]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for name, f in frames.items():
            if key in f and f[key].notna().any():
                g = f.dropna(subset=[key])
                y = g[key].rolling(smooth, min_periods=1).mean() if not key.startswith("heldout") else g[key]
                ax.plot(g["step"], y, label=name, marker="o" if key.startswith("heldout") else None, ms=3)
        ax.set_title(title, fontsize=9); ax.set_xlabel("step", fontsize=8); ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def plot_quality_ci(clips: pd.DataFrame, metric: str = "dnsmos_p808", path: Path | None = None):
    """Mean `metric` per variant with its 95 % bootstrap confidence interval over clips (seaborn), one panel per
    notebook: how much of a difference between two means the number of sentences can carry."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    data = clips.dropna(subset=[metric]) if metric in clips else pd.DataFrame()
    if data.empty:
        return None
    books = list(dict.fromkeys(data["notebook"]))
    fig, axes = plt.subplots(1, len(books), figsize=(4.6 * len(books), 0.26 * data["variant"].nunique() + 2.2),
                             squeeze=False)
    for ax, nb in zip(axes.flat, books):
        d = data[data["notebook"] == nb]
        order = d.groupby("variant")[metric].mean().sort_values(ascending=False).index
        sns.pointplot(data=d, y="variant", x=metric, order=order, errorbar=("ci", 95), linestyle="none",
                      markersize=3, ax=ax)
        ax.set_title(NOTEBOOK_TITLES.get(nb, nb), fontsize=9); ax.set_ylabel(""); ax.tick_params(labelsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def label_points(ax, x, y, labels, fontsize: int = 7) -> None:
    """Annotate scatter points, nudging labels apart vertically where they would overlap (no extra dependency:
    adjustText is not installed here, and a greedy pass is enough for tens of points)."""
    pts = sorted(zip(list(x), list(y), list(labels)), key=lambda t: (t[1], t[0]))
    placed: list[tuple[float, float]] = []
    x_span = (max(x) - min(x)) or 1.0 if len(pts) else 1.0
    y_span = (max(y) - min(y)) or 1.0 if len(pts) else 1.0
    for px, py, lab in pts:
        if not (np.isfinite(px) and np.isfinite(py)):
            continue
        offset = 3
        while any(abs(px - qx) < 0.12 * x_span and abs(py + offset * y_span / 300 - qy) < 0.04 * y_span
                  for qx, qy in placed):
            offset += 9
        placed.append((px, py + offset * y_span / 300))
        ax.annotate(str(lab), (px, py), fontsize=fontsize, xytext=(4, offset), textcoords="offset points")
