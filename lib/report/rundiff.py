"""Two runs of one notebook side by side: which rows moved, and by more than the noise allowed for their metric.

Absolute timings of two runs are not compared (another day, another machine state); same-run ratios, quality and
sizes are. Usage: tts-lab study rundiff BEFORE/results.csv AFTER/results.csv [--out diff.csv]
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from lib.core.results import atomic_write_text

KEYS = ["model", "variant", "backend", "threads", "metric"]
# How far a metric may move between two runs of the same code before it counts as moved: relative for ratios and
# sizes, absolute for scores. Same-run speed ratios drift a few per cent run to run (outputs/recorded/*/README.md).
# Only these metrics are compared: absolute timings (rtf, latencies, throughput) are not in the table on purpose.
TOLERANCE = {"rtf_ratio": ("rel", 0.08), "size_mb": ("rel", 0.01), "params": ("rel", 0.0), "dnsmos_p808": ("abs", 0.05),
             "dnsmos_ovrl": ("abs", 0.05), "dnsmos_sig": ("abs", 0.05), "dnsmos_bak": ("abs", 0.05),
             "wer": ("abs", 0.03), "cer": ("abs", 0.02), "pesq_wb": ("abs", 0.1), "mcd_db": ("abs", 0.3)}


def _ok_rows(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = sorted(set(KEYS + ["value", "status"]) - set(df.columns))
    if missing:
        raise ValueError(f"{path} is not a results.csv: no column(s) {', '.join(missing)}")
    df = df[df["status"] == "ok"].copy()
    df["threads"] = df["threads"].fillna(-1)
    return df.groupby(KEYS, dropna=False, as_index=False)["value"].mean()


def diff(before: Path, after: Path) -> pd.DataFrame:
    """Rows present in both runs with a tolerance for their metric: before, after, change and whether it is beyond
    the tolerance (`moved`). Metrics without a tolerance (absolute timings among them) are left out."""
    both = _ok_rows(Path(before)).merge(_ok_rows(Path(after)), on=KEYS, suffixes=("_before", "_after"))
    both = both[both["metric"].isin(TOLERANCE.keys())].copy()
    if both.empty:  # a notebook with no comparable metric (00's corpus counts, 06's kit): nothing can move
        return both.assign(change=pd.Series(dtype=float), tolerance=pd.Series(dtype=str), moved=pd.Series(dtype=bool))
    kind = both["metric"].map(lambda m: TOLERANCE[m][0])
    limit = both["metric"].map(lambda m: TOLERANCE[m][1])
    change = both["value_after"] - both["value_before"]
    rel = change / both["value_before"].abs().where(both["value_before"] != 0)
    both["change"] = change
    both["tolerance"] = [f"±{v:g}" + (" relative" if k == "rel" else "") for k, v in zip(kind, limit)]
    both["moved"] = ((kind == "abs") & (change.abs() > limit)) | ((kind == "rel") & (rel.abs() > limit))
    return both.sort_values(["moved", "metric", "variant"], ascending=[False, True, True]).reset_index(drop=True)


def show(before: Path, after: Path, out: Path | None = None) -> int:
    """Print the diff of two results.csv (written as CSV to `out` too); 2 when either file is missing."""
    for p in (before, after):
        if not Path(p).is_file():
            print(f"rundiff: no such file {p}", file=sys.stderr)
            return 2
    table = diff(Path(before), Path(after))
    if out:
        atomic_write_text(Path(out), table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print(f"\n{int(table['moved'].sum())} of {len(table)} comparable rows moved beyond their tolerance")
    return 0

