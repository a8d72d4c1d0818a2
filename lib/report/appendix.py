"""The report's appendix: the full data, folded. Every notebook's tables, figures and clips, the per-variant charts
(size, memory, energy, latency, the quality intervals), the two judges, the recorded step costs, what could not
run, the provenance and a link to every result CSV, each in its own <details> block so that the page opens on the
answers."""
from __future__ import annotations

import html
from pathlib import Path

import mistune
import numpy as np
import pandas as pd

from lib.core.limits import MAX_DNSMOS_DROP, MAX_WER_INCREASE
from lib.core.results import RECORDED
from lib.report import judge_agreement, media, plots, recommend, report
from lib.report.sections import csv_links, fold, img

CLIPS_PER_NOTEBOOK = 4
STEP_COSTS = "*/*_step_costs/step_costs.csv"  # `tts-lab step-costs` runs, under the recorded folder of their CPU
STEP_COLUMNS = ["run", "cpu_model", "cpu_flags", "student", "discriminator", "precision", "segment", "objective",
                "s_per_step", "ratio_to_regression", "status", "reason"]


def step_costs(recorded: Path) -> pd.DataFrame:
    """Every recorded step-cost run, newest first by its number: each option's seconds per step and its ratio to the
    regression step, with the CPU (a run from before the objective was timed measured the recipe's)."""
    files = sorted(recorded.glob(STEP_COSTS), key=lambda f: int(f.parent.name.split("_")[0]), reverse=True)
    if not files:
        return pd.DataFrame(columns=STEP_COLUMNS)
    table = pd.concat([pd.read_csv(f).assign(run=str(f.parent.relative_to(recorded))) for f in files],
                      ignore_index=True)
    table["objective"] = table["objective"].fillna("recipe") if "objective" in table else "recipe"
    return table.reindex(columns=STEP_COLUMNS)


def efficiency_figures(df: pd.DataFrame) -> list:
    """Size on disk, peak memory and energy per variant as bars, and the latency spread (p50 dot, p90 tick, p99 end
    of the line) per variant and back-end: the per-variant charts, one figure each."""
    import matplotlib.pyplot as plt
    figs = []
    for metric, name, unit in (("size_mb", "size on disk", "MB"), ("peak_rss_mb", "peak memory (RSS)", "MB"),
                               ("energy_j_per_audio_s", "energy per audio second", "J/s")):
        t = report.metric_by_variant(df, metric)
        if t.empty:
            continue
        fig, ax = plt.subplots(figsize=(8, 0.2 * len(t) + 1.0))
        ax.barh(t["label"], t["value"], color="#5b8bd0")
        ax.set_title(name, fontsize=9); ax.set_xlabel(unit); ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        figs.append(fig)
    spread = report.latency_spread(df)
    if not spread.empty:
        fig, ax = plt.subplots(figsize=(9, 0.2 * len(spread) + 1.2))
        y = np.arange(len(spread))
        ax.hlines(y, spread["latency_ms_p50"], spread["latency_ms_p99"], color="#888")
        ax.plot(spread["latency_ms_p50"], y, "o", color="#1f5fa8", label="p50")
        ax.plot(spread["latency_ms_p90"], y, "|", color="#c0392b", markersize=10, label="p90")
        ax.set_yticks(y, spread["label"], fontsize=7); ax.set_xscale("log"); ax.set_xlabel("latency per sentence (ms)")
        ax.legend(fontsize=8); fig.tight_layout()
        figs.append(fig)
    return figs


def _markdown(lines: list[str]) -> str:
    return mistune.html("\n".join(f"- {line}" for line in lines))


