"""Issue 66's two diagnoses of the 5x voice's decoder, read from their recorded folders for notebook 04 and the
report: the adversary's gate (`tts-lab study adversary-gate`: gate_setup, gate_curve, gate CSVs and the bounds in
env.json) and the magnitude study (`tts-lab study magnitude-gap`: judged, bands, consistency CSVs)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.bounds import judge

GATE_COLUMNS = ["arm", "discriminators", "disc_segment", "lr_d", "objective", "disc_steps", "loss_d_to_chance",
                "lowest_loss_d_to_chance", "adv_share", "learns", "share_holds", "judged", "passes"]


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: record the study first (README of outputs/recorded)")
    return pd.read_csv(path)


def gate(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(one row per arm: its adversary and how far its discriminators got, the gate curve, the bounds it was held
    to) from a recorded adversary-gate folder."""
    table = _read(folder, "gate_setup.csv").merge(_read(folder, "gate.csv"), on="arm")
    table["lr_d"] = [f"{v:g}" for v in table["lr_d"]]  # 1e-4 survives a table's rounding
    bounds = json.loads((Path(folder) / "env.json").read_text()).get("bounds", {})
    return table[[c for c in GATE_COLUMNS if c in table]], _read(folder, "gate_curve.csv"), bounds


def gate_plot(curve: pd.DataFrame, bounds: dict):
    """The discriminators' loss over chance against their steps, an arm a line, with chance and the gate's bar."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for arm, c in curve.groupby("arm", sort=False):
        ax.plot(c["disc_steps"], c["loss_d_to_chance"], marker=".", label=arm)
    ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="chance (a constant guess)")
    if "learns" in bounds:
        ax.axhline(bounds["learns"], color="black", lw=0.8, ls="--", label="the gate: clearly below chance")
    ax.set_xlabel("discriminator steps")
    ax.set_ylabel("discriminator loss / chance")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def gate_line(table: pd.DataFrame, bounds: dict) -> str:
    """The gate's answer in a sentence: which arms pass, or, where none does, how close the best came."""
    passed = table[table["passes"]]
    if len(passed):
        return f"Passed the gate: {', '.join(f'`{a}`' for a in passed['arm'])}."
    best = table.loc[table["lowest_loss_d_to_chance"].idxmin()]
    return (f"No arm passes the gate: in {int(table['disc_steps'].max())} discriminator steps at most, no "
            f"discriminator's loss went below {bounds.get('learns', np.nan):.2f} of chance; the lowest was "
            f"{best['lowest_loss_d_to_chance']:.3f} (`{best['arm']}`), so no arm reached a judge.")


def magnitude(folder: Path) -> pd.DataFrame:
    """Per variant of the magnitude study and measure: the mean paired difference to the teacher's own audio with
    its 95 % bootstrap interval (the judges), or the mean (PESQ-WB and mel L1, against that audio), and n."""
    judged = _read(folder, "judged.csv")
    rows = []
    for (variant, metric), c in judged.groupby(["variant", "metric"], sort=False):
        paired = c["teacher"].notna().all()
        d = (c["value"] - c["teacher"]).to_numpy(float) if paired else c["value"].to_numpy(float)
        j = judge(d, 0.0, True) if paired else {"lo": np.nan, "hi": np.nan, "n": int(np.isfinite(d).sum())}
        rows.append({"variant": variant, "metric": metric, "value": float(np.nanmean(d)), "lo": j["lo"],
                     "hi": j["hi"], "n": j["n"], "against_teacher": paired})
    return pd.DataFrame(rows)


def magnitude_wide(table: pd.DataFrame) -> pd.DataFrame:
    """magnitude() as one row per variant, a column per measure, each '+0.000 [lo, hi]' or a mean."""
    cell = lambda r: (f"{r.value:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]" if r.against_teacher
                      else f"{r.value:.3f}")
    return table.assign(cell=[cell(r) for r in table.itertuples()]).pivot_table(
        index="variant", columns="metric", values="cell", aggfunc="first", sort=False)


def bands(folder: Path) -> pd.DataFrame:
    """The per-bin statistics by frequency band (bias in log-magnitude, the student's spread over the teacher's)."""
    return _read(folder, "bands.csv")


def consistency(folder: Path) -> dict:
    """The mean STFT inconsistency of the student's spectra and of the teacher's (a check: near 0)."""
    c = _read(folder, "consistency.csv")
    return {k: float(c[k].mean()) for k in ("student", "teacher")}


def magnitude_line(table: pd.DataFrame, consist: dict, metric: str = "dnsmos_p808") -> str:
    """The magnitude study's answer on `metric`: how much of the decoder's gap its magnitudes hold (its own
    magnitudes with the teacher's phase), what its head's rank allows (its own span, and the best subspace of each
    rank), whether a per-bin correction helps, and how consistent its spectra are."""
    m = table[table["metric"] == metric].set_index("variant")
    fmt = lambda v: f"{m.loc[v, 'value']:+.3f} [{m.loc[v, 'lo']:+.3f}, {m.loc[v, 'hi']:+.3f}]"
    ranks = [v for v in m.index if v.startswith("teacher's magnitude, rank")]
    ceilings = ", ".join(f"rank {v.split('rank ')[1].split(' ')[0]} {fmt(v)}" for v in ranks)
    fixes = [v for v in m.index if v.endswith("corrected")]
    with_phase = "student, teacher's phase"
    better = [v for v in fixes if m.loc[v, "value"] > m.loc["student", "value"]]
    return (f"On the development set ({int(m.loc['student', 'n'])} sentences), {metric} against the teacher: the "
            f"student {fmt('student')}; with the teacher's phase {fmt(with_phase)} (its magnitude part). The "
            f"teacher's own magnitudes projected onto this head's span score "
            f"{fmt(next(v for v in m.index if 'span' in v))}; onto the best subspace of each rank: {ceilings}. "
            + (f"Per-bin corrections that help: {', '.join(better)}. " if better else
               f"No per-bin correction helps ({', '.join(f'{v} {fmt(v)}' for v in fixes)}): none ships. ")
            + f"The student's spectra are {consist['student']:.2f} away from any waveform's (STFT consistency; the "
              f"teacher's {consist['teacher']:.1e}).")
