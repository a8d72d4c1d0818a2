"""What "within the quality bounds" means, once: a variant's DNSMOS P.808 drop and WER rise against its parent,
judged sentence by sentence (the 95 % bootstrap interval of the paired differences against the bound: met, missed,
or a tie where the interval holds it), on one judged set or two. The notebooks' verdicts, the report and
`tts-lab voice optimize` all judge through it; `deltas` is the one row per variant they judge from (its
`within_quality_bounds` column compares means: a screen, not a verdict)."""
from __future__ import annotations

import numpy as np
import pandas as pd

MAX_DNSMOS_DROP = 0.10  # the study's quality bounds against the parent (notebooks 03-05, the report, optimize)
MAX_WER_INCREASE = 0.02


def deltas(df: pd.DataFrame, baseline: str, max_dnsmos_drop: float = MAX_DNSMOS_DROP,
           max_wer_increase: float = MAX_WER_INCREASE, per_clip: pd.DataFrame | None = None,
           varied: pd.DataFrame | None = None, by_parent: bool = False) -> pd.DataFrame:
    """One row per variant of a notebook's results: speed, size and quality, and their change against `baseline`,
    or with `by_parent` against each variant's own parent where the run has it (an ONNX Runtime student against the
    shipped file, a PyTorch one against the teacher; column `against`). rtf_ratio and size_ratio below 1 are better;
    dnsmos_drop and wer_increase above 0 are worse. Whether a variant is within the quality bounds is `within()`'s
    answer: sentence by sentence where `per_clip` holds it, as the report's answers judge it, else on the means
    (`bounds` says which)."""
    ok = df[df["status"] == "ok"]
    w = ok.pivot_table(index=["variant", "technique", "backend"], columns="metric", values="value", aggfunc="first")
    w.columns.name = None
    w = w.reset_index()
    # a contended or absent timing leaves NaN, not a crash
    for col in ("rtf", "rtf_ratio", "size_mb", "dnsmos_p808", "wer"):
        if col not in w:
            w[col] = np.nan
    parents = ok.groupby("variant")["parent"].first() if by_parent and "parent" in ok else pd.Series(dtype=object)
    known = set(w["variant"])
    w["against"] = [parents.get(v) if parents.get(v) in known else baseline for v in w["variant"]]
    w.loc[w["variant"] == baseline, "against"] = baseline
    base = w.drop_duplicates("variant").set_index("variant").loc[w["against"]].reset_index(drop=True)
    base.index = w.index
    if "size_mb" in w:
        w["size_ratio"] = w["size_mb"] / base["size_mb"]
    if "dnsmos_p808" in w:
        w["dnsmos_drop"] = base["dnsmos_p808"] - w["dnsmos_p808"]
    if "wer" in w:
        w["wer_increase"] = w["wer"] - base["wer"]
    judged = pd.concat([within(w[w["against"] == ref], ref, max_dnsmos_drop, max_wer_increase, per_clip, varied)
                        .drop(index=[ref], errors="ignore") for ref in dict.fromkeys(w["against"])]
                       + [within(w[w["variant"] == baseline], baseline, max_dnsmos_drop, max_wer_increase)])
    judged = judged[~judged.index.duplicated(keep="first")]
    w["within_quality_bounds"] = w["variant"].map(judged["within_quality_bounds"]).eq(True)  # unjudged: not within
    w["bounds"] = w["variant"].map(judged["bounds"])
    if not by_parent:
        w = w.drop(columns=["against"])
    first = ["variant", "technique", "backend", "against", "rtf", "rtf_ratio", "latency_ms_p50", "latency_ms_p90",
             "size_mb", "size_ratio", "dnsmos_p808", "dnsmos_drop", "wer", "wer_increase", "within_quality_bounds",
             "pesq_wb", "mcd_db", "f0_rmse_cents", "params", "nonzero_params", "peak_rss_mb"]
    cols = [c for c in first if c in w] + [c for c in w.columns if c not in first]
    return w[cols].sort_values("rtf_ratio" if "rtf_ratio" in w else "variant").reset_index(drop=True)



def paired(per_clip: pd.DataFrame, base: str, variant: str, metric: str) -> np.ndarray:
    """`base` minus `variant` in `metric`, per sentence both spoke (matched by id)."""
    a = per_clip[per_clip["variant"] == base].groupby("id")[metric].mean()
    b = per_clip[per_clip["variant"] == variant].groupby("id")[metric].mean()
    both = a.index.intersection(b.index)
    return (a[both] - b[both]).to_numpy(dtype=float)



