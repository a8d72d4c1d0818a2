"""Verdicts as records (issue 70 item 2): a notebook's verdicts travel as typed rows in verdicts.json, written with
its results and read back whole, and the verdict functions give the same outcome as data that their lines give in
words."""
import json

import numpy as np
import pandas as pd
import pytest

from lib.core import results, verdict
from lib.core.verdict import Verdict


def test_a_verdict_knows_its_outcomes_and_says_its_n():
    assert Verdict("LoRA target", "undecided", "s", "lora-r8", n=40).word == "undecided at n = 40"
    assert Verdict("LoRA target", "met", "s", n=40).word == "met"
    with pytest.raises(ValueError, match="outcome 'tied' is not one of"):
        Verdict("speed target", "tied", "s")
    v = Verdict("x", "missed", "s", margin=float("nan"), lo=np.float64(-0.5), hi=np.float64(0.1), n=np.int64(12))
    assert v.margin is None and v.lo == -0.5 and isinstance(v.n, int)  # JSON has no NaN nor numpy types
    assert [verdict.outcome_of(w) for w in ("met", "MISSED", "undecided at n = 12", "not judged")] == [
        "met", "missed", "undecided", "missed"]


def test_the_writer_writes_them_beside_the_results_and_they_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    w = results.ResultWriter("p", "03_pruning_quantization")
    w.verdicts = [Verdict("speed target", "met", "speed target met by `int8`", "int8", n=52, margin=0.3),
                  Verdict("size target", "undecided", "size target undecided", "w8", n=12, margin=0.1, lo=-0.02,
                          hi=0.2)]
    folder = w.write()
    assert verdict.read(folder) == w.verdicts
    empty = results.ResultWriter("p", "06_listening_test").write()  # a notebook that judges no target says so
    assert json.loads((empty / verdict.FILE).read_text()) == [] and verdict.read(empty) == []
    assert verdict.read(tmp_path / "nowhere") == []


def test_a_bad_file_is_named_with_its_entry(tmp_path):
    (tmp_path / verdict.FILE).write_text(json.dumps([{"target": "t", "outcome": "met", "sentence": "s"},
                                                     {"target": "t", "outcome": "maybe", "sentence": "s"}]))
    with pytest.raises(ValueError, match=r"verdicts.json: entry 1: verdict 't': outcome 'maybe'"):
        verdict.read(tmp_path)
    (tmp_path / verdict.FILE).write_text(json.dumps([{"target": "t", "outcome": "met", "sentence": "s", "x": 1}]))
    with pytest.raises(ValueError, match=r"entry 0 is not a verdict \(unknown keys \['x'\]\)"):
        verdict.read(tmp_path)
    (tmp_path / verdict.FILE).write_text("{}")
    with pytest.raises(ValueError, match="expected a list of verdicts"):
        verdict.read(tmp_path)


def test_the_targets_records_say_what_their_lines_say():
    """targets(): one record per goal, its outcome the line's word, its subject the variant the line names, its
    margin how far inside the target's ratio; `label` names the 5x voice's targets apart."""
    from lib.report import verdicts
    table = pd.DataFrame({"variant": ["fast", "small", "slow"], "rtf_ratio": [0.3, 0.9, 1.2],
                          "size_ratio": [1.0, 0.5, 1.0], "dnsmos_drop": [0.01, 0.3, 0.0],
                          "wer_increase": [0.0, 0.0, 0.0], "within_quality_bounds": [True, False, True]})
    out = verdicts.targets(table, speed_ratio=0.5, size_ratio=0.6, max_dnsmos_drop=0.1, max_wer_increase=0.02)
    recs = out["verdicts"]
    assert [(r.target, r.outcome, r.subject) for r in recs] == [("speed target", "met", "fast"),
                                                                 ("size target", "missed", "small")]
    assert recs[0].margin == pytest.approx(0.2) and recs[1].margin == pytest.approx(0.1)
    assert [r.sentence for r in recs] == [line.replace("**", "") for line in out["lines"]]
    labelled = verdicts.targets(table, speed_ratio=0.2, size_ratio=0.6, max_dnsmos_drop=0.1, max_wer_increase=0.02,
                                label="5x voice: ")["verdicts"]
    assert [(r.target, r.outcome) for r in labelled] == [("5x voice: speed target", "missed"),
                                                         ("5x voice: size target", "missed")]
