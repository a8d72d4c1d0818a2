"""The train/held-out gap of packed students (lib.studies.overfit, issue 49): its two sets of sentences are disjoint
and the held-out one touches no list any long run trained on, its list-31 clips are the ledger's own draws, and the
summary's gaps are signed so that positive is worse on held-out, for a loss and for a judge alike."""
import numpy as np
import pandas as pd
import pytest

from lib.jobs.run_state import CORPUS_LISTS, FRONTEND_LISTS, LONG_RUN_NOISE, heldout_latents
from lib.studies import overfit


def _list(sentence_id: str) -> int:
    return int(sentence_id[1:3])


def test_the_held_out_sentences_touch_no_training_list_and_the_splits_are_disjoint():
    train, held = overfit.training_sentences(), overfit.heldout_sentences()
    assert len(train) == len(held) == 20
    assert len({s.id for s in train}) == 20 and len({s.id for s in held}) == 20
    assert not {s.id for s in train} & {s.id for s in held}
    assert {_list(s.id) for s in train} == set(CORPUS_LISTS) and all(s.id.endswith("_01") for s in train)
    assert not {_list(s.id) for s in held} & (set(CORPUS_LISTS) | set(FRONTEND_LISTS)), "held out from every run"
    assert [s.id for s in held[:10]] == [f"h31_{j:02d}" for j in range(1, 11)], "list 31 first: the ledger's draws"
    assert [s.id for s in held[10:]] == [f"h{li:02d}_01" for li in range(1, 11)]


def test_a_corpus_trains_on_its_own_harvard_sentences_in_its_order(tmp_path):
    """With a teacher corpus, the training split is the first twenty of the corpus's Harvard sentences in the
    corpus's order (the same family as the held-out split), none of them held out."""
    from lib.data import corpus_text
    from lib.jobs import corpus_job
    corpus_job.write(corpus_job.CorpusRun(out=str(tmp_path / "c"), templated=10, seconds=1e-9))  # its text alone
    split = overfit.split_sentences(str(tmp_path / "c"))
    order = [c.sentence.id for c in corpus_text.corpus_sentences(49, 10) if c.family is corpus_text.Family.HARVARD]
    assert [s.id for s in split["train"]] == order[:20]
    assert not {s.id for s in split["train"]} & {s.id for s in split["heldout"]}


def test_the_held_out_clips_of_list_31_are_the_ledgers():
    """The held-out split drawn from the ledger's seed gives the ledger's own teacher latents on list 31."""
    from lib.voices import teacher_bundle
    teacher = teacher_bundle.teacher()
    held = overfit.heldout_sentences()[:2]
    mine = overfit.decoder_latents(teacher, held, LONG_RUN_NOISE)
    _, ledger = heldout_latents(teacher, LONG_RUN_NOISE, 2)
    assert mine.ids == ledger.ids
    for a, b in zip(mine.z + mine.wav, ledger.z + ledger.wav):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-6


def _frame(values: dict) -> pd.DataFrame:
    """A per-sentence frame: {(metric, split): (values, teacher values)} of one pack."""
    rows = [{"pack": "w/p", "kind": "decoder", "split": split, "id": f"s{k}", "metric": metric, "value": v,
             "teacher": t}
            for (metric, split), (vals, teach) in values.items() for k, (v, t) in enumerate(zip(vals, teach))]
    return pd.DataFrame(rows, columns=overfit.COLUMNS)


def test_the_summary_signs_each_gap_so_that_positive_is_worse_on_held_out():
    frame = _frame({("mel_l1", "train"): ([0.20, 0.22], [0, 0]), ("mel_l1", "heldout"): ([0.25, 0.27, 0.26], [0, 0, 0]),
                    ("dnsmos_sig", "train"): ([3.4, 3.2], [3.5, 3.5]),
                    ("dnsmos_sig", "heldout"): ([3.0, 3.2], [3.4, 3.4])})
    table = overfit.summary(frame).set_index("metric")
    assert list(overfit.summary(frame).columns) == overfit.SUMMARY_COLUMNS
    mel, sig = table.loc["mel_l1"], table.loc["dnsmos_sig"]
    assert (mel["n_train"], mel["n_heldout"]) == (2, 3)
    assert mel["train"] == pytest.approx(0.21) and mel["heldout"] == pytest.approx(0.26)
    assert mel["gap"] == pytest.approx(0.05) and mel["gap_pct"] == pytest.approx(100 * 0.05 / 0.26)
    assert mel["gap_vs_teacher"] == pytest.approx(0.05), "the teacher's mel L1 to itself is 0"
    assert mel["gap_se"] == pytest.approx(np.sqrt(0.0002 / 2 + 0.0001 / 3))
    assert sig["gap"] == pytest.approx(0.2), "a judge: train minus held-out"
    assert sig["gap_pct"] == pytest.approx(100 * 0.2 / 3.1)
    # behind the teacher by 0.2 on train and 0.3 on held-out: 0.1 of the 0.2 is the held-out text being harder
    assert sig["gap_vs_teacher"] == pytest.approx(0.1)
    assert (sig["teacher_train"], sig["teacher_heldout"]) == pytest.approx((3.5, 3.4))


def test_a_student_as_good_on_held_out_as_on_train_has_no_gap():
    frame = _frame({("distillmos", "train"): ([3.0, 3.5], [3.9, 3.9]),
                    ("distillmos", "heldout"): ([3.5, 3.0], [3.9, 3.9])})
    row = overfit.summary(frame).iloc[0]
    assert row["gap"] == pytest.approx(0.0) and row["gap_vs_teacher"] == pytest.approx(0.0)
