"""The varied text (lib.data.varied_text) and the second judged set's verdict (verdicts.quality_bounds with
`varied`): the same sentences on every call, two families that share none, and bounds that hold only where they
hold on both sets."""
import datetime
import re

import faker.providers.date_time
import numpy as np
import pandas as pd
import pytest

from lib.core.text import Sentence, check_speakable
from lib.data import prose_text, varied_text
from lib.report import verdicts


def test_the_families_are_fixed_distinct_speakable_and_varied():
    train = varied_text.varied_sentences(varied_text.Family.TRAIN, 300)
    judged = varied_text.varied_sentences(varied_text.Family.JUDGED, 120)
    assert train[:5] == varied_text.varied_sentences(varied_text.Family.TRAIN, 5)  # a prefix: the same draws
    assert [s.id for s in judged[:2]] == ["vj_0001", "vj_0002"] and train[0].id == "vt_0001"
    assert train[0].text == ("Mr. Bryan Kramer III drove from South Jose to Johnsonton on Monday, August 23, 1974, "
                             "and arrived a little after 11:26 PM.")  # the pinned Faker, seed and latest day
    assert judged[0].text.startswith("On November 4, 2002, Tammy Maldonado signed a contract with Davis Group")
    assert len({s.text for s in train}) == 300 and len({s.text for s in judged}) == 120
    assert not {s.text for s in train} & {s.text for s in judged}  # no judged sentence is ever trained on
    assert all(check_speakable(s.text) == s.text for s in train + judged)
    words = [len(s.text.split()) for s in judged]
    assert np.mean(words) > 14 and max(words) >= 20  # longer than a Harvard sentence (about 8 words)
    assert sum(any(ch.isdigit() for ch in s.text) for s in judged) > 90  # numbers, prices, years, times
    assert varied_text.varied_sentences(varied_text.Family.JUDGED, 0) == []
    with pytest.raises(ValueError, match="n=-1"):
        varied_text.varied_sentences(varied_text.Family.JUDGED, -1)


def test_the_sentences_do_not_depend_on_the_day_they_are_drawn(monkeypatch):
    """Faker's dates and times run up to "now" unless given an end: a CI run a minute later must not see other text."""
    today = {f: varied_text.varied_sentences(f, 40) for f in varied_text.Family}

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime.datetime(2031, 6, 1, 12, 0, tzinfo=tz)

    monkeypatch.setattr(faker.providers.date_time, "datetime", Later)
    assert {f: varied_text.varied_sentences(f, 40) for f in varied_text.Family} == today


def _clips(base: dict, variant: dict, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per-clip scores of `base` and `v` around the given means, a little spread."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, means in (("base", base), ("v", variant)):
        for i in range(n):
            rows.append({"id": f"s{i}", "variant": name,
                         "dnsmos_p808": means["dnsmos_p808"] + 0.01 * rng.standard_normal(),
                         "wer": max(0.0, means["wer"] + 0.005 * rng.standard_normal())})
    return pd.DataFrame(rows)


def test_a_bound_holds_only_where_it_holds_on_both_judged_sets():
    harvard = _clips({"dnsmos_p808": 3.9, "wer": 0.05}, {"dnsmos_p808": 3.88, "wer": 0.05})
    varied_bad = _clips({"dnsmos_p808": 3.9, "wer": 0.09}, {"dnsmos_p808": 3.88, "wer": 0.15}, seed=1)
    varied_good = _clips({"dnsmos_p808": 3.9, "wer": 0.09}, {"dnsmos_p808": 3.88, "wer": 0.09}, seed=2)
    alone = verdicts.quality_bounds(harvard, "base", ["v"], 0.10, 0.02)
    assert bool(alone["within_quality_bounds"].iloc[0]) and "wer_rise_varied_judged" not in alone
    both_bad = verdicts.quality_bounds(harvard, "base", ["v"], 0.10, 0.02, varied=varied_bad)
    assert not both_bad["within_quality_bounds"].iloc[0] and both_bad["bounds"].iloc[0] == "missed"
    assert both_bad["wer_rise_varied_judged"].iloc[0]["word"] == "missed"
    assert bool(verdicts.quality_bounds(harvard, "base", ["v"], 0.10, 0.02,
                                        varied=varied_good)["within_quality_bounds"].iloc[0])
    unjudged = verdicts.quality_bounds(harvard, "base", ["v"], 0.10, 0.02,
                                       varied=varied_good[varied_good["variant"] == "base"])
    assert not unjudged["within_quality_bounds"].iloc[0]  # not shown to hold on the varied text: not within
    note = verdicts.varied_note(both_bad, "v")
    assert note.startswith(" On the varied text (n = 20): WER increase +0.0") and "(missed)" in note
    assert (verdicts.varied_note(alone, "v") == ""
            and verdicts.varied_note(unjudged, "v") == " Not judged on the varied text.")
    prose = varied_text.Family.PROSE.title  # a set that names itself is named in the verdict
    named = verdicts.quality_bounds(harvard, "base", ["v"], 0.10, 0.02, varied=varied_bad.assign(judged_set=prose))
    assert verdicts.varied_note(named, "v").startswith(f" On {prose} (n = 20): WER increase +0.0")
    assert len({f.title for f in varied_text.Family}) == len(varied_text.Family)


def test_real_prose_is_fixed_held_out_plain_and_varied():
    """The PROSE family: real sentences of the CIA World Factbook, the same on every machine (the pinned wheel, a
    fixed shuffle), none a template's, plain enough to speak, of 8 to 30 words, acronyms kept and the Factbook's
    capitalised surnames left out; a count beyond what there is says so."""
    prose = varied_text.varied_sentences(varied_text.Family.PROSE, 150)
    assert prose[0] == Sentence("vp_0001", "Approximately 6.7 million Syrians were internally displaced as of 2022, "
                                           "and 14.6 million people were in need of humanitarian assistance "
                                           "across the country.")
    assert len({s.text for s in prose}) == 150 and all(check_speakable(s.text) == s.text for s in prose)
    assert all(8 <= len(s.text.split()) <= 30 and not re.search(r"<|&", s.text) for s in prose)
    caps = {w for s in prose for w in re.findall(r"\b[A-Z]{2,}\b", s.text)}
    assert caps and caps <= {"US", "UK", "EU", "UN", "NATO", "USSR", "II"}, caps  # no KENYATTA
    templates = (varied_text.varied_sentences(varied_text.Family.TRAIN, 300)
                 + varied_text.varied_sentences(varied_text.Family.JUDGED, 120))
    assert not {s.text for s in prose} & {s.text for s in templates}
    assert sum(any(ch.isdigit() for ch in s.text) for s in prose) > 50  # years, counts, centuries
    assert [s.text for s in prose] != list(prose_text._pool()[:150]), "shuffled: not one region's histories in order"
    with pytest.raises(ValueError, match="n=100000"):
        varied_text.varied_sentences(varied_text.Family.PROSE, 100000)


def test_judging_refuses_the_front_ends_training_text():
    from lib.harness import evaluate
    with pytest.raises(ValueError, match="varied_family='TRAIN'.*'JUDGED', 'PROSE'"):
        evaluate.judge_varied([], [], 2, None, None, settings={}, threads=1, family="TRAIN")
