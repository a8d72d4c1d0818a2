"""Findings that cannot go stale: a notebook's closing Markdown is rendered from its run's own results.

Every number a finding states comes from a call here (`value`, `number`, `verdict`), which formats it and keeps it
in `numbers`; `show` displays the Markdown with that list in the output's metadata, and `unbacked` (the smoke test's
check) names any number in a findings output that was neither rendered nor found in a recorded file the same line
cites. A verdict names its budget and sample size, and a difference whose 95 % bootstrap interval (per clip,
scipy.stats.bootstrap) includes zero is undecided at its n, not met or missed."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from lib.report import verdicts

METADATA_KEY = "tts_lab_findings"
# a whole number (signs, thousands, decimals, exponents), never part of a name such as fp32, r8, P.808, 5x or ort-cpu/1
NUMBER = re.compile(r"(?<![\w.+\-−/])[-+−]?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\w|\.\d)")
REFERENCE = re.compile(r"\b(?:notebook|section|issue)s? \d+(?:(?:,| and) \d+)*", re.I)  # pointers, not claims
CITED = re.compile(r"`?(outputs/recorded/[\w./+-]+)`?")


class FindingsError(KeyError):
    """A finding asked for a result the run did not record: names the keys."""


class Findings:
    """The closing findings of one notebook: `frame` is its results (results.csv), `budget` says what the numbers
    were bought with (e.g. 'after 80 CPU steps'), and each `line` is one bullet."""

    def __init__(self, frame: pd.DataFrame, budget: str = ""):
        self.frame, self.budget = frame, budget
        self.lines: list[str] = []
        self.numbers: list[str] = []

    def number(self, x, fmt: str = ".2f") -> str:
        """A number computed from results in the notebook (a ratio, a count, a parameter), formatted and kept as
        rendered; a list renders as its items joined by commas (e.g. the Harvard lists judged)."""
        if isinstance(x, (list, tuple)):
            return ", ".join(self.number(v, fmt) for v in x)
        text = format(x, fmt)
        self.numbers.append(text)
        return text

    def quote(self, text: str) -> str:
        """Text the run itself recorded (an absent row's reason): its numbers count as rendered."""
        self.numbers += [m.group() for m in NUMBER.finditer(text)]
        return text

    def value(self, metric: str, fmt: str = ".2f", agg: str = "only", **where) -> str:
        """The recorded `metric` where every key equals its value: one row (agg 'only'), or the rows' mean/min/max."""
        q = self.frame[self.frame["metric"] == metric]
        for k, v in where.items():
            if k not in q.columns:
                raise FindingsError(f"results have no column {k!r} (asked for {metric} where {where})")
            q = q[q[k] == v]
        if "status" in q.columns:
            q = q[q["status"].fillna("ok") == "ok"]
        if q.empty or (agg == "only" and len(q) != 1):
            raise FindingsError(f"{len(q)} ok rows of {metric!r} where {where} "
                                f"(wanted {'one' if agg == 'only' else 'some'})")
        x = float(q["value"].iloc[0]) if agg == "only" else float(getattr(q["value"].astype(float), agg)())
        return self.number(x, fmt)

    def verdict(self, diffs, bound: float, higher_is_better: bool, what: str, seed: int = 0,
                budget: str | None = None) -> str:
        """'met' / 'missed' / 'undecided at n = N' for per-clip differences against `bound` (e.g. the DNSMOS drop
        per sentence against 0.10), with the mean, its 95 % bootstrap interval and n, and the budget of what is
        judged (`budget`; the notebook's own where None)."""
        return self._said(verdicts.judge(diffs, bound, higher_is_better, seed), bound, what, budget)

    def _said(self, j: dict, bound: float, what: str, budget: str | None) -> str:
        budget = self.budget if budget is None else self.quote(budget)
        if j["word"] == "not judged":
            return f"{what}: not judged (n = {self.number(j['n'], 'd')})"
        n = self.number(j["n"], "d")
        word = f"{j['word']} at n = {n}" if j["word"] == verdicts.UNDECIDED else j["word"]
        changed = j.get("changed", np.nan)
        ci = self.number(100 * verdicts.CONFIDENCE, ".0f")
        return (f"{what}: **{word}** (mean {self.number(j['mean'])}, {ci} % CI {self.number(j['lo'])} to "
                f"{self.number(j['hi'])}, bound {self.number(bound)}, n = {n}"
                + (f", {self.number(changed, 'd')} transcripts changed" if np.isfinite(changed) else "")
                + (f", {budget}" if budget else "") + ")")

    def bounds(self, per_clip: pd.DataFrame, base: str, variant: str, max_dnsmos_drop: float,
               max_wer_increase: float, budget: str | None = None) -> str:
        """The quality bounds of `variant` against `base`, sentence by sentence (per_clip: variant, id, dnsmos_p808,
        wer), each judged as `verdict` judges: met, missed or undecided at its n (WER pooled, as `judge_wer`
        judges it, with the sentences whose transcript changed); `budget`: the variant's own."""
        drop = verdicts.paired(per_clip, base, variant, "dnsmos_p808")
        rise = verdicts.judge_wer(per_clip, base, variant, max_wer_increase)
        return (self.verdict(drop, max_dnsmos_drop, False, f"`{variant}` DNSMOS drop", budget=budget) + "; "
                + self._said(rise, max_wer_increase, "pooled WER rise", budget))

    def line(self, text: str) -> None:
        """One finding; an empty text (e.g. a join over nothing) adds none."""
        if text.strip():
            self.lines.append(text)

    def markdown(self) -> str:
        return "## What we found\n" + "\n".join(f"- {t}" for t in self.lines)

    def doublings(self, slopes: pd.DataFrame, metric: str, label: str) -> str:
        """One finding from a ledger's last-doubling table (run, hours, `metric`, `<metric>_last_doubling`,
        `<metric>_next_doubling`): each run's latest `metric` at its machine-hours, what its last doubling of
        machine-hours changed, and that change carried to the next doubling, a log-linear guess; '' for no run."""
        n, parts = self.number, []
        for r in slopes.to_dict("records"):
            change = r[f"{metric}_last_doubling"]
            parts.append(f"`{r['run']}` {n(r[metric], '.3f')} at {n(r['hours'])} machine-hours" + (
                f", {n(change, '+.3f')} over its last doubling (the next, a log-linear guess: "
                f"{n(r[f'{metric}_next_doubling'], '.3f')})" if np.isfinite(change) else ", no row at half its hours"))
        return f"Long runs' {label} (`outputs/recorded/training_ledger.csv`): {'; '.join(parts)}." if parts else ""

    def show(self) -> None:
        from IPython.display import Markdown, display
        display(Markdown(self.markdown()), metadata={METADATA_KEY: {"numbers": self.numbers}})


def _canon(text: str) -> str:
    return text.replace(",", "").replace("−", "-").lstrip("+")


def numbers_in(text: str) -> list[float]:
    """Every whole number in `text` (a cited file), read once."""
    return [float(_canon(m.group())) for m in NUMBER.finditer(text)]


def held(n: str, values: list[float]) -> bool:
    """Whether a cited file's numbers (`numbers_in`) hold the number `n` whole: one that rounds to `n` at `n`'s
    decimals (0.311 is held by 0.31123; 8 by neither 18 nor 0.8)."""
    want = float(_canon(n))
    places = len(n.split(".")[1]) if "." in n and "e" not in n.lower() else 0
    return any(abs(round(x, places) - want) < 0.5 * 10.0 ** -(places + 3) for x in values)


def unbacked(markdown: str, rendered: list[str], root: Path) -> list[str]:
    """Numbers in `markdown` that were not rendered from results and that no recorded file cited on the same line
    holds (`held`; a pointer such as 'notebook 02' or 'section 2' is no claim); each as 'number (line)'."""
    have = {_canon(n) for n in rendered}
    out = []
    for line in markdown.splitlines():
        files = [root / c for c in CITED.findall(line)]
        cited = [numbers_in(f.read_text(errors="ignore")) for f in files if f.is_file()]
        for m in NUMBER.finditer(REFERENCE.sub("", line)):
            n = _canon(m.group())
            if n in have or any(held(m.group(), values) for values in cited):
                continue
            out.append(f"{m.group()} ({line.strip()[:80]})")
    return out


def findings_outputs(notebook: dict) -> list[tuple[str, list[str]]]:
    """(markdown, rendered numbers) of every findings output of an executed notebook (nbformat JSON)."""
    out = []
    for cell in notebook.get("cells", []):
        for o in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            meta = o.get("metadata", {}).get(METADATA_KEY)
            if meta is not None:
                md = o.get("data", {}).get("text/markdown", "")
                out.append(("".join(md) if isinstance(md, list) else md, list(meta.get("numbers", []))))
    return out
