"""The report's parts below the answers: per technique a table of its few best variants with intervals, one forest
figure of its quality deltas and its notebook's own findings; the appendix folds the full data into <details>
blocks with every result CSV linked."""
from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path

import mistune
import numpy as np
import pandas as pd
from PIL import Image

from lib.report import findings
from lib.report.answers import describe

CSS = """<style>
.tts-answers{border-collapse:collapse;width:100%;table-layout:fixed;font-size:12px}
.tts-answers th,.tts-answers td{border-bottom:1px solid #ddd;padding:3px 5px;text-align:left!important;
  vertical-align:top!important;white-space:normal!important;overflow-wrap:break-word;hyphens:none}
.tts-answers th{background:#f3f3f3}
details.tts-fold{margin:6px 0;border:1px solid #ddd;border-radius:4px;padding:4px 8px}
details.tts-fold>summary{cursor:pointer;font-weight:600}
details.tts-fold table{font-size:11px}
</style>"""
ANSWER_WIDTHS = {"technique": "8%", "best variant": "14%", "quality bounds": "8%", "speed": "7%", "size": "7%",
                 "ΔDNSMOS [95 % CI]": "9%", "ΔWER [95 % CI]": "9%", "ΔSECS [95 % CI]": "9%", "relies on": "11%",
                 "verdict": "18%"}  # the answers' columns: names and verdicts get the room
PANELS = (("dnsmos", "ΔDNSMOS P.808", "max_dnsmos_drop", -1), ("wer", "ΔWER", "max_wer_increase", 1),
          ("secs", "ΔSECS to the speaker", None, 0))


def wrap_table(table: pd.DataFrame, widths: dict[str, str] | None = None) -> str:
    """A table as HTML that wraps long names and never cuts a cell (fixed layout, `widths` per column)."""
    cols = "".join(f"<col style='width:{(widths or {}).get(c, 'auto')}'>" for c in table.columns)
    body = table.to_html(index=False, escape=True, border=0, classes="tts-answers")
    return CSS + body.replace("<thead>", f"<colgroup>{cols}</colgroup><thead>", 1)


def best_few(cands: pd.DataFrame, k: int = 4) -> pd.DataFrame:
    """The first `k` candidates (best first) in the words of the answers, without the technique's name."""
    rows = [describe(r) for _, r in cands.head(k).iterrows()]
    out = pd.DataFrame(rows).drop(columns=["technique"]).rename(columns={"best variant": "variant"})
    if "ΔSECS [95 % CI]" in out and out["ΔSECS [95 % CI]"].eq("–").all():
        out = out.drop(columns=["ΔSECS [95 % CI]"])
    return out


def forest(cands: pd.DataFrame, title: str):
    """Each variant's paired quality deltas against the baseline with 95 % intervals, one panel per measure, the
    bound as a dashed line; the speed-up is in the variant's label. None when nothing was judged."""
    import matplotlib.pyplot as plt
    panels = [p for p in PANELS if f"d_{p[0]}_mean" in cands and cands[f"d_{p[0]}_mean"].notna().any()]
    if cands.empty or not panels:
        return None
    c = cands.iloc[::-1]
    labels = [f"{v} ({s:.2f}× speed)" if np.isfinite(s) else v for v, s in zip(c["variant"], c["speedup"])]
    colour = c["bounds"].map({"met": "#2a7d2a", "undecided": "#c08a00", "not judged": "#888"}).fillna("#b03030")
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 2.2, 0.24 * len(c) + 1.1), sharey=True,
                             squeeze=False)
    y = np.arange(len(c))
    for ax, (name, what, bound, sign) in zip(axes[0], panels):
        m, lo, hi = (c[f"d_{name}_{p}"].to_numpy(float) for p in ("mean", "lo", "hi"))
        err = np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])
        ax.errorbar(m, y, xerr=err, fmt="none", ecolor="#999", lw=1)
        ax.scatter(m, y, c=list(colour), s=16, zorder=3)
        ax.axvline(0, color="#444", lw=0.6)
        if bound and bound in c and (c["bounds_against"] == c["baseline"]).all() and np.isfinite(c[bound].iloc[0]):
            ax.axvline(sign * c[bound].iloc[0], color="#b03030", lw=0.8, ls="--")
        ax.set_xlabel(what, fontsize=8); ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(y, labels)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def img(fig_or_path, width: int | None = None, alt: str = "figure") -> str:
    """An <img> with the figure (or a PNG file) embedded as a 256-colour PNG: a third of matplotlib's file."""
    import matplotlib.pyplot as plt
    if isinstance(fig_or_path, (str, Path)):
        picture = Image.open(fig_or_path)
    else:
        buf = io.BytesIO()
        fig_or_path.savefig(buf, format="png", dpi=80)
        plt.close(fig_or_path)
        picture = Image.open(buf)
    out = io.BytesIO()
    picture.convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    data = base64.b64encode(out.getvalue()).decode()
    size = f"width:{width}px;" if width else ""
    return f"<img alt='{html.escape(alt)}' style='{size}max-width:100%' src='data:image/png;base64,{data}'>"


