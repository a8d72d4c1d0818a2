"""The report's answers per technique: every variant's speed and size against its notebook's baseline and its
quality deltas with 95 % intervals (paired by sentence), its best variant, and the verdict its notebook recorded."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core import verdict
from lib.core.bounds import MAX_DNSMOS_DROP, MAX_WER_INCREASE
from lib.core.results import OUTPUTS
from lib.core.subject import Family, Technique
from lib.report import verdicts
from lib.report.recommend import relies_on

# where a notebook recorded none of its own
BOUNDS = {"max_dnsmos_drop": MAX_DNSMOS_DROP, "max_wer_increase": MAX_WER_INCREASE}


@dataclass(frozen=True)
class Question:
    """One row of the answers: which notebook, the variant every delta is taken against, the family of techniques
    its variants come from (lib.core.subject: the results' technique column read back as the enum), what it is
    ranked by, and who speaks beside the baseline in the listening strip."""
    name: str
    notebook: str
    baseline: str
    family: Family
    goal: str = "speedup"  # the column ranked, higher is better: "speedup" or "secs_gain"
    fallback_goal: str = "closeness"  # ranked by where no variant is within the bounds: the one closest to them
    beside: str | None = None
    bounds_against: str | None = None  # the variant the quality bounds are judged against (None: the baseline)
    other_models: tuple[str, ...] = ()  # models measured in the same notebook that the answer is not about
    backends: tuple[str, ...] = ()  # only the variants on these back-ends (those timed against `baseline`); () all
    bound_params: tuple = (("max_dnsmos_drop", "max_dnsmos_drop"), ("max_wer_increase", "max_wer_increase"))


TECHNIQUES = (
    # notebook 02 bounds an adapted voice's DNSMOS and WER by its target speaker's own, with its margins
    Question("adaptation", "02_lora_qlora", "teacher", Family.ADAPTATION, goal="secs_gain", beside="target-speaker",
             bounds_against="target-speaker",
             bound_params=(("max_dnsmos_drop", "dnsmos_margin"), ("max_wer_increase", "wer_margin"))),
    Question("quantization", "03_pruning_quantization", "fp32", Family.QUANTIZATION),
    # where no pruned voice keeps quality, the row describes the recovery closest to the bounds
    Question("pruning", "03_pruning_quantization", "fp32", Family.PRUNING),
    # the students in ONNX Runtime, timed and judged against the shipped file there (the PyTorch ones are the teacher's)
    Question("distillation", "04_distillation", "fp32-ort", Family.DISTILLATION, backends=("ort-cpu",)),
    # notebook 05 times every CPU back-end in one run against the PyTorch module as trained, and checks each one's
    # audio (its parity rows, means only)
    Question("back-ends", "05_hardware_benchmark", "torch-cpu-fp32", Family.BACKEND, other_models=("kokoro-82m",)),
)


def metrics_json(root: Path, notebook: str) -> dict:
    path = root / notebook / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def clip_table(root: Path, notebook: str) -> pd.DataFrame:
    """A notebook's per-sentence scores (per_clip.csv) with its per-sentence SECS (secs_per_clip.csv) joined on."""
    path = root / notebook / "per_clip.csv"
    clips = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["id", "variant"])
    secs = root / notebook / "secs_per_clip.csv"
    if secs.exists():
        clips = clips.merge(pd.read_csv(secs), on=["variant", "id"], how="outer")
    return clips


def _interval(j: dict) -> dict:
    return {"mean": j.get("mean", np.nan), "lo": j.get("lo", np.nan), "hi": j.get("hi", np.nan), "n": j["n"]}


