"""The adaptation ladder's targets (issue 68): rungs named from their spec, a WORLD-shifted teacher folder whose F0
moved by what was asked, and a Kokoro blend whose style is the two speakers' mean."""
import json

import numpy as np
import pandas as pd
import pytest

from lib.core import text
from lib.harness import metrics
from lib.jobs import speaker_ladder as ladder


def test_every_rung_has_its_own_name_and_a_name_finds_it():
    names = [r.name for r in ladder.LADDER]
    assert names == ["teacher", "teacher+4st", "teacher+8st", "teacher+12st", "jm_kumo", "jm_kumo~jf_alpha",
                     "jf_alpha"]
    assert all(ladder.rung(n) is r for n, r in zip(names, ladder.LADDER))
    with pytest.raises(ValueError, match="teacher\\+8st"):  # the error lists the rungs there are
        ladder.rung("teacher+7st")
    with pytest.raises(ValueError, match="not both"):
        ladder.Rung(("jm_kumo",), semitones=4)


def test_a_shifted_teacher_folder_moves_its_f0_by_what_was_asked(tmp_path):
    """Two sentences, the teacher and the teacher +8 semitones by WORLD: the folder's F0 (pYIN, in Hz) sits within a
    semitone of +8 from the teacher's, its distance file says so, and its speaker stays close to the teacher's."""
    sentences = text.harvard_sentences([11])[:2]
    teacher = ladder.make_folder(ladder.Rung(), sentences, tmp_path / "teacher", threads=1)
    shifted = ladder.make_folder(ladder.rung("teacher+8st"), sentences, tmp_path / "up8", threads=1)
    d = ladder.distance(shifted, teacher)
    assert abs(d["f0_semitones"] - 8) < 1, d
    assert d["f0_hz"] > d["teacher_f0_hz"] * 2 ** (7 / 12)
    assert json.loads((shifted / ladder.DISTANCE).read_text())["clips"] == 2
    import soundfile as sf
    for s in sentences:  # a raised pitch keeps the source's peak: nothing clips
        mine, theirs = (sf.read(str(f / "wavs" / f"{s.id}.wav"))[0] for f in (shifted, teacher))
        assert np.abs(mine).max() <= np.abs(theirs).max() + 1e-3
    same = ladder.distance(teacher, teacher)
    assert abs(same["f0_semitones"]) < 0.1 and same["secs_to_teacher"] > d["secs_to_teacher"] - 0.3
    # a folder is kept once written: asked again it is not touched; asked for other sentences it is refused, whole
    before = (shifted / "metadata.csv").stat().st_mtime_ns
    assert ladder.make_folder(ladder.rung("teacher+8st"), sentences, shifted, threads=1) == shifted
    from lib.data import ljspeech
    for rung in ("teacher", "teacher+8st"):
        with pytest.raises(ljspeech.DatasetError, match="already holds 2 other recordings"):
            ladder.make_folder(ladder.rung(rung), text.harvard_sentences([12])[:2], shifted, threads=1)
    assert (shifted / "metadata.csv").stat().st_mtime_ns == before and len(list((shifted / "wavs").iterdir())) == 2


def test_a_kokoro_blend_speaks_with_the_mean_of_the_two_styles():
    from lib.voices import synth
    one, other = synth.KokoroOnnxVoice(speaker="jm_kumo"), synth.KokoroOnnxVoice(speaker="jf_alpha")
    both = ladder.rung("jm_kumo~jf_alpha").voice(threads=1)
    style = lambda v: np.asarray(v.engine.style)
    assert np.allclose(style(both), (style(one) + style(other)) / 2)
    with pytest.raises(ValueError, match="unknown Kokoro speaker"):
        synth.KokoroOnnxVoice(speaker="jm_kumo", blend="nobody")


