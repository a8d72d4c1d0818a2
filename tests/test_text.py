import re

import pytest

from lib.core import text


def test_harvard_lists_and_ids():
    all_ = text.harvard_sentences()
    assert len(all_) == 720
    two = text.harvard_sentences([1, 72])
    assert [s.id for s in two][:2] == ["h01_01", "h01_02"]
    assert two[0].text == "The birch canoe slid on the smooth planks."
    assert two[-1].id == "h72_10" and two[-1].text == all_[-1].text
    assert len({s.text for s in all_}) > 700


@pytest.mark.parametrize("bad", [0, 73, "3"])
def test_harvard_bad_list_is_named(bad):
    with pytest.raises(ValueError, match=repr(bad).replace("'", ".")):
        text.harvard_sentences([bad])


def test_normalize_for_wer_as_whisper_does():
    n = text.normalize_for_wer
    assert n("The girl sold 50 bonds!") == n("the girl sold fifty bonds") == "the girl sold 50 bonds"
    assert n("It's worth eight dollars.") == n("It's worth $8.")
    assert n("Eighteen hundred") == n("1800")
    assert n("twenty-one") == n("21")
    assert n("  It's  a well-known FACT, isn't it?") == "it is a well known fact is not it"
    assert n("The birch canoe") != n("The birch canoes"), "a real word error still counts"


@pytest.mark.parametrize("bad,why", [("", "empty"), ("   \n\t", "empty"), ("?!... --", "nothing speakable"),
                                     ("Привет мир", "non-Latin script .*CYRILLIC"), ("東京へ行く", "non-Latin")])
def test_unspeakable_text_is_rejected_with_reason(bad, why):
    with pytest.raises(text.TextError, match=why):
        text.check_speakable(bad)


def test_latin_with_accents_is_speakable():
    assert text.check_speakable("  Café déjà vu. ") == "Café déjà vu."


def test_split_long_paragraph():
    para = (("The hogs were fed chopped corn and garbage, " * 120) + "and then. "
            + "Rice is often served in round bowls. " * 20)
    assert len(para) > 5000
    pieces = text.split_sentences(para, max_chars=300)
    assert all(0 < len(p) <= 300 for p in pieces)
    assert " ".join(pieces).split() == para.split()


def test_split_keeps_sentences():
    assert text.split_sentences("One two. Three four? Five!") == ["One two.", "Three four?", "Five!"]
    with pytest.raises(ValueError, match="max_chars"):
        text.split_sentences("x", max_chars=5)


@pytest.mark.parametrize("bad,char,pos", [("\x00\x01\x02 control characters \x07", "U+0000", 0),
                                          ("a C1 control \x9b here", "U+009B", 13),
                                          ("lone \ud800 surrogate", "U+D800", 5),
                                          ("private \ue000 use", "U+E000", 8),
                                          ("bell in the middle\x07", "U+0007", 18)])
def test_unprintable_characters_are_named_with_their_position(bad, char, pos):
    with pytest.raises(text.TextError, match=re.escape(char) + f".*position {pos}\\b"):
        text.check_speakable(bad)


def test_invisible_and_space_like_characters_are_cleaned():
    assert text.clean_text("zero\u200dwidth\u200b join\ufeff") == "zerowidth join"
    assert text.clean_text("\u202eright\u202c to\u200f left") == "right to left"
    assert text.clean_text("line\nbreak\tand\u00a0nbsp\u2028") == "line break and nbsp "
    assert text.clean_text("soft\u00adhyphen") == "softhyphen"


def test_input_longer_than_the_cap_is_refused():
    with pytest.raises(text.TextError, match="100,000 characters.*max_input_chars"):
        text.check_speakable("word " * 20_000)
    assert text.check_speakable("word " * 10, max_input_chars=60) == ("word " * 10).strip()