def delta(clips: pd.DataFrame, base: str, variant: str, metric: str) -> dict:
    """`variant` minus `base` in `metric`, per sentence both spoke: mean, 95 % bootstrap interval and n (verdicts'
    own bootstrap, so the report and the notebooks quote the same interval)."""
    if metric not in clips:
        return {"mean": np.nan, "lo": np.nan, "hi": np.nan, "n": 0}
    if metric == "wer":  # pooled, as the bound is judged
        j = verdicts.judge_wer(clips, base, variant, 0.0)
        return {**_interval(j), "lo": j["lo"] if j["n"] >= 2 else np.nan, "hi": j["hi"] if j["n"] >= 2 else np.nan,
                "mean": j["mean"] if j["n"] >= 2 else mean_delta(clips, base, variant, metric)}
    d = -verdicts.paired(clips, base, variant, metric)
    d = d[np.isfinite(d)]
    if len(d) < 2:  # one sentence: its difference, no interval
        return {"mean": float(d.mean()) if len(d) else np.nan, "lo": np.nan, "hi": np.nan, "n": len(d)}
    return _interval(verdicts.judge(d, 0.0, True))


def _per_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: its technique and back-end, and each metric's value at one thread (or untimed)."""
    ok = frame[(frame["status"] == "ok") & (frame["threads"].fillna(1) == 1)]
    if ok.empty:
        return pd.DataFrame(columns=["variant", "technique", "backend"])
    w = ok.pivot_table(index="variant", columns="metric", values="value", aggfunc="first")
    w.columns.name = None
    who = ok.groupby("variant")[["technique", "backend"]].first()
    return who.join(w).reset_index()


def candidates(df: pd.DataFrame, tech: Question, root: Path) -> pd.DataFrame:
    """Every judged variant of `tech`: speed-up and size ratio against the baseline (the speed ratio timed in the
    same run), paired quality deltas with intervals, the bounds judged sentence by sentence ('met', 'undecided',
    'missed'; on the means where the run kept no per_clip.csv) and the CPU feature it relies on; best first."""
    frame = df[(df["notebook"] == tech.notebook) & ~df["model"].isin(tech.other_models)]
    w = _per_variant(frame)
    clips = clip_table(root, tech.notebook)
    if w.empty or tech.baseline not in set(w["variant"]):
        return pd.DataFrame()
    means_only = clips.empty
    if means_only:  # a run that kept no per-sentence scores (a recorded one): its means as one 'sentence', no interval
        clips = w[["variant"] + [m for m in ("dnsmos_p808", "wer", "secs") if m in w]].assign(id="mean")
    recorded = metrics_json(root, tech.notebook).get("parameters", {})
    bounds = {k: recorded.get(param, BOUNDS[k]) for k, param in tech.bound_params}
    against = tech.bounds_against or tech.baseline
    member = w["technique"].map(Technique.family_of) == tech.family
    if tech.backends:
        member &= w["backend"].isin(tech.backends)
    judged = set(clips["variant"])
    picked = w[member & w["variant"].isin(judged) & (w["variant"] != tech.baseline)].copy()
    if picked.empty:
        return pd.DataFrame()
    base = w.set_index("variant").loc[tech.baseline]
    picked["speedup"] = 1.0 / picked["rtf_ratio"] if "rtf_ratio" in picked else np.nan
    # timed in this run with no ratio kept: the ratio of RTFs
    if "rtf" in picked and np.isfinite(base.get("rtf", np.nan)):
        picked["speedup"] = picked["speedup"].fillna(base["rtf"] / picked["rtf"])
    picked["size_ratio"] = picked["size_mb"] / base["size_mb"] if "size_mb" in picked and "size_mb" in base else np.nan
    varied = root / tech.notebook / "per_clip_varied.csv"  # a second judged set: the bounds must hold there too
    confirmed = root / tech.notebook / "per_clip_confirm.csv"  # the candidates' confirmation set decides them
    confirmed = pd.read_csv(confirmed) if confirmed.exists() and not means_only else None
    screened, clips = clips, verdicts.decided_clips(clips, confirmed, against) if confirmed is not None else clips
    # each variant's mean change against `against` (the bounds' reference), once: the means, the miss, its words
    picked["d_dnsmos_against"] = [mean_delta(clips, against, v, "dnsmos_p808") for v in picked["variant"]]
    picked["d_wer_against"] = [mean_delta(clips, against, v, "wer") for v in picked["variant"]]
    means = pd.DataFrame({"variant": picked["variant"], "dnsmos_drop": -picked["d_dnsmos_against"],
                          "wer_increase": picked["d_wer_against"]})
    judged = verdicts.within(means, against, bounds["max_dnsmos_drop"], bounds["max_wer_increase"],
                             per_clip=None if means_only else screened,
                             varied=pd.read_csv(varied) if varied.exists() else None,
                             confirmed=confirmed)  # the notebooks' definition
    words = picked["variant"].map(judged["bounds"])
    picked["bounds"] = words.str.removesuffix(" (on means)")
    picked["bounds_on_means"] = words.str.endswith(" (on means)")  # fewer than 2 sentences spoken by both
    picked["means_only"] = means_only
    for metric, name in (("dnsmos_p808", "dnsmos"), ("wer", "wer"), ("secs", "secs")):
        d = {v: delta(clips, tech.baseline, v, metric) for v in picked["variant"]}
        for part in ("mean", "lo", "hi", "n"):
            picked[f"d_{name}_{part}"] = picked["variant"].map(lambda v, p=part: d[v][p])
    picked["secs_gain"] = picked["d_secs_mean"]
    picked["bounds_miss"] = [bounds_miss(d, w, bounds) for d, w in zip(picked["d_dnsmos_against"],
                                                                       picked["d_wer_against"])]
    picked["closeness"] = -picked["bounds_miss"]
    picked["relies_on"] = [relies_on(t) for t in picked["technique"]]
    picked["technique_name"], picked["baseline"], picked["bounds_against"] = tech.name, tech.baseline, against
    for k, v in bounds.items():
        picked[k] = v
    # best within the bounds first; where none is, best overall (an undecided bound is not within it), among the
    # variants that are faster or smaller first: a slower, larger one never answers "how much cheaper" (issue 67)
    picked["within"] = picked["bounds"] == "met"
    picked["cheaper"] = (picked["speedup"].fillna(0) > 1) | (picked["size_ratio"].fillna(np.inf) < 1)
    goal = tech.goal if picked["within"].any() else tech.fallback_goal
    picked["ranked_by"] = goal
    order = ["within", goal] if tech.goal != "speedup" else ["within", "cheaper", goal]
    measured = picked["speedup"].notna() | picked["size_ratio"].notna()
    # nothing within the bounds and nothing faster or smaller: the row names the closest as no answer
    picked["none_cheaper"] = (tech.goal == "speedup" and not picked["within"].any() and measured.all()
                              and not picked["cheaper"].any())
    return picked.sort_values(order, ascending=False, na_position="last").reset_index(drop=True)


