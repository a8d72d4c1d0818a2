"""What "within the quality bounds" means, once: a variant's DNSMOS P.808 drop and WER rise against its parent,
judged sentence by sentence (the 95 % bootstrap interval of the paired differences against the bound: met, missed,
or undecided where the interval holds it), on one judged set or two. WER is pooled (errors over words, as the
results report it) with its interval over sentences. A verdict says its n, and `resolution` says what that n can
decide. The notebooks' verdicts, the report and
`tts-lab voice optimize` all judge through it; `deltas` is the one row per variant they judge from (its
`within_quality_bounds` column compares means: a screen, not a verdict)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.limits import ADAPTATION_WER_MARGIN, MAX_DNSMOS_DROP, MAX_WER_INCREASE  # noqa: F401 (bounds' names)
from lib.core.subject import ADAPTATION_FACTS
CONFIDENCE = 0.95  # every verdict's bootstrap interval
UNDECIDED = "undecided"  # an interval that holds its bound: the sentences judged cannot decide (not a tie)
Z95, Z80 = 1.959964, 0.841621  # a two-sided 95 % interval; 80 % power, the usual for a sample size


def deltas(df: pd.DataFrame, baseline: str, max_dnsmos_drop: float = MAX_DNSMOS_DROP,
           max_wer_increase: float = MAX_WER_INCREASE, per_clip: pd.DataFrame | None = None,
           varied: pd.DataFrame | None = None, by_parent: bool = False,
           confirmed: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per variant of a notebook's results: speed, size and quality, and their change against `baseline`,
    or with `by_parent` against each variant's own parent where the run has it (an ONNX Runtime student against the
    shipped file, a PyTorch one against the teacher; column `against`). rtf_ratio and size_ratio below 1 are better;
    dnsmos_drop and wer_increase above 0 are worse. Whether a variant is within the quality bounds is `within()`'s
    answer: sentence by sentence where `per_clip` holds it (the variants a confirmation set judged, `confirmed`,
    decided there), as the report's answers judge it, else on the means (`bounds` says which)."""
    ok = df[df["status"] == "ok"]
    w = ok.pivot_table(index=["variant", "technique", "backend"], columns="metric", values="value", aggfunc="first")
    w.columns.name = None
    w = w.reset_index()
    facts = [c for c in ADAPTATION_FACTS if c in ok]  # how an adapted voice was made, as its rows say (a run older
    if facts:  # than these columns has none)
        w = w.merge(ok.groupby("variant", sort=False)[facts].first().reset_index(), on="variant", how="left")
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
    judged = pd.concat([within(w[w["against"] == ref], ref, max_dnsmos_drop, max_wer_increase, per_clip, varied,
                               confirmed if confirmed is not None and ref in set(confirmed["variant"]) else None)
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
    and pooled WER rise): per variant the judgements, `within_quality_bounds` (all met) and `bounds` ('met',
    'undecided' where no bound is missed but an interval holds one, 'not judged' where none is missed but a set
    lacks the variant,
    else 'missed'). With `varied` (the per-clip table of a second judged set) both bounds are judged there too, and
    hold only where they hold on both sets."""
    rows, name = [], varied_set(varied) if varied is not None else ""
    for v in variants:
        drop = judge(paired(per_clip, base, v, "dnsmos_p808"), max_dnsmos_drop, False)
        rise = judge_wer(per_clip, base, v, max_wer_increase)
        row = {"variant": v, "dnsmos_drop_judged": drop, "wer_rise_judged": rise}
        if varied is not None:
            row["varied_set"] = name
            row["dnsmos_drop_varied_judged"] = judge(paired(varied, base, v, "dnsmos_p808"), max_dnsmos_drop, False)
            row["wer_rise_varied_judged"] = judge_wer(varied, base, v, max_wer_increase)
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
    return "not judged" if "not judged" in words else UNDECIDED


def within(means: pd.DataFrame, base: str, max_dnsmos_drop: float, max_wer_increase: float,
           per_clip: pd.DataFrame | None = None, varied: pd.DataFrame | None = None,
           confirmed: pd.DataFrame | None = None) -> pd.DataFrame:
    """The one definition of "within the quality bounds", by variant: `quality_bounds` (paired, sentence by
    sentence, on both judged sets; an interval that holds a bound is undecided, which is not within it) for every
    variant
    that `per_clip` holds on at least 2 sentences with `base`, else the means' drop and rise (`means`: one row per
    variant with dnsmos_drop and wer_increase against `base`; a bound met exactly counts), marked 'met (on means)' or
    'missed (on means)'; 'not judged' where a mean is missing. A judged set without WER (no ASR) is judged on
    DNSMOS alone. A second judged set (`varied`) counts where `base` spoke it: there a variant it lacks is not
    within. With a confirmation set (`confirmed`) the variants it judged are decided there (`decide`)."""
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
        confirmed_on = (lambda v: len(paired(confirmed, base, v, "dnsmos_p808"))) if confirmed is not None else (
            lambda v: 0)
        clipped = [v for v in out.index if v != base and max(len(paired(per_clip, base, v, "dnsmos_p808")),
                                                             confirmed_on(v)) >= 2]
        if clipped:
            both = varied if varied is not None and base in set(varied["variant"]) else None  # a set `base` spoke
            if both is not None and "wer" not in both:
                both = both.assign(wer=0.0)
            if confirmed is not None and "wer" not in confirmed:
                confirmed = confirmed.assign(wer=0.0)
            j = decide(per_clip, base, clipped, max_dnsmos_drop, max_wer_increase, confirmed, both)
            j = j.set_index("variant")
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
    'undecided' when the 95 % bootstrap interval of their mean (per clip, scipy.stats.bootstrap) holds the bound,
    with the mean, the interval, n and the per-sentence SD; fewer than 2 finite clips are 'not judged'."""
    d = np.asarray([x for x in diffs if np.isfinite(x)], dtype=float)
    if len(d) < 2:
        return {"word": "not judged", "mean": np.nan, "lo": np.nan, "hi": np.nan, "n": len(d), "sd": np.nan}
    if np.ptp(d) == 0:  # every clip alike: no spread to resample
        lo = hi = float(d[0])
    else:
        lo, hi = _bootstrap((d,), lambda x, axis=-1: x.mean(axis), seed)
    return _worded(float(np.mean(d)), lo, hi, len(d), float(np.std(d, ddof=1)), bound, higher_is_better)


