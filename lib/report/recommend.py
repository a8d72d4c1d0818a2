"""The report's pick: per goal (fastest, smallest, best quality per ms) the variant that wins it within the quality
bounds of its own notebook's baseline, the Pareto front of a trade-off, and the CPU feature a pick relies on."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.bounds import MAX_DNSMOS_DROP, MAX_WER_INCREASE
from lib.core.subject import Precision, Technique
from lib.report.report import cpu_line, wide


def relies_on(technique: str) -> str:
    """Which CPU feature a variant's speed depends on (what a reader on another CPU must have for the verdict to
    carry over): its technique's number format (lib.core.subject), read from the results' technique column; a label
    of an older run that the enum no longer holds relies on FP32 only."""
    try:
        return Technique.of(technique).precision.relies_on
    except ValueError:
        return Precision.FP32.relies_on


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not beaten on both lower `x` and higher `y`; none (the same columns, no rows) where no row has both, as
    when every timing of a run was contended."""
    pts = points.dropna(subset=[c for c in (x, y) if c in points]) if {x, y} <= set(points) else points.iloc[:0]
    pts = pts.sort_values([x, y], ascending=[True, False]) if len(pts) else pts
    keep, best = [], -np.inf
    for i, r in pts.iterrows():
        if r[y] > best:
            keep.append(i)
            best = r[y]
    return pts.loc[keep].reindex(columns=list(dict.fromkeys([*points.columns, x, y])))


SPOT_CHECK_TECHNIQUES = {Technique.HARDWARE_PARITY}


def quality_speed(df: pd.DataFrame) -> pd.DataFrame:
    """Per (notebook, model, variant, backend): DNSMOS, WER and the RTF at one thread, for the trade-off chart.
    Quality spot checks on a handful of sentences (`SPOT_CHECK_TECHNIQUES`) are left out: not comparable with
    the evaluation set."""
    if "technique" in df:
        df = df[~df["technique"].isin(SPOT_CHECK_TECHNIQUES)]
    w = wide(df, index=("notebook", "model", "variant", "backend", "threads"))
    if w.empty or "rtf" not in w:
        return pd.DataFrame()
    keep = ["notebook", "model", "variant", "backend", "rtf"] + (["rtf_ratio"] if "rtf_ratio" in w else [])
    speed = w[w["threads"].fillna(1) == 1].dropna(subset=["rtf"])[keep]
    qcols = [c for c in ["dnsmos_p808", "wer", "size_mb"] if c in w]
    qual = w.groupby(["notebook", "model", "variant", "backend"])[qcols].first().reset_index()
    out = speed.merge(qual, on=["notebook", "model", "variant", "backend"], how="left")
    if "technique" in df:
        tech = df.groupby(["notebook", "model", "variant", "backend"])["technique"].first().reset_index()
        out = out.merge(tech, on=["notebook", "model", "variant", "backend"], how="left")
    return out


NOT_RECOMMENDED = (Technique.BASELINE, Technique.TARGET, Technique.FINETUNE)  # another voice, not a cheaper one


def baseline(df: pd.DataFrame) -> pd.Series | None:
    """The reference row: FP32 on ONNX Runtime at one thread, from the baselines notebook."""
    w = wide(df[df["notebook"] == "01_baselines"], index=("model", "variant", "backend", "threads"))
    if w.empty:
        return None
    q = w[(w["variant"] == "fp32") & (w["backend"] == "ort-cpu")]
    if q.empty:
        return None
    merged = q.drop(columns=["threads"]).groupby(["model", "variant", "backend"]).first().reset_index()
    return merged.iloc[0]