def target_verdicts(root: Path, tech: Question) -> str:
    """The targets its notebook judged (its verdicts.json), as 'speed: missed · size: met', leaving out those that
    measured nothing (a recorded GPU run without such rows); the adaptation row also leaves out the merged voices'
    speed (not what adapting is asked) and the long runs' records."""
    records = [v for v in verdict.read(root / tech.notebook) if v.subject or v.outcome != "undecided" or v.n]
    if tech.name == "adaptation":
        records = [v for v in records if not v.group and not v.target.lower().startswith("merged")] or records
    return " · ".join(dict.fromkeys(f"{v.target.removesuffix(' target')}: {v.word}" for v in records))


def mean_delta(clips: pd.DataFrame, base: str, variant: str, metric: str) -> float:
    """`variant` minus `base` in `metric`, the mean over the sentences both spoke (no interval: `delta` has one)."""
    if metric not in clips:
        return np.nan
    d = -verdicts.paired(clips, base, variant, metric)
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else np.nan


def bounds_miss(dns: float, wer: float, bounds: dict) -> float:
    """How far mean changes of DNSMOS (`dns`) and WER (`wer`) fall outside the bounds (0 within), in DNSMOS points
    plus WER points: where no variant is within, the answer names the one closest to them. Unjudged: infinite."""
    if not np.isfinite(dns):
        return np.inf
    return max(0.0, -bounds["max_dnsmos_drop"] - dns) + (max(0.0, wer - bounds["max_wer_increase"])
                                                         if np.isfinite(wer) else 0.0)