def _bootstrap(data: tuple, statistic, seed: int) -> tuple[float, float]:
    """The 95 % interval of `statistic` over sentences (the arrays of `data` resampled together): scipy's BCa, or
    the percentile interval where BCa cannot be computed (a few sentences differing among many alike)."""
    import warnings

    from scipy.stats import bootstrap
    with warnings.catch_warnings():
        # scipy's notice that BCa's interval is degenerate (a few sentences differing among many alike), which the
        # percentile interval below then answers
        warnings.filterwarnings("ignore", message="The BCa confidence interval cannot be calculated")
        warnings.filterwarnings("ignore", category=RuntimeWarning, message="invalid value encountered")
        for method in ("BCa", "percentile"):
            ci = bootstrap(data, statistic, paired=True, vectorized=True, confidence_level=CONFIDENCE, n_resamples=2000,
                           method=method, random_state=seed).confidence_interval
            if np.isfinite(ci.low) and np.isfinite(ci.high):
                break
    return float(ci.low), float(ci.high)


def _worded(mean: float, lo: float, hi: float, n: int, sd: float, bound: float, higher_is_better: bool) -> dict:
    good = (mean >= bound) if higher_is_better else (mean <= bound)
    word = UNDECIDED if lo <= bound <= hi else ("met" if good else "missed")
    return {"word": word, "mean": mean, "lo": lo, "hi": hi, "n": n, "sd": sd}