def notebook_fold(profile: str, df: pd.DataFrame, st: pd.Series, root: Path) -> str:
    """One notebook's full data: its result tables by group, its figures and a few of its clips."""
    nb, parts = st["notebook"], []
    rows = report.notebook_rows(df, nb)
    if not st["has_results"] and rows.empty:
        return fold(f"{st['title']} ({nb}): no results for profile {profile} (status: {st['status']})", "")
    if st["status"] == "failed":
        parts.append("<p><b>The last run of this notebook failed</b>; these numbers are from its previous run.</p>")
    for group, table in report.grouped_tables(rows).items():
        parts.append(f"<h4>{html.escape(group)}</h4>" + report.styled(table).to_html())
    parts += [img(p, width=720) for p in media.figures(profile, nb, root.parent)]
    parts += [media.audio_tag(path, label=label, link=str(path.relative_to(root)))
              for label, path in media.clips(profile, nb, outputs=root.parent)[:CLIPS_PER_NOTEBOOK]]
    return fold(f"{st['title']} ({nb}): every variant's tables, figures and clips", "".join(parts))


def appendix(profile: str, df: pd.DataFrame, status: pd.DataFrame, env: dict, root: Path) -> str:
    """Every fold of the appendix, in reading order, as one HTML string."""
    blocks = []
    heads = report.headlines(profile, root.parent)
    if heads:
        blocks.append(fold("Targets, as each notebook judged them", _markdown(
            [f"*{report.NOTEBOOK_TITLES.get(nb, nb)}*: {line}" for nb, lines in heads.items() for line in lines])))
    rec = recommend.recommend(df, env=env)
    if not rec.empty:
        blocks.append(fold("Recommended variant per goal across notebooks (DNSMOS drop ≤ "
                           f"{MAX_DNSMOS_DROP:.2f}, WER rise ≤ {MAX_WER_INCREASE:.2f})",
                           rec.to_html(index=False, border=0)))
    links = status.assign(report=status["html"].map(lambda h: f"<a href='{h}'>executed notebook</a>" if h else ""))
    blocks.append(fold("The notebooks' runs: status, seconds and the executed notebooks",
                       links.drop(columns=["html"]).to_html(escape=False, index=False, border=0)))
    flagged, agree = judge_agreement.disagreements(df)
    text = (f"<p>Spearman's rank correlation of DNSMOS P.808 and Distill-MOS over {agree['variants']} variants: "
            f"{agree['spearman']:.2f}.</p>" if agree["variants"] >= 3 else "<p>Too few variants carry both judges.</p>")
    if len(flagged) and flagged["disagree"].any():
        text += report.styled(flagged[flagged["disagree"]].drop(columns=["disagree"])).to_html()
    blocks.append(fold("Two quality judges: where DNSMOS and Distill-MOS disagree", text))
    ci = plots.plot_quality_ci(report.per_clip(profile, root.parent), "dnsmos_p808")
    if ci is not None:
        blocks.append(fold("How sure are the quality means? DNSMOS per variant with its 95 % interval", img(ci)))
    costs = step_costs(RECORDED)
    if not costs.empty:
        blocks.append(fold("What a training step costs: adversarial against regression, per CPU (`tts-lab step-costs`)",
                           costs.to_html(index=False, border=0, float_format="{:.3f}".format, na_rep="–")))
    figs = efficiency_figures(df)
    if figs:
        blocks.append(fold("Size, memory, energy and latency of every variant", "".join(img(f) for f in figs)))
    blocks += [notebook_fold(profile, df, st, root) for _, st in status.iterrows()]
    missing = report.absent_rows(df)
    blocks.append(fold("What could not run here, and why", missing.to_html(index=False, border=0)
                       if not missing.empty else "<p>Every requested measurement ran.</p>"))
    busy = report.contended_rows(df)
    if not busy.empty:
        blocks.append(fold("Timings taken while other processes held the cores (contended: never a result)",
                           report.grey(busy).to_html()))
    blocks.append(fold("Provenance: machine, threads, library versions, git hash and date of every run",
                       report.provenance_table(profile, root.parent).to_html(index=False, border=0)))
    blocks.append(fold("Every result CSV", csv_links(root, RECORDED), open_=True))
    return "".join(blocks)