def notebook_findings(root: Path, notebook: str) -> str:
    """The generated findings (lib.report.findings) of the executed notebook under outputs/<profile>/notebooks/,
    as Markdown; '' where it has none or did not run."""
    path = root / "notebooks" / f"{notebook}.ipynb"
    if not path.exists():
        return ""
    outs = findings.findings_outputs(json.loads(path.read_text()))
    return "\n\n".join(md.replace("## What we found", "", 1).strip() for md, _ in outs)


def fold(summary: str, body: str, open_: bool = False) -> str:
    """A <details> block: the summary always shown, the body behind a click."""
    return (f"<details class='tts-fold'{' open' if open_ else ''}><summary>{html.escape(summary)}</summary>"
            f"{body}</details>")


def csv_links(root: Path, recorded: Path | None = None) -> str:
    """A link to every CSV the notebooks wrote under outputs/<profile>/ and to the results of the runs recorded on
    other machines that the report reads (`recorded/<device>/<NN_notebook>/`), relative to report.html, by folder."""
    found = [p for p in sorted(root.glob("*/**/*.csv")) if not {"audio", "notebooks"} & set(p.relative_to(root).parts)]
    if recorded is not None:
        found += sorted(recorded.glob("*/[0-9][0-9]_*/*.csv"))
    groups = {}
    for p in found:
        rel = Path(os.path.relpath(p, root))
        folder = rel.parent.as_posix().replace("../", "")
        groups.setdefault(folder, []).append(f"<a href='{html.escape(rel.as_posix())}'>{html.escape(rel.name)}</a>")
    items = "".join(f"<li><code>{html.escape(nb)}</code>: {', '.join(links)}</li>" for nb, links in groups.items())
    return f"<ul>{items}</ul>" if items else ""


def technique_html(tech, cands: pd.DataFrame, root: Path, with_findings: bool = True) -> str:
    """One technique's section: its few best variants with intervals, its forest figure, and (once per notebook)
    the findings its notebook rendered from its own run."""
    head = f"<h3>{html.escape(tech.name.capitalize())} <small>(notebook <code>{tech.notebook}</code>)</small></h3>"
    if cands.empty:
        return head + f"<p>No variant of this technique was judged on sentences in this run of {tech.notebook}.</p>"
    against = cands["bounds_against"].iloc[0]
    n = int(cands["d_dnsmos_n"].max())
    how = ("from the run's means (it kept no per-sentence scores, so no intervals)" if cands["means_only"].iloc[0]
           else f"sentence by sentence, with 95 % bootstrap intervals over {n} sentence{'s' * (n != 1)}")
    bounds = (f"Deltas are each variant minus <code>{html.escape(tech.baseline)}</code>, {how}; "
              "quality bounds: DNSMOS drop ≤ "
              f"{cands['max_dnsmos_drop'].iloc[0]:g} and WER rise ≤ {cands['max_wer_increase'].iloc[0]:g} against "
              f"<code>{html.escape(against)}</code>.")
    body = head + f"<p style='font-size:12px'>{bounds}</p>" + wrap_table(best_few(cands))
    dashes = " (red dashes: the bound)" if against == tech.baseline else f" (bounds against {against}: in the table)"
    fig = forest(cands, f"{tech.name}: every judged variant against {tech.baseline}{dashes}")
    body += img(fig) if fig is not None else ""
    found = notebook_findings(root, tech.notebook) if with_findings else ""
    if found:
        body += fold(f"What notebook {tech.notebook[:2]} found", mistune.html(found), open_=True)
    elif not with_findings:
        body += f"<p>Its notebook's findings are shown with the section above ({tech.notebook}).</p>"
    return body
