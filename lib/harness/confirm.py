"""Screen, then confirm (issue 67): every variant is screened on a profile's few sentences; the ones a verdict could
name go on, best first, to a confirmation set of sentences the screen did not judge (more Harvard sentences, and
real prose), where their bounds are decided. At 12 sentences one misheard word decides a WER bound; at 140 it does
not. Only the candidates are confirmed, so a profile keeps its hour."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import pandas as pd

from lib.core import bounds
from lib.core.results import ResultWriter
from lib.core.text import Sentence
from lib.harness.evaluate import CONFIRM, Variant, judge_set, judge_varied
from lib.harness.judges import Judges

_LOGGER = logging.getLogger(__name__)


@dataclass
class Confirmed:
    """What the confirmation judged: its per-clip tables (`clips`, the Harvard sentences; `varied`, the prose; empty
    where none was judged), the verdicts decided (`judged`, bounds.decide's table for every screened variant) and
    the variants judged, in the order tried."""
    clips: pd.DataFrame
    varied: pd.DataFrame
    judged: pd.DataFrame
    tried: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Objective:
    """What one verdict ranks by: a column of the rows where lower is better against the base (rtf_ratio,
    size_ratio), among the variants `among` (None: all), e.g. the 5x voices for the 5x target."""
    column: str
    among: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return self.column + (f" among {len(self.among)}" if self.among is not None else "")


def candidates(screen: pd.DataFrame, rows: pd.DataFrame, base: str,
               objectives: Sequence[Objective]) -> dict[Objective, list[str]]:
    """Per objective, the variants the screen did not find outside the bounds (`screen`: quality_bounds' table)
    that beat the base on its column, best first."""
    open_ = set(screen.loc[screen["bounds"] != "missed", "variant"]) - {base}
    out = {}
    for o in objectives:
        pool = open_ if o.among is None else open_ & set(o.among)
        if o.column in rows:
            better = rows[rows["variant"].isin(pool) & (rows[o.column] < 1.0)].sort_values(o.column)
            out[o] = list(dict.fromkeys(better["variant"]))
    return out


def confirm(variants: Sequence[Variant], per_clip: pd.DataFrame, rows: pd.DataFrame, base: str,
            objectives: Sequence[Objective], sentences: Sequence[Sentence], prose: int, judges: Judges,
            writer: ResultWriter, *, settings: dict, threads: int, max_dnsmos_drop: float = bounds.MAX_DNSMOS_DROP,
            max_wer_increase: float = bounds.MAX_WER_INCREASE, tries: int = 3, family: str = "PROSE") -> Confirmed:
    """Screen `per_clip`, then judge the base and, per objective, the candidates best first on `sentences` (none the
    screen judged) and the first `prose` sentences of a held-out varied family (`family`: real prose by default),
    noise off, until one is met there or `tries` have gone on: the best that can be named is confirmed, and the
    confirmation decides each one it judged."""
    names = list(rows["variant"])
    screen = bounds.quality_bounds(per_clip, base, names, max_dnsmos_drop, max_wer_increase)
    order = candidates(screen, rows, base, objectives)
    title = f"{len(sentences)} more Harvard sentences"
    clips, varied, tried = [], [], []

    def judged_now(among: Sequence[str]) -> pd.DataFrame:
        c = pd.concat(clips, ignore_index=True) if clips else None
        vs = pd.concat(varied, ignore_index=True) if varied and prose else None
        return bounds.decide(per_clip, base, list(among), max_dnsmos_drop, max_wer_increase, confirmed=c, varied=vs)

    def judge(name: str) -> None:
        clips.append(judge_set(variants, [name], sentences, judges, writer, settings=settings, threads=threads,
                               suffix=CONFIRM, title=title))
        if prose:
            varied.append(judge_varied(variants, [name], prose, judges, writer, settings=settings, threads=threads,
                                       family=family))
        tried.append(name)

    if sentences and any(order.values()):
        judge(base)
        for objective, ranked in order.items():
            for name in ranked[:tries]:
                if name not in tried:
                    _LOGGER.info("confirming %s (best by %s of those the screen left open)", name, objective.name)
                    judge(name)
                if judged_now([name]).set_index("variant").loc[name, "bounds"] == "met":  # this one alone
                    break
    empty = pd.DataFrame(columns=["id", "variant", "dnsmos_p808", "wer", "judged_set"])
    return Confirmed(pd.concat(clips, ignore_index=True) if clips else empty,
                     pd.concat(varied, ignore_index=True) if varied else empty, judged_now(names), tried)


def resolution(per_clip: pd.DataFrame, confirmed: Confirmed, base: str, variants: Sequence[str],
               max_dnsmos_drop: float = bounds.MAX_DNSMOS_DROP,
               max_wer_increase: float = bounds.MAX_WER_INCREASE) -> pd.DataFrame:
    """What the screen and the confirmation can each decide (bounds.resolution, one row per set and bound): the
    per-sentence SD each measured and the largest true change its n calls met."""
    sets = (("screen", per_clip, variants), ("confirmation", confirmed.clips, confirmed.tried))
    return pd.concat([bounds.resolution(c, base, list(vs), max_dnsmos_drop, max_wer_increase).assign(judged_set=name)
                      for name, c, vs in sets if len(c)], ignore_index=True)
