"""Verdicts: one function per kind of target, each returning one line in words and one met/missed per target,
so that a notebook and the report never say two things about the same target. Built from result frames only."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lib.core.bounds import (  # noqa: F401 (the verdicts' vocabulary)
    ADAPTATION_WER_MARGIN, CONFIDENCE, UNDECIDED, UNNAMED_SET, decide, decided_clips, deltas, judge, judge_wer, paired,
    quality_bounds, resolution, varied_set, within)
from lib.core.subject import ADAPTATION_FACTS, Precision, Technique
from lib.core.verdict import Verdict, outcome_of
from lib.report.recommend import relies_on
from lib.report.report import cpu_line


def targets(table: pd.DataFrame, speed_ratio: float, size_ratio: float, max_dnsmos_drop: float,
            max_wer_increase: float, judged: pd.DataFrame | None = None, label: str = "") -> dict:
    """Whether some variant meets the speed target and some the size target within the quality bounds; when
    not, by how much the closest one misses, in words. With `judged` (`quality_bounds`: the bounds judged sentence
    by sentence) a variant is within the bounds only where both are met, and a target whose only candidates have
    an interval holding a bound is undecided at their n, not met or missed. Returns the lines, met (the variant
    meeting each goal or None) and `verdicts`, one record per goal (its target named with `label` before it; its
    margin: how far the variant's ratio is inside the target's, negative outside)."""
    lines, met, records = [], {}, []

    def record(goal: str, outcome: str, variant: str, ratio: float, limit: float) -> None:
        records.append(Verdict(f"{label}{goal} target", outcome, lines[-1].replace("**", ""), variant,
                               n=min_n(judged, variant), margin=limit - ratio))
    if judged is not None:
        table = table.drop(columns=["within_quality_bounds"], errors="ignore").merge(
            judged[["variant", "within_quality_bounds", "bounds"]], on="variant", how="left")
        table["within_quality_bounds"] = table["within_quality_bounds"].fillna(False).astype(bool)
    good = table[table["within_quality_bounds"]]
    for goal, col, limit, what, most in (("speed", "rtf_ratio", speed_ratio, "faster", "fastest"),
                                         ("size", "size_ratio", size_ratio, "smaller", "smallest")):
        if col not in table:
            continue
        better = good[good[col] < 1.0]  # the parent itself (ratio 1) or a slower variant answers no "how much faster"
        hit = better[better[col] <= limit].sort_values(col)
        if not hit.empty:
            r = hit.iloc[0]
            met[goal] = r["variant"]
            lines.append(f"**{goal} target met** by `{r['variant']}`: {1 / r[col]:.2f}x {what}, DNSMOS drop "
                         f"{r['dnsmos_drop']:+.3f}, WER increase {r['wer_increase']:+.3f}."
                         + varied_note(judged, r["variant"]))
            record(goal, "met", r["variant"], r[col], limit)
            continue
        met[goal] = None
        open_ = (table[(table[col] <= limit) & (table["bounds"] == UNDECIDED)].sort_values(col) if "bounds" in table
                 else table[:0])
        if not open_.empty:
            r = open_.iloc[0]
            lines.append(f"**{goal} target {undecided_at(judged, r['variant'])}** for `{r['variant']}`: "
                         f"{1 / r[col]:.2f}x {what}, but an interval of its sentences holds a quality bound (DNSMOS "
                         f"drop {r['dnsmos_drop']:+.3f}, WER increase {r['wer_increase']:+.3f})."
                         + varied_note(judged, r["variant"]))
            record(goal, "undecided", r["variant"], r[col], limit)
            continue
        best_ok = better.sort_values(col).iloc[0] if not better.empty else None
        best_any = table.sort_values(col).iloc[0]
        msg = f"**{goal} target missed.** "
        if best_ok is not None:
            msg += (f"Within the quality bounds the best is `{best_ok['variant']}` at {1 / best_ok[col]:.2f}x {what} "
                    f"(target {1 / limit:.0f}x). ")
        msg += (f"The {most} variant of all, `{best_any['variant']}` ({1 / best_any[col]:.2f}x), drops DNSMOS by "
                f"{best_any['dnsmos_drop']:.2f} and raises WER by {best_any['wer_increase']:+.3f}."
                + varied_note(judged, best_any["variant"]))
        lines.append(msg)
        closest = best_ok if best_ok is not None else best_any
        record(goal, "missed", closest["variant"], closest[col], limit)
    return {"lines": lines, "met": met, "verdicts": records}


def min_n(judged: pd.DataFrame | None, variant: str) -> int | None:
    """The fewest sentences among `variant`'s judgements (quality_bounds' table); None where it has none."""
    if judged is None or variant not in set(judged["variant"]):
        return None
    r = judged.set_index("variant").loc[variant]
    ns = [j["n"] for k, j in r.items() if k.endswith("_judged") and isinstance(j, dict)]
    return int(min(ns)) if ns else None


def undecided_at(judged: pd.DataFrame | None, variant: str) -> str:
    """'undecided at n = N', N the fewest sentences among `variant`'s judgements (quality_bounds' table)."""
    n = min_n(judged, variant)
    return f"{UNDECIDED} at n = {n}" if n is not None else UNDECIDED


def varied_note(judged: pd.DataFrame | None, variant: str) -> str:
    """What the varied judged set says of `variant` (quality_bounds' judgements), as a clause naming the set; ''
    where not judged."""
    if judged is None or "wer_rise_varied_judged" not in judged or variant not in set(judged["variant"]):
        return ""
    r = judged.set_index("variant").loc[variant]
    rise, drop = r["wer_rise_varied_judged"], r["dnsmos_drop_varied_judged"]
    name = r.get("varied_set", UNNAMED_SET)
    if not isinstance(rise, dict):  # decided on the screen alone (bounds.decide): no varied set judged it
        return ""
    if rise["word"] == "not judged":
        return f" Not judged on {name}."
    return (f" On {name} (n = {rise['n']}): WER increase {rise['mean']:+.3f} [{rise['lo']:+.3f}, {rise['hi']:+.3f}]"
            f" ({rise['word']}), DNSMOS drop {drop['mean']:+.3f} [{drop['lo']:+.3f}, {drop['hi']:+.3f}]"
            f" ({drop['word']}).")


def _sampled(j: dict) -> str:
    return f"per sentence {j['mean']:+.3f}, 95 % CI {j['lo']:+.3f} to {j['hi']:+.3f}, n = {j['n']}"


def adaptation_verdict(table, secs_clips: pd.DataFrame, full: str = "full", base: str = "teacher",
                       target: str = "target", halfway: float = 0.5, lora_share: float = 0.8,
                       max_trainable_pct: float = 5.0, qlora_margin: float = 0.05,
                       wer_margin: float = ADAPTATION_WER_MARGIN, rtf_margin: float = 0.05,
                       dnsmos_margin: float = 0.2, runs: str = "") -> dict:
    """One line and one met/missed/undecided per target of the adaptation study, from `table` (a deltas frame with
    `wer`,
    `trainable_pct_of_full` and `rtf_ratio` per variant; `target` holds the target speaker's own WER; `base` is the
    unadapted voice) and `secs_clips` (variant, id, secs: SECS sentence by sentence, the target's self-similarity
    under `target`). SECS targets are judged on per-sentence margins with `judge` (a margin whose interval holds 0
    is undecided at its n, which is not met):
    - full: SECS at least `halfway` from the base's SECS to the target's self-similarity, WER at most the target's
      own + `wer_margin`, DNSMOS P.808 at least the target's own - `dnsmos_margin` (where both are measured);
    - lora: a LoRA at most `max_trainable_pct` % of full's trainable parameters reaches `lora_share` of full's SECS
      gain over the base, at the same WER bound;
    - qlora: each QLoRA within `qlora_margin` (relative) of the LoRA of its rank in SECS;
    - speed: merged LoRA voices at the base's RTF within `rtf_margin`.
    A target that cannot be judged (a row or column missing) counts as missed and says why. `runs` picks whose
    methods are judged: '' this run's (variants without '@'), or a suffix such as '@cpu-long' for the packs of other
    runs (`full` should then carry it too); those get the full and LoRA lines only (no QLoRA, and speed is this run's).
    """
    records: list[Verdict] = []

    def rec(target: str, word: str, subject: str = "", j: dict | None = None) -> None:
        """The record of the line just said (`j`: the judged margin, where the target has one)."""
        j = j or {}
        records.append(Verdict(target, outcome_of(word), lines[-1].replace("**", ""), subject, n=j.get("n"),
                               margin=j.get("mean"), lo=j.get("lo"), hi=j.get("hi"),
                               group="long runs" if runs else ""))
    t = table.groupby("variant", sort=False).first()  # a variant's rows from several back-ends, merged
    made = made_by(t)
    mine = lambda v: made["run"].get(v, "") == runs.lstrip("@")
    kind = lambda v, k: made["method"].get(v, "") == k
    col = lambda c: t[c] if c in t else pd.Series(np.nan, index=t.index)
    wer, pct = col("wer"), col("trainable_pct_of_full")
    p = secs_clips.pivot_table(index="id", columns="variant", values="secs", aggfunc="mean")
    secs = p.mean()
    lines, met = [], {}
    need = [v for v in (full, base, target) if v not in p.columns]
    if need:
        msg = f"cannot be judged: no SECS for {', '.join(need)}"
        for name in ("Full fine-tuning", "LoRA") + (() if runs else ("QLoRA",)):
            lines.append(f"**{name} target missed**: {msg}.")
            rec(f"{name} target", "missed")
        met.update({"full": False, "lora": False} if runs else {"full": False, "lora": False, "qlora": False})
        if not runs:
            lines.append(_speed_line(t, rtf_margin, met))
            rec("Merged-speed target", "met" if met["speed"] else "missed")
        return {"lines": lines, "met": met, "verdicts": records}
    wer_bound = float(wer.get(target, np.nan)) + wer_margin
    dns = col("dnsmos_p808")
    dns_bound = float(dns.get(target, np.nan)) - dnsmos_margin
    ok_dns = lambda v: not np.isfinite(dns_bound) or bool(np.isfinite(dns.get(v, np.nan)) and dns[v] >= dns_bound)
    ok_wer = lambda v: bool(np.isfinite(wer.get(v, np.nan)) and wer[v] <= wer_bound) and ok_dns(v)
    dns_text = lambda v: (f", DNSMOS P.808 {dns.get(v, np.nan):.2f} (bound {dns_bound:.2f})"
                          if np.isfinite(dns_bound) else "")
    gain = lambda v: p[v] - p[base]  # per sentence
    j = judge(gain(full) - halfway * (p[target] - p[base]), 0.0, True)
    met["full"] = j["word"] == "met" and ok_wer(full)
    need_full = secs[base] + halfway * (secs[target] - secs[base])
    lines.append(f"**Full fine-tuning target {_word(j, met['full'], ok_wer(full))}**: SECS {secs[full]:.3f} "
                 f"(needed {need_full:.3f}, {halfway:.0%} of the way from the unadapted {secs[base]:.3f} "
                 f"to the target's self-similarity {secs[target]:.3f}; margin {_sampled(j)}), "
                 f"WER {wer.get(full, np.nan):.3f} (bound {wer_bound:.3f}){dns_text(full)}.")
    rec("Full fine-tuning target", _word(j, met["full"], ok_wer(full)), full, j)
    loras = [v for v in p.columns if kind(v, "lora") and made["merged"].get(v) is not False and mine(v)
             and pct.get(v, np.inf) <= max_trainable_pct]
    if not loras:
        met["lora"] = False
        lines.append(f"**LoRA target missed**: no LoRA trains at most {max_trainable_pct:g} % of full's parameters.")
        rec("LoRA target", "missed")
    else:
        share = {v: gain(v).mean() / gain(full).mean() if gain(full).mean() > 0 else np.nan for v in loras}
        js = {v: judge(gain(v) - lora_share * gain(full), 0.0, True) for v in loras}
        good = [v for v in loras if js[v]["word"] == "met" and ok_wer(v)]
        best = max(loras, key=lambda v: secs[v])
        met["lora"] = bool(good) and gain(full).mean() > 0
        why = ("full fine-tuning gained nothing over the unadapted voice, so there is no gain to share"
               if gain(full).mean() <= 0 else f"{best} reaches {share[best]:.0%} of full's SECS gain with "
               f"{pct[best]:.1f} % of its parameters (margin {_sampled(js[best])}), WER {wer.get(best, np.nan):.3f}"
               f"{dns_text(best)}")
        lines.append(f"**LoRA target {_word(js[best], met['lora'], ok_wer(best))}**: "
                     + (f"{', '.join(good)} reach at least {lora_share:.0%} of full fine-tuning's SECS gain; "
                        if good else "")
                     + why + f" (bound {lora_share:.0%}, WER {wer_bound:.3f}).")
        rec("LoRA target", _word(js[best], met["lora"], ok_wer(best)), best, js[best])
    if runs:
        return {"lines": lines, "met": met, "verdicts": records}
    pairs = [(q, lo) for q in p.columns if kind(q, "qlora") and mine(q) for lo in p.columns
             if kind(lo, "lora") and mine(lo) and made["merged"].get(lo) is not False
             and made["rank"].get(lo) == made["rank"].get(q)]
    if not pairs:
        met["qlora"] = False
        lines.append("**QLoRA target missed**: no QLoRA with a LoRA of the same rank to compare with.")
        rec("QLoRA target", "missed")
    else:
        jq = {q: judge(p[q] - (1 - qlora_margin) * p[lo], 0.0, True) for q, lo in pairs}
        words = {jj["word"] for jj in jq.values()}
        met["qlora"] = words == {"met"}
        word = ("met" if met["qlora"] else "missed" if "missed" in words or "not judged" in words
                else f"{UNDECIDED} at n = {min(jj['n'] for jj in jq.values())}")
        lines.append(f"**QLoRA target {word}**: SECS against LoRA of the same rank: "
                     + ", ".join(f"{q} {secs[q] / secs[lo] - 1:+.1%} (margin {_sampled(jq[q])})" for q, lo in pairs)
                     + f" (bound -{qlora_margin:.0%}).")
        worst = min(jq, key=lambda q: jq[q].get("mean", np.inf))
        rec("QLoRA target", word, worst, jq[worst])
    lines.append(_speed_line(t, rtf_margin, met))
    rec("Merged-speed target", "met" if met["speed"] else "missed")
    return {"lines": lines, "met": met, "verdicts": records}


FULL_METHODS = ("full", "full-acoustic")  # what a LoRA's gain is measured against, in this order


def runs_adaptation(table, secs_clips: pd.DataFrame, runs: pd.DataFrame, suffix: str, **bounds) -> dict:
    """adaptation_verdict's full and LoRA lines and records on other runs' packs (the variants whose rows say they
    were trained in the run `suffix` names, '@cpu-long'; the LoRA against their full fine-tuning, else full-acoustic),
    each line prefixed with what the packs trained (`runs`: method, steps, machine_hours, device); none when `runs`
    is empty. `bounds`: adaptation_verdict's other keywords."""
    if not len(runs):
        return {"lines": [], "verdicts": []}
    made = made_by(table.groupby("variant", sort=False).first())
    spoke = made[made.index.isin(set(secs_clips["variant"])) & (made["run"] == suffix.lstrip("@"))]
    full = next((v for m in FULL_METHODS for v in spoke.index[spoke["method"] == m]), "full" + suffix)
    v = adaptation_verdict(table, secs_clips, full=full, runs=suffix, **bounds)
    budget = "; ".join(f"{r.method} {int(r.steps):,} steps, {r.machine_hours:.2f} machine-hours on the {r.device}"
                       for r in runs.itertuples())
    said = lambda line: f"Long runs ({budget}): {line}"
    return {"lines": [said(line) for line in v["lines"]],
            "verdicts": [replace(r, sentence=said(r.sentence)) for r in v["verdicts"]]}


def made_by(t: pd.DataFrame) -> pd.DataFrame:
    """How each variant of `t` (indexed by variant) was made, from its rows' own columns (lib.core.subject's
    ADAPTATION_FACTS): method ('' for none), rank, merged (True, False or None) and run ('' for this run's), as read
    back from a CSV too. A ValueError names columns a table lacks: no verdict reads them out of a name."""
    missing = [c for c in ADAPTATION_FACTS if c not in t]
    if missing:
        raise ValueError(f"the adaptation verdicts need the rows' {missing}: how each adapted voice was made "
                         "(lib.core.subject.Subject's method, rank, merged and run)")
    flag = lambda x: True if x is True or str(x) == "True" else False if x is False or str(x) == "False" else None
    text = lambda x: "" if x is None or (isinstance(x, float) and np.isnan(x)) else str(x)
    return pd.DataFrame({"method": t["method"].map(text), "rank": pd.to_numeric(t["rank"], errors="coerce"),
                         "merged": t["merged"].map(flag).astype(object), "run": t["run"].map(text)}, index=t.index)


def _word(j: dict, met: bool, wer_ok: bool = True) -> str:
    """met, missed, or undecided at its n: an interval of the SECS margin holding it while the WER bound holds."""
    return "met" if met else (f"{UNDECIDED} at n = {j['n']}" if j["word"] == UNDECIDED and wer_ok else "missed")


def _speed_line(t, rtf_margin: float, met: dict) -> str:
    made = made_by(t)
    lora = (made["method"] == "lora") & (made["run"] == "")
    merged = t[lora & made["merged"].map(lambda x: x is True)]
    if "rtf_ratio" not in t or not merged["rtf_ratio"].notna().any():
        met["speed"] = False
        return "**Merged-speed target missed**: no timed merged LoRA voice, so it cannot be judged."
    r = merged["rtf_ratio"].dropna()
    met["speed"] = bool(((r - 1).abs() <= rtf_margin).all())
    twin = {v: next((m for m in merged.index if made.loc[m, "rank"] == made.loc[v, "rank"]), v)
            for v in t.index[lora & made["merged"].map(lambda x: x is False)]}  # named by its merged twin
    unmerged = "".join(f"; unmerged {twin[v]} {t.loc[v, 'rtf_ratio']:.3f}" for v in twin)
    return (f"**Merged-speed target {'met' if met['speed'] else 'missed'}**: RTF relative to the base voice, same run: "
            + ", ".join(f"{v} {x:.3f}" for v, x in r.items()) + f"{unmerged} (bound 1 ± {rtf_margin:g}).")


# --- notebook 05: the back-ends' targets on this CPU and on the recorded GPU run ------------------------------------

def _rows(table: pd.DataFrame, keep: Callable[[str, str], bool]) -> pd.DataFrame:
    return table.loc[[i for i in table.index if keep(*i)]] if len(table) else table


def cpu_verdicts(table: pd.DataFrame, *, recorded_device: str, ttfa_target_ms: float, chunk_pesq_min: float,
                 five_x: str, five_x_target_ms: float, cpu_line: str, frame: pd.DataFrame) -> list[Verdict]:
    """This CPU's targets: the teacher engine with the lowest TTFA p90 among those whose chunked output keeps PESQ-WB
    >= `chunk_pesq_min` (an engine with no chunk PESQ is left out) against `ttfa_target_ms`, with the CPU it ran
    on and the feature it relies on (its technique's number format, from the run's result rows `frame`); the best
    student engine whose name holds `five_x` against `five_x_target_ms` (margin: the target's ms minus the
    engine's)."""
    technique = frame.groupby("variant")["technique"].first()
    cpu = _rows(table, lambda source, variant: not source.startswith(recorded_device))
    if cpu.empty or "ttfa_ms_p90" not in cpu:
        return []
    teacher = _rows(cpu, lambda source, variant: ":" not in variant)  # students (name:engine) are judged below
    pesq = teacher.get("chunk_pesq_wb", pd.Series(np.inf, index=teacher.index))  # no PESQ package: none is left out
    good, out = teacher[pesq >= chunk_pesq_min], []
    if good.empty:
        out.append(Verdict("CPU TTFA p90 target", "missed",
                           f"CPU TTFA: no engine keeps chunked PESQ >= {chunk_pesq_min:g}"))
    else:
        who = good["ttfa_ms_p90"].idxmin()
        v = good.loc[who, "ttfa_ms_p90"]
        out.append(Verdict("CPU TTFA p90 target", "met" if v <= ttfa_target_ms else "missed",
                           f"CPU TTFA p90 {v:.0f} ms ({who[1]}, chunk PESQ >= {good.loc[who, 'chunk_pesq_wb']:.2f}) "
                           f"{'meets' if v <= ttfa_target_ms else 'misses'} <= {ttfa_target_ms:g} ms, measured on "
                           f"{cpu_line}; relies on "
                           f"{Technique.of(technique.get(who[1], 'hardware')).precision.relies_on}",
                           who[1], margin=ttfa_target_ms - v))
    five = [i for i in cpu.index if five_x in i[1]]
    if five:
        best = cpu.loc[five, "ttfa_ms_p90"].idxmin()
        v, pq = cpu.loc[best, "ttfa_ms_p90"], cpu.loc[best].get("chunk_pesq_wb", float("nan"))
        out.append(Verdict("5x voice TTFA p90 target", "met" if v <= five_x_target_ms else "missed",
                           f"5x voice TTFA p90 {v:.0f} ms ({best[1]}, chunk PESQ {pq:.2f}) "
                           f"{'meets' if v <= five_x_target_ms else 'misses'} <= {five_x_target_ms:g} ms on "
                           f"{cpu_line}", best[1], margin=five_x_target_ms - v))
    return out


def gpu_verdicts(table: pd.DataFrame, *, recorded_device: str, ttfa_p99_ms: float,
                 throughput_xrt: float) -> list[Verdict]:
    """The recorded GPU run's targets: the best first-chunk p99 against `ttfa_p99_ms`, the best offline throughput
    (at its best batch) against `throughput_xrt`; 'not measured' (undecided) where the run has no such rows."""
    rows, out, gpu = (_rows(table, lambda source, variant: source.startswith(recorded_device)), [],
                      recorded_device.upper())
    for name, metric, op, bound in [(f"{gpu} TTFA p99 (ms)", "ttfa_ms_p99", "<=", ttfa_p99_ms),
                                    (f"{gpu} offline throughput (x real time)", "throughput_xrt_offline", ">=",
                                     throughput_xrt)]:
        target = name.split(" (")[0] + " target"
        if rows.empty or metric not in rows:
            out.append(Verdict(target, "undecided", f"{name}: not measured ({recorded_device} has no such rows)"))
            continue
        best, who = ((rows[metric].min(), rows[metric].idxmin()) if op == "<="
                     else (rows[metric].max(), rows[metric].idxmax()))
        met = best <= bound if op == "<=" else best >= bound
        out.append(Verdict(target, "met" if met else "missed",
                           f"{name}: best {best:.1f} ({who[1]}) {'meets' if met else 'misses'} {op} {bound:g}",
                           who[1], margin=(bound - best) if op == "<=" else (best - bound)))
    return out


# --- notebook 03: what this CPU's run says ----------------------------------------------------------------------------

def cpu_findings(table: pd.DataFrame, env: dict, frame: pd.DataFrame, baseline: str) -> list[str]:
    """A notebook's CPU-specific findings computed from its own run (a `deltas` table, its env.json and its result
    rows): which CPU, the fastest variant within the quality bounds and the feature it relies on, how the
    precision-specific variants fared, what could not run on this CPU and why, and how many timings were taken
    on a busy machine. Nothing here is written for one machine by hand."""
    lines = [f"Measured on {cpu_line(env)}, at {env.get('threads', '?')} thread(s)."]
    timed = table.dropna(subset=["rtf_ratio"]) if "rtf_ratio" in table else table.iloc[:0]
    good = timed[timed["within_quality_bounds"] & (timed["variant"] != baseline)]
    if not good.empty:
        b = good.loc[good["rtf_ratio"].idxmin()]
        lines.append(f"Fastest within the quality bounds on this CPU: **{b['variant']}** ({b['backend']}) at "
                     f"{b['rtf_ratio']:.2f}x the baseline's RTF, same run; "
                     f"it relies on {relies_on(b['technique'])}.")
    elif not timed.empty:
        lines.append("No variant was timed faster within the quality bounds on this CPU.")
    for _, r in timed[[relies_on(t) == Precision.BF16.relies_on for t in timed["technique"]]].iterrows():
        lines.append(f"{r['variant']}: {r['rtf_ratio']:.2f}x the baseline's RTF, "
                     f"{'within' if r['within_quality_bounds'] else 'outside'} the quality bounds (native bf16 here).")
    absent = frame[(frame["status"] == "absent") & (frame["device"].fillna("cpu") == "cpu")].drop_duplicates("variant")
    for _, r in absent.iterrows():
        lines.append(f"{r['variant']}: absent on this CPU ({r['reason']}).")
    busy = frame[frame["status"] == "contended"]
    if len(busy):
        lines.append(f"{busy['variant'].nunique()} variant(s) were timed while other processes held the cores; their "
                     "timings are marked contended and left out of this verdict.")
    return lines


# --- notebook 02: the findings beside the verdicts, and why the targets are missed ---------------------------------

def adaptation_context_lines(t: pd.DataFrame, check: dict, kernel_check: dict, n) -> list[str]:
    """The findings beside the verdicts: what the speaker's own clips and the teacher score, the posterior's round
    trip and QLoRA's NF4 kernel check (`t`: the deltas table by variant; `n`: the findings' number formatter)."""
    return [f"The speaker's own clips score WER {n(t.loc['target-speaker', 'wer'])} and DNSMOS P.808 "
            f"{n(t.loc['target-speaker', 'dnsmos_p808'])}; the teacher WER {n(t.loc['teacher', 'wer'])}.",
            f"The posterior encoder gives the teacher's held-out audio back at mel L1 {n(check['mel_l1'])} (the "
            f"decoder fed zeros: {n(check['mel_l1_silence'])}).",
            f"QLoRA's NF4 base on this CPU ({n(kernel_check['nf4_layers'], 'd')} flow layers): mel L1 to the float "
            f"voice {n(kernel_check['mel_l1_bnb_kernel'])} through bitsandbytes' CPU kernel, "
            f"{n(kernel_check['mel_l1_float_kernel'])} through a float product of the same NF4 weights (section 3)."]


def adaptation_why_lines(t: pd.DataFrame, diag: pd.DataFrame, n, folders: int = 3,
                         arms: pd.DataFrame | None = None, wer_margin: float = ADAPTATION_WER_MARGIN) -> list[str]:
    """Why the targets are missed, from this run (how SECS and WER move together over the adapted variants) and from
    the diagnostic packs (studies.adaptation.diagnosis(); all `folders` of them, or nothing is said of them): the
    cause the runs still carry once the four faults of issue 50 are fixed; then what each arm tried since (`arms`,
    the same diagnosis of studies.adaptation.ARMS) did to the words, against the bound (the speaker's own WER +
    `wer_margin`), and its training against its held-out mel L1."""
    adapted = t.drop(index=[v for v in ("teacher", "target-speaker") if v in t.index])[["secs", "wer"]].dropna()
    lines = []
    if len(adapted) >= 3:
        rho = spearmanr(adapted["secs"], adapted["wer"]).statistic
        lines.append(f"Why the words go: over the {n(len(adapted), 'd')} adapted variants judged here, the nearer a "
                     "variant comes to the speaker (SECS), the more words it tends to lose (rank correlation of SECS "
                     f"and WER {n(rho, '+.2f')}); none reaches the speaker's timbre and keeps the words.")
    if len(diag) == folders:
        d = diag.set_index("run")
        said = "; ".join(f"{r['folder']}: validation WER {n(r['validation_wer'])} (the folder's own "
                         f"{n(r['folder_own_wer'])}), held-out mel L1 {n(r['heldout_mel_l1'])} after "
                         f"{n(r['steps'], ',d')} steps" for _, r in d.iterrows())
        last = d.iloc[-1]
        lines.append(f"What the long runs still carry: of issue 50's four faults, none. They train the {last['path']} "
                     f"path on {last['durations']} durations (the alignment yardstick's best on the speaker), with the "
                     f"{last['frozen']} frozen, and LoRA reaches the decoder's dilated and transposed convolutions. "
                     f"One recipe (full-acoustic) on three folders: {said}. The same recipe "
                     "keeps the words on audio the voice can already match and loses them on the speaker, true "
                     "durations included: the cause left is the target itself. On another speaker the mel L1 plateaus "
                     "far above its level on the teacher's audio, and a decoder trained on an L1 average of what it "
                     "cannot match blurs the phonemes. The arms it called for: piper's discriminators on the inference "
                     "path (below), and one timing in training and at inference (the timing line below tests it).")
    for _, r in (arms if arms is not None else pd.DataFrame()).iterrows():  # studies.adaptation.ARMS' packs
        fit = ("it fits the clips it trains on better than held-out ones" if r["train_mel_l1"] < r["heldout_mel_l1"]
               - 0.02 else "no closer on the clips it trains on than on held-out ones")
        lines.append(f"The arm tried: {r['folder']}, {n(r['steps'], ',d')} steps in all ({n(r['machine_hours'])} "
                     f"machine-hours): validation WER {n(r['validation_wer'])} against the bound "
                     f"{n(r['folder_own_wer'] + wer_margin)}, SECS {n(r['validation_secs'])}. Its training mel L1 "
                     f"{n(r['train_mel_l1'])} against {n(r['heldout_mel_l1'])} on the held-out clips: {fit}.")
    return lines


# --- notebook 04: the headline -------------------------------------------------------------------------------------

def distillation_headline(target_lines: Sequence[str], five_lines: Sequence[str], where: pd.DataFrame, minutes: float,
             device: str) -> list[str]:
    """The verdict lines: each speed target, the 5x voice's, and where and how long the students trained."""
    lines = [line for line in target_lines if "speed target" in line]
    lines += ["5x voice: " + line for line in five_lines if "speed target" in line]
    elsewhere = ", ".join(f"{r.student} ({r.steps} steps, {r.hours:.2f} h on {r.where}"
                          + (f" + {r.device_hours:.2f} device-hours on {r.gpu}" if r.device_hours else "") + ")"
                          for r in where.itertuples() if r.where != device)
    return lines + [f"Trained here: {minutes:.1f} minutes on {device}; recorded elsewhere (GPU runs, long CPU runs): "
                    + (elsewhere or "none yet")]


def distillation_ort_line(f: dict, n, quote, budget_of: dict, budget: str, *, threads: int, sentences: int,
                          lists) -> str:
    """Notebook 04's findings line on its ONNX Runtime students (`f`: studies.distillation.findings_facts; `n`, `quote`:
    the findings' number formatter and quoting; each student's training budget from `budget_of`, else `budget`)."""
    said = "; ".join(f"`{name}` rtf_ratio {n(r, '.3f')}, DNSMOS drop {n(d)}, WER rise {n(w)} "
                     f"({quote(budget_of.get(name) or budget)})" for name, r, d, w in f["ort"])
    return (f"ONNX Runtime, {n(threads, 'd')} thread, against `fp32-ort` in the same run, on {n(sentences, 'd')} "
            f"sentences of Harvard lists {n(lists, 'd')} that no training touched: {said}.")


def distillation_scan_line(f: dict, n) -> str:
    """Notebook 04's line on the untrained frame-rate decoders timed inside the 5x voice ('' where none was)."""
    if not f["scan"]:
        return ""
    return ("Untrained frame-rate decoders timed inside the 5x voice (`istft_scan`): "
            + ", ".join(f"`{name}` rtf_ratio {n(r, '.3f')}" for name, r in f["scan"])
            + "; speed does not depend on the weights.")


def distillation_long_line(f: dict, n) -> str:
    """Notebook 04's line on the long CPU runs of one decoder student at equal machine time ('' where none)."""
    if not f["long"]:
        return ""
    return (f"Long CPU runs of one decoder student at equal machine time ({n(f['hours'])} machine-hours; held-out PESQ "
            "against the teacher, `outputs/recorded/training_ledger.csv`): "
            + "; ".join(f"{rc} `{run}` PESQ {n(p)} after {n(s, 'd')} steps" for rc, run, p, s in f["long"])
            + ". Best first. ")