def word_errors(per_clip: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Per sentence `variant` spoke (by id): its reference's words after the shared normalisation, its word errors
    (per-sentence WER times words) and the transcript (`asr_hyp`, '' where the table has none)."""
    from lib.core.text import normalize_for_wer
    rows = per_clip[per_clip["variant"] == variant].drop_duplicates("id").set_index("id")
    words = pd.Series([len(normalize_for_wer(t).split()) if isinstance(t, str) else 1 for t in rows["text"]]
                      if "text" in rows else 1, index=rows.index, dtype=float)
    heard = rows["asr_hyp"].fillna("") if "asr_hyp" in rows else pd.Series("", index=rows.index)
    return pd.DataFrame({"words": words, "errors": rows["wer"].astype(float) * words, "heard": heard})


def judge_wer(per_clip: pd.DataFrame, base: str, variant: str, bound: float, seed: int = 0) -> dict:
    """The pooled WER rise of `variant` over `base` (its word errors less the base's, over the words of the sentences
    both spoke: one word is 1/words, however the sentences are cut) against `bound`, with its 95 % bootstrap
    interval over sentences (paired), n, the per-sentence SD of the rise, and `changed`: the sentences whose
    transcript differs. Without the sentences' texts each sentence weighs alike (the mean of per-sentence WER)."""
    a, b = word_errors(per_clip, base), word_errors(per_clip, variant)
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    ok = np.isfinite(a["errors"].to_numpy()) & np.isfinite(b["errors"].to_numpy())
    a, b = a[ok], b[ok]
    rise, words = (b["errors"] - a["errors"]).to_numpy(float), a["words"].to_numpy(float)
    changed = int((a["heard"] != b["heard"]).sum()) if "asr_hyp" in per_clip else np.nan
    if len(rise) < 2 or words.sum() <= 0:
        return {"word": "not judged", "mean": np.nan, "lo": np.nan, "hi": np.nan, "n": len(rise), "sd": np.nan,
                "changed": changed}
    pooled = float(rise.sum() / words.sum())
    if np.ptp(rise) == 0 and np.ptp(words) == 0:
        lo = hi = pooled
    else:
        lo, hi = _bootstrap((rise, words), lambda r, w, axis=-1: r.sum(axis) / w.sum(axis), seed)
    sd = float(np.std(rise / words, ddof=1))
    return {**_worded(pooled, lo, hi, len(rise), sd, bound, False), "changed": changed}


def detectable(sd: float, n: int, bound: float) -> float:
    """The largest true change (a drop or a rise, worse above 0) that `n` sentences with per-sentence SD `sd` call
    met 4 times in 5 at 95 %: `bound` less (z95 + z80) standard errors. Below 0, even a variant exactly as good as
    its parent is called met less often than that: the n is too small for the bound."""
    return float(bound - (Z95 + Z80) * sd / np.sqrt(n)) if n >= 2 and np.isfinite(sd) else np.nan


def sentences_needed(sd: float, bound: float, true_change: float = 0.0) -> int:
    """How many sentences call a variant whose true change is `true_change` met 4 times in 5, at per-sentence SD
    `sd` (the inverse of `detectable`)."""
    if not np.isfinite(sd) or true_change >= bound:
        return -1  # no n can: the change is at or beyond the bound
    return int(np.ceil(((Z95 + Z80) * sd / (bound - true_change)) ** 2))


def resolution(per_clip: pd.DataFrame, base: str, variants, max_dnsmos_drop: float = MAX_DNSMOS_DROP,
               max_wer_increase: float = MAX_WER_INCREASE) -> pd.DataFrame:
    """What a judged set can decide, per bound: n, the per-sentence SD of the paired change (the median over
    `variants`), the largest true change it calls met 4 times in 5 (`detectable`), and the sentences needed to call
    a variant as good as its parent met (`sentences_needed`)."""
    rows = []
    for metric, bound, of in (("dnsmos_p808", max_dnsmos_drop, lambda v: judge(paired(per_clip, base, v,
                                                                                        "dnsmos_p808"), 1, False)),
                              ("wer", max_wer_increase, lambda v: judge_wer(per_clip, base, v, 1))):
        if metric not in per_clip:
            continue
        js = [of(v) for v in variants if v != base]
        js = [j for j in js if np.isfinite(j["sd"])]
        if not js:
            continue
        n, sd = int(np.median([j["n"] for j in js])), float(np.median([j["sd"] for j in js]))
        rows.append({"metric": metric, "bound": bound, "n": n, "sd_per_sentence": sd,
                     "met_if_true_change_at_most": detectable(sd, n, bound), "n_to_decide_an_equal_variant":
                     sentences_needed(sd, bound)})
    return pd.DataFrame(rows, columns=["metric", "bound", "n", "sd_per_sentence", "met_if_true_change_at_most",
                                       "n_to_decide_an_equal_variant"])


def decided_clips(screen: pd.DataFrame, confirmed: pd.DataFrame | None, base: str) -> pd.DataFrame:
    """The per-sentence table verdicts are decided on: each variant the confirmation set judged (`confirmed`, other
    sentences than the screen's) on those sentences alone, every other variant on the screen's, and `base` on both
    (the sets share no sentence, so each variant pairs with the base on its own set). The screen's interval only
    chose who went on."""
    if confirmed is None or not len(confirmed):
        return screen
    shared = sorted(set(screen["id"]) & set(confirmed["id"]))
    if shared:
        raise ValueError(f"the confirmation set repeats {len(shared)} of the screen's sentences ({shared[:3]}): "
                         "it must judge others")
    gone_on = set(confirmed["variant"]) - {base}
    both = pd.concat([screen[~screen["variant"].isin(gone_on)], confirmed], ignore_index=True)
    return both.drop(columns=["judged_set"], errors="ignore")


def decide(screen: pd.DataFrame, base: str, variants, max_dnsmos_drop: float = MAX_DNSMOS_DROP,
           max_wer_increase: float = MAX_WER_INCREASE, confirmed: pd.DataFrame | None = None,
           varied: pd.DataFrame | None = None) -> pd.DataFrame:
    """Screen, then confirm (issue 67): `quality_bounds` of each variant the confirmation set judged (`confirmed`,
    with the base, on other sentences than the screen's) on that set, and on `varied` too where given; every other
    variant keeps the screen's judgement (it missed there, or no target is about it). `decided_on` says which. With
    no confirmation set, the screen (and `varied`) decide, as quality_bounds does."""
    variants = [v for v in dict.fromkeys(variants)]
    gone_on = ([v for v in variants if v in set(confirmed["variant"])] if confirmed is not None and len(confirmed)
               and base in set(confirmed["variant"]) else [])
    if not gone_on:
        return quality_bounds(screen, base, variants, max_dnsmos_drop, max_wer_increase, varied).assign(
            decided_on="screen")
    decided_clips(screen, confirmed, base)  # refuses a confirmation set that repeats the screen's sentences
    stayed = [v for v in variants if v not in gone_on]
    parts = [quality_bounds(confirmed, base, gone_on, max_dnsmos_drop, max_wer_increase, varied).assign(
        decided_on="confirmation")]
    if stayed:
        parts.append(quality_bounds(screen, base, stayed, max_dnsmos_drop, max_wer_increase).assign(
            decided_on="screen"))
    out = pd.concat(parts, ignore_index=True)
    return out.set_index("variant").loc[variants].reset_index()