def test_a_judged_ladder_row_says_the_word_excess_and_the_share_of_the_way_to_the_rung(tmp_path):
    """ladder_judge.summary on made-up clips: a pack that loses one word in 40 sentences against the rung's own clips
    is within the word bound, decided; its SECS half the way from the teacher to the rung plus a margin is met, and F0
    is given in Hz for the pack, the teacher and the rung. A pack adapted to a folder that is no rung is named."""
    from lib.studies import ladder_judge as lj
    sentences = text.harvard_sentences([32, 33, 34, 35])
    rng = np.random.default_rng(0)
    rows = []
    for v, secs, f0 in ((lj.OWN, 0.80, 150.0), (lj.TEACHER, 0.60, 93.0), ("p/full", 0.75, 140.0)):
        for k, s in enumerate(sentences):
            heard = s.text if not (v == "p/full" and k == 3) else "xylophone " + " ".join(s.text.split()[1:])
            rows.append({"rung": "teacher+8st", "variant": v, "id": s.id, "text": s.text, "asr_hyp": heard,
                         "wer": metrics.wer_cer(s.text, heard)["wer"], "secs": secs + rng.normal(0, 0.01),
                         "f0_hz": f0})
    pack = tmp_path / "p" / "full"
    pack.mkdir(parents=True)
    (pack / "config.json").write_text(json.dumps({"method": "full-acoustic", "steps": 2000, "hours": 0.3,
                                                  "data": "50 recordings of the folder teacher+8st",
                                                  "run": {"dataset": "~/.cache/tts-lab/ladder/teacher+8st"}}))
    assert lj.pack_rung(pack).name == "teacher+8st"
    row = lj.summary(pd.DataFrame(rows), {"p/full": pack}).iloc[0]
    assert row["n"] == 40 and row["wer_verdict"] == "met" and row["transcripts_changed"] == 1
    assert row["clips"] == 50  # the data arm's training recordings, as its card says
    assert 0 < row["wer_excess"] < 0.01 and row["wer_excess_hi"] < lj.WER_MARGIN
    assert row["secs_share"] == pytest.approx(0.75, abs=0.05) and row["secs_verdict"] == "met"
    assert (row["f0_hz"], row["f0_teacher_hz"], row["f0_own_hz"]) == pytest.approx((140.0, 93.0, 150.0))
    # a pack that could not be loaded (recorded without its weights) is a row that says so, beside the judged ones
    lost = tmp_path / "p" / "lost"
    lost.mkdir()
    (lost / "config.json").write_text(json.dumps({"method": "full-acoustic", "steps": 9}))
    rows = lj.summary(pd.DataFrame(rows), {"p/full": pack, "p/lost": lost}).set_index("pack")
    assert rows.loc["p/lost", "wer_verdict"] == "not judged" and rows.loc["p/full", "wer_verdict"] == "met"
    (pack / "config.json").write_text(json.dumps({"run": {"dataset": "/data/my-speaker"}}))
    with pytest.raises(ValueError, match="adapted to 'my-speaker', which is not a rung"):
        lj.pack_rung(pack)


def test_the_ladder_is_drawn_nearest_rung_first_with_its_intervals_and_verdicts(tmp_path):
    from lib.report import ladder as drawn
    judged = pd.DataFrame({"rung": ["jm_kumo", "teacher+8st"], "method": "full-acoustic", "steps": 1500,
                           "machine_hours": 0.2, "n": 40, "wer_excess": [0.1, -0.01], "wer_excess_lo": [0.04, -0.07],
                           "wer_excess_hi": [0.16, np.nan], "wer_verdict": ["undecided", "met"],
                           "secs_share": [0.6, 0.4], "secs_verdict": ["met", "undecided"], "f0_hz": [95.0, 101.0],
                           "f0_own_hz": [92.0, 149.0]})
    distances = pd.DataFrame({"rung": ["teacher+8st", "jm_kumo"], "secs_to_teacher": [0.737, 0.552],
                              "f0_semitones": [8.0, -0.2]})
    f = drawn.frame(judged, distances)
    t = drawn.table(f)
    assert list(t["rung"]) == ["teacher+8st", "jm_kumo"]
    assert list(t["WER excess [95 % CI]"]) == ["-0.010", "+0.100 [+0.040, +0.160]"]
    assert list(t["F0 Hz (pack / rung)"]) == ["101 / 149", "95 / 92"]
    assert t["clips"].isna().all()  # a record from before the data arm says no count
    lines = drawn.reach_lines(f.assign(wer_excess_lo=[-0.07, 0.04], wer_excess_hi=[0.04, 0.16],
                                       f0_hz=[101.0, 95.0], f0_own_hz=[149.0, 92.0], secs_share=[0.4, 0.6]),
                              lambda x, fmt=".2f": format(x, fmt))
    assert lines == ["`full-acoustic` keeps its words up to `teacher+8st` (SECS 0.74 to the teacher) and not at "
                     "`jm_kumo` (SECS 0.55): WER excess +0.100 [+0.040, +0.160] over the rung's own clips at n = 40, "
                     "undecided, its F0 95 Hz where the rung's is 92 Hz."]
    drawn.plot(f, 0.05, tmp_path / "ladder.png")
    assert (tmp_path / "ladder.png").stat().st_size > 1000