def quality_bounds(per_clip: pd.DataFrame, base: str, variants, max_dnsmos_drop: float,
                   max_wer_increase: float, varied: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each variant's quality bounds against `base`, judged sentence by sentence (`judge` on the paired DNSMOS drop
    and WER rise): per variant the judgements, `within_quality_bounds` (all met) and `bounds` ('met', 'tied' where
    no bound is missed but one is inside the noise, 'not judged' where none is missed but a set lacks the variant,
    else 'missed'). With `varied` (the per-clip table of a second judged set) both bounds are judged there too, and
    hold only where they hold on both sets."""
    rows, name = [], varied_set(varied) if varied is not None else ""
    for v in variants:
        drop = judge(paired(per_clip, base, v, "dnsmos_p808"), max_dnsmos_drop, False)
        rise = judge(-paired(per_clip, base, v, "wer"), max_wer_increase, False)
        row = {"variant": v, "dnsmos_drop_judged": drop, "wer_rise_judged": rise}
        if varied is not None:
            row["varied_set"] = name
            row["dnsmos_drop_varied_judged"] = judge(paired(varied, base, v, "dnsmos_p808"), max_dnsmos_drop, False)
            row["wer_rise_varied_judged"] = judge(-paired(varied, base, v, "wer"), max_wer_increase, False)
        words = {j["word"] for k, j in row.items() if k.endswith("_judged")}
        rows.append({**row, "within_quality_bounds": words == {"met"}, "bounds": _bounds_word(words)})
    columns = ["variant", "dnsmos_drop_judged", "wer_rise_judged"]
    columns += ["varied_set", "dnsmos_drop_varied_judged", "wer_rise_varied_judged"] if varied is not None else []
    return pd.DataFrame(rows, columns=columns + ["within_quality_bounds", "bounds"])



def _bounds_word(words: set) -> str:
    """One word for a variant's judgements: a missed bound outweighs a set that did not judge it."""
    if words == {"met"}:
        return "met"
    if "missed" in words:
        return "missed"
    return "not judged" if "not judged" in words else "tied"


def within(means: pd.DataFrame, base: str, max_dnsmos_drop: float, max_wer_increase: float,
           per_clip: pd.DataFrame | None = None, varied: pd.DataFrame | None = None) -> pd.DataFrame:
    """The one definition of "within the quality bounds", by variant: `quality_bounds` (paired, sentence by
    sentence, on both judged sets; an interval that holds a bound is a tie, which is not within it) for every variant
    that `per_clip` holds on at least 2 sentences with `base`, else the means' drop and rise (`means`: one row per
    variant with dnsmos_drop and wer_increase against `base`; a bound met exactly counts), marked 'met (on means)' or
    'missed (on means)'; 'not judged' where a mean is missing. A judged set without WER (no ASR) is judged on
    DNSMOS alone. A second judged set (`varied`) counts where `base` spoke it: there a variant it lacks is not
    within."""
    means = means.drop_duplicates("variant").set_index("variant")
    out = pd.DataFrame(index=means.index, columns=["within_quality_bounds", "bounds"])
    drop = means["dnsmos_drop"] if "dnsmos_drop" in means else pd.Series(0.0, index=out.index)
    rise = means["wer_increase"] if "wer_increase" in means else pd.Series(0.0, index=out.index)
    measured = drop.notna() & rise.notna()
    ok = measured & (drop <= max_dnsmos_drop) & (rise <= max_wer_increase)
    out["within_quality_bounds"] = ok
    out["bounds"] = np.where(~measured, "not judged", np.where(ok, "met (on means)", "missed (on means)"))
    out.loc[base, ["within_quality_bounds", "bounds"]] = [True, "the baseline"]
    if per_clip is not None and len(per_clip) and "dnsmos_p808" in per_clip and base in set(per_clip["variant"]):
        if "wer" not in per_clip:  # no ASR judged this run: the DNSMOS bound alone, as on the means
            per_clip = per_clip.assign(wer=0.0)
        clipped = [v for v in out.index if v != base and len(paired(per_clip, base, v, "dnsmos_p808")) >= 2]
        if clipped:
            both = varied if varied is not None and base in set(varied["variant"]) else None  # a set `base` spoke
            if both is not None and "wer" not in both:
                both = both.assign(wer=0.0)
            j = quality_bounds(per_clip, base, clipped, max_dnsmos_drop, max_wer_increase, both).set_index("variant")
            out.loc[clipped, "within_quality_bounds"] = j["within_quality_bounds"]
            out.loc[clipped, "bounds"] = j["bounds"]
    out["within_quality_bounds"] = out["within_quality_bounds"].astype(bool)
    return out


UNNAMED_SET = "the varied text"  # a varied judged set whose table does not name it


def varied_set(varied: pd.DataFrame) -> str:
    """The name of a varied judged set, as its per-clip table records it (`judged_set`, rows without one left out);
    a generic one for a table written before the set was named."""
    names = sorted(set(varied["judged_set"].dropna())) if "judged_set" in varied else []
    return " and ".join(names) or UNNAMED_SET



def judge(diffs, bound: float, higher_is_better: bool, seed: int = 0) -> dict:
    """Per-clip differences against `bound` (e.g. the DNSMOS drop per sentence against 0.10): 'met', 'missed', or
    'tie' when the 95 % bootstrap interval of their mean (per clip, scipy.stats.bootstrap) holds the bound, with the
    mean, the interval and n; fewer than 2 finite clips are 'not judged'."""
    from scipy.stats import bootstrap
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    if len(d) < 2:
        return {"word": "not judged", "mean": np.nan, "lo": np.nan, "hi": np.nan, "n": len(d)}
    if np.ptp(d) == 0:  # every clip alike: no spread to resample
        lo = hi = float(d[0])
    else:
        ci = bootstrap((d,), np.mean, confidence_level=0.95, n_resamples=2000, random_state=seed).confidence_interval
        lo, hi = float(ci.low), float(ci.high)
    good = (np.mean(d) >= bound) if higher_is_better else (np.mean(d) <= bound)
    word = "tie" if lo <= bound <= hi else ("met" if good else "missed")
    return {"word": word, "mean": float(np.mean(d)), "lo": lo, "hi": hi, "n": len(d)}