def _miss_words(row) -> str:
    """The bounds a candidate misses, by how much, in words a reader needs no key for."""
    dns, wer = row["d_dnsmos_against"], row["d_wer_against"]
    parts = []
    if np.isfinite(dns) and dns < -row["max_dnsmos_drop"]:
        parts.append(f"DNSMOS {-dns - row['max_dnsmos_drop']:.2f} beyond its {row['max_dnsmos_drop']:.2f} drop")
    if np.isfinite(wer) and wer > row["max_wer_increase"]:
        parts.append(f"WER {wer - row['max_wer_increase']:.3f} beyond its +{row['max_wer_increase']:.3f}")
    return " and ".join(parts) or f"an interval holding a bound ({_n_words(row)})"


def _n_words(row) -> str:
    """'at n = N': the sentences the candidate's DNSMOS change was judged on."""
    n = row.get("d_dnsmos_n", np.nan)
    return f"at n = {n:.0f}" if np.isfinite(n) else "n unknown"


def _ci(row, name: str, fmt: str) -> str:
    places = int(fmt[-2])  # '+.3f' -> 3: rounded first, so that no '-0.000' is shown
    m, lo, hi = (round(row[f"d_{name}_{p}"], places) + 0.0 for p in ("mean", "lo", "hi"))
    if not np.isfinite(m):
        return "–"
    if np.isfinite(lo):
        return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
    return f"{m:{fmt}} (means only)" if row["means_only"] else f"{m:{fmt}} (n = {row[f'd_{name}_n']:.0f})"


def _times(x: float, more: str, less: str) -> str:
    if not np.isfinite(x):
        return "–"
    if abs(x - 1) < 0.005:
        return "same"
    return f"{x:.2f}× {more}" if x >= 1 else f"{1 / x:.2f}× {less}"


def describe(row) -> dict:
    """A candidate as the words of one answers row."""
    where = {"met": "within the bounds", "undecided": f"undecided ({_n_words(row)})", "missed": "outside the bounds",
             "not judged": "not judged (no quality scores)"}
    slower = bool(row.get("none_cheaper", False))  # no variant of the technique is faster or smaller
    named = f"{row['variant']} ({row['backend']})"
    return {"technique": row["technique_name"],
            "best variant": f"none faster or smaller; the closest to the bounds: {named}" if slower else named,
            "quality bounds": where.get(row["bounds"], "not judged")
            + (" (on means)" if row["means_only"] or row.get("bounds_on_means", False) else "")
            + (f" (none is within; the closest misses by {_miss_words(row)})" if row.get("ranked_by") == "closeness"
               else ""),
            "speed": _times(row["speedup"], "faster", "slower"),
            "size": _times(1 / row["size_ratio"], "smaller", "larger") if np.isfinite(row["size_ratio"]) else "–",
            "ΔDNSMOS [95 % CI]": _ci(row, "dnsmos", "+.2f"), "ΔWER [95 % CI]": _ci(row, "wer", "+.3f"),
            "ΔSECS [95 % CI]": _ci(row, "secs", "+.3f"), "relies on": row["relies_on"]}


def answers(profile: str, df: pd.DataFrame,
            outputs: Path | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(one row per technique: its best variant in words with the verdict of its notebook, every technique's
    candidates best first). A technique whose notebook has not run says so in its row."""
    root = Path(outputs or OUTPUTS) / profile
    rows, every = [], {}
    for tech in TECHNIQUES:
        c = candidates(df, tech, root)
        every[tech.name] = c
        row = describe(c.iloc[0]) if len(c) else {"technique": tech.name,
                                                   "best variant": f"none judged in notebook {tech.notebook[:2]}"}
        row["verdict"] = (target_verdicts(root, tech) if len(c) else "") or "–"
        rows.append(row)
    table = pd.DataFrame(rows).fillna("–")
    if table.get("ΔSECS [95 % CI]", pd.Series(["–"])).eq("–").all():
        table = table.drop(columns=["ΔSECS [95 % CI]"], errors="ignore")
    return table, every
