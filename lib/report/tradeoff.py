"""The report's trade-off plot: quality against speed for every variant, readable at any count. Only the points on
the Pareto frontier and the baselines carry labels, placed from their drawn boxes so that none overlap; every point
is named on hover (an SVG <title>), so the figure is shown as SVG. Written here because adjustText and mpld3 are
not dependencies and a greedy placement over a handful of labels is enough."""
from __future__ import annotations

import io
import re
from xml.sax.saxutils import escape

import matplotlib.pyplot as plt
from matplotlib import ticker
import pandas as pd

from lib.report.recommend import pareto_front

BASELINES = ("fp32", "teacher")  # the variants every ratio is taken against: always labelled
OFFSETS = [(6, 4), (6, -12), (-6, 4), (-6, -12), (6, 14), (6, -22), (-6, 14), (-6, -22), (12, 24), (12, -32)]


def _name(r) -> str:
    return f"{r['variant']} ({r['backend']})"


def plot(qs: pd.DataFrame, x: str = "rtf", y: str = "dnsmos_p808"):
    """The figure (one marker per variant and back-end, coloured by notebook; the frontier joined) and the names of
    the markers of each scatter, by its gid, for `svg`."""
    fig, ax = plt.subplots(figsize=(9, 5))
    names = {}
    for k, (nb, g) in enumerate(qs.dropna(subset=[x, y]).groupby("notebook")):
        pts = ax.scatter(g[x], g[y], s=28, alpha=0.75, label=nb)
        pts.set_gid(f"tradeoff-{k}")
        names[f"tradeoff-{k}"] = [_name(r) for _, r in g.iterrows()]
    ax.set_xscale("log")  # RTFs span two decades (a 5x student to Kokoro): a linear axis squeezes most points together
    ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # decade ticks labelled only: minor labels collide
    ax.set_xlabel("real-time factor at 1 thread (log; lower is faster)")
    ax.set_ylabel("DNSMOS P.808")
    front = pareto_front(qs, x, y)
    ax.plot(front[x], front[y], "k--", lw=0.8, label="frontier")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()  # before the labels are placed: their boxes are measured where the axes end up
    labelled = pd.concat([front, qs[qs["variant"].isin(BASELINES)]]).drop_duplicates(subset=["variant", "backend"])
    place_labels(ax, [(r[x], r[y], _name(r)) for _, r in labelled.dropna(subset=[x, y]).iterrows()])
    return fig, names


def place_labels(ax, points) -> list:
    """Annotate (x, y, text) points, each at the first offset whose drawn box stays inside the axes and overlaps no
    label placed before; one that finds none is left out (its point is still named on hover). Returns the labels."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed, boxes = [], []
    for px, py, text in sorted(points, key=lambda p: (p[0], -p[1])):
        for dx, dy in OFFSETS:
            ann = ax.annotate(text, (px, py), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                              ha="left" if dx > 0 else "right")
            box = ann.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(b) for b in boxes):
                ann.set_gid(f"tradeoff-label-{len(placed)}")  # the browser test finds the drawn labels by it
                placed.append(ann)
                boxes.append(box)
                break
            ann.remove()
    return placed


def svg(fig, names: dict) -> str:
    """The figure as SVG with a <title> (the hover text) on every marker of each named scatter."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    text = buf.getvalue()
    for gid, labels in names.items():
        m = re.search(rf'<g id="{re.escape(gid)}">(.*?)</g>', text, flags=re.S)
        if not m:
            continue
        uses = iter(labels)
        body = re.sub(r"<use ([^>]*?)/>", lambda u: f"<use {u.group(1)}><title>{escape(next(uses, ''))}</title></use>",
                      m.group(1))
        text = text[:m.start(1)] + body + text[m.end(1):]
    return text


def inline(fig, names: dict) -> str:
    """`svg` without its XML prolog, for inline HTML: an SVG shown through <img> (how nbconvert embeds an SVG
    output) shows no hover titles, an inline one does."""
    text = svg(fig, names)
    return f"<div class='tts-tradeoff'>{text[text.index('<svg'):]}</div>"