def recommend(df: pd.DataFrame, max_dnsmos_drop: float = MAX_DNSMOS_DROP, max_wer_increase: float = MAX_WER_INCREASE,
              env: dict[str, dict] | None = None) -> pd.DataFrame:
    """For each goal (fastest, smallest, best quality per ms) the variant that wins it while staying within the
    quality bounds of its own notebook's baseline (the parent judged on the same sentences in the same run; the
    baselines notebook's FP32 where a notebook has none), with a one-line reason. Speed is ranked by `rtf_ratio`
    (against the parent timed in the same run) where a notebook wrote one, since absolute RTFs of different runs are not
    comparable; baselines and adapted voices (`NOT_RECOMMENDED` techniques: another voice, not a cheaper one) are left
    out. With `env` (notebook -> env.json), each row says which CPU it was measured on and which feature it relies on.
    Timings marked contended are not results and take no part."""
    base = baseline(df)
    qs = quality_speed(df)
    if not qs.empty:  # runs recorded on other machines are shown in their own tables, never ranked with this one
        qs = qs[~qs["notebook"].astype(str).str.startswith("recorded/")]
    if base is None or qs.empty or "dnsmos_p808" not in qs:
        return pd.DataFrame(columns=["goal", "variant", "reason"])
    qs = qs.copy()
    qs["ref_dnsmos"], qs["ref_wer"] = base["dnsmos_p808"], base.get("wer", 0)
    if "technique" in qs:
        for nb, g in qs.groupby("notebook"):
            ref = g[g["technique"] == Technique.BASELINE]
            if "rtf_ratio" in g:
                same_run = ref[(ref["rtf_ratio"] - 1).abs() < 1e-9]
                ref = same_run if len(same_run) else ref
            ref = ref.dropna(subset=["dnsmos_p808"])
            if len(ref):
                qs.loc[g.index, "ref_dnsmos"] = ref["dnsmos_p808"].iloc[0]
                qs.loc[g.index, "ref_wer"] = ref["wer"].iloc[0] if "wer" in ref else 0
        qs = qs[~qs["technique"].isin(NOT_RECOMMENDED)]
    base_rtf = base.get("rtf", np.nan)  # NaN where the baseline's timings were contended or absent: ratios only
    qs["speed"] = qs["rtf_ratio"].fillna(qs["rtf"] / base_rtf) if "rtf_ratio" in qs else qs["rtf"] / base_rtf
    qs["label"] = qs["model"] + " " + qs["variant"] + " (" + qs["backend"] + ", " + qs["notebook"] + ")"
    cpus = {nb: cpu_line(e) for nb, e in (env or {}).items()}
    ok = qs[(qs["dnsmos_p808"] >= qs["ref_dnsmos"] - max_dnsmos_drop) &
            (qs.get("wer", 0) <= qs["ref_wer"] + max_wer_increase)]
    rows = []
    if not ok.empty and ok["speed"].isna().all():
        rows.append({"goal": "fastest", "variant": "none ranked",
                     "reason": "no uncontended timing against a parent in the same run: the baseline's timings were "
                               "contended or absent, and no notebook kept an rtf_ratio (see the contended rows)"})
        ok = ok.iloc[0:0]
    if not ok.empty:
        ok = ok.dropna(subset=["speed"])
        f = ok.loc[ok["speed"].idxmin()]
        rows.append({"goal": "fastest", "variant": f["label"],
                     "reason": f"lowest RTF relative to its parent in the same run ({f['speed']:.3f}; "
                               f"RTF {f['rtf']:.3f}) with DNSMOS {f['dnsmos_p808']:.2f} and WER {f['wer']:.3f} "
                               "within bounds"})
        if "size_mb" in ok and ok["size_mb"].notna().any():
            s = ok.loc[ok["size_mb"].idxmin()]
            rows.append({"goal": "smallest", "variant": s["label"],
                         "reason": f"{s['size_mb']:.1f} MB on disk with quality within bounds"})
        ok = ok.assign(q_per_ms=ok["dnsmos_p808"] / ok["speed"])
        b = ok.loc[ok["q_per_ms"].idxmax()]
        rows.append({"goal": "best quality per ms", "variant": b["label"],
                     "reason": f"DNSMOS {b['dnsmos_p808']:.2f} at {b['speed']:.3f} of its parent's RTF"})
    out = pd.DataFrame(rows)
    if ok.empty and not out.empty:
        return out.assign(**{"measured on": "", "relies on": ""})
    if not out.empty:
        picked = [ok.loc[ok["label"] == r["variant"]].iloc[0] for r in rows]
        out["measured on"] = [cpus.get(p["notebook"], "see provenance") for p in picked]
        out["relies on"] = [relies_on(p["technique"]) for p in picked]
    return out
