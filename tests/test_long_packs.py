"""Notebook 05 uses the long CPU runs' packs too (issue 39, item 6): it times the long packs' voices under the names
notebook 04 judges them by, and names a student it cannot make."""
import re

import pytest

from lib.core import params
from lib.core.results import ResultWriter
from lib.studies import distillation, hardware
from lib.techniques import distill
from lib.voices import piper_torch, synth as voices
from lib.voices.istft_decoder import FrameRateDecoder


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


def test_notebook_05_times_the_long_packs_voices_by_notebook_04s_names(teacher, tmp_path):
    """The long whole voices notebook 05's default parameters name load from the committed packs, under names that
    notebook 04 judges on `default`, with their long decoders and front end; a student of notebook 04 not saved on
    the profile is an absent row that says so. The cold start reads the folder notebook 04 exported a voice to."""
    p = params.resolved("default", hardware.NOTEBOOK)
    writer = ResultWriter("default", hardware.NOTEBOOK)
    students = hardware.load_students(p["students"], teacher, tmp_path / "students", p["long_runs"], writer, model="m",
                                      profile="default")
    by_name = {s.name: s for s in students}
    five, hifi = "istft192x6-regress+flow96-long+fe96-long@cpu-long", "dec128-regress+flow96-long+fe96-long@cpu-long"
    assert {five, hifi} <= set(p["students"]) and set(by_name) == {five, hifi}
    assert by_name[five].folder == "istft192x6-regress+flow96-long+fe96-long_at_cpu-long"
    assert isinstance(by_name[five].voice.dec, FrameRateDecoder) and not by_name[five].voice.use_sdp
    assert distill.decoder_width(by_name[hifi].voice.dec) == 128 and not by_name[hifi].voice.use_sdp
    absent = writer.frame().drop_duplicates("variant").set_index("variant")
    assert set(absent.index) == set(p["students"]) - {five, hifi} and (absent["status"] == "absent").all()
    assert absent["reason"].str.contains("notebook 04 on profile 'default' saves it").all()
    # the names are those notebook 04 gives the same packs on `default` (beside its own run's flow and front end)
    mine = params.resolved("default", "04_distillation")["long_runs"]
    assert set(p["long_runs"]) <= set(mine), "notebook 05 times packs notebook 04 judges"
    long, _, info, specs = distillation.long_run_voices(teacher, p["long_runs"])
    judged = set(long) | set(distillation.long_whole_voices(long, info, specs)[0])
    assert {five, hifi} <= judged
    (tmp_path / "onnx" / by_name[five].folder).mkdir(parents=True)
    (tmp_path / "onnx" / by_name[five].folder / "model.onnx").write_bytes(b"")
    assert hardware.cold_start_files(tmp_path / "shipped.onnx", tmp_path / "onnx", students) == {
        "teacher (shipped)": tmp_path / "shipped.onnx", five: tmp_path / "onnx" / by_name[five].folder / "model.onnx"}


def test_notebook_05_names_a_student_it_cannot_make(teacher, tmp_path):
    """A recorded voice's name that the long packs do not make (here: the long decoder with notebook 04's own flow
    and front end) stops the notebook with an error naming it and the names the packs give; where a pack of
    `long_runs` cannot be loaded, it is an absent row with that pack's reason instead."""
    runs = ["istft/istft192x6-regress", "flow96/flow96", "fe96/fe96"]
    bad = "istft192x6-regress+flow96+fe96@cpu-long"
    writer = ResultWriter("p", hardware.NOTEBOOK)
    with pytest.raises(ValueError, match=re.escape(repr(bad)) + ".*istft192x6-regress\\+flow96-long\\+fe96-long@cpu-long"):
        hardware.load_students([bad], teacher, tmp_path, runs, writer, model="m", profile="p")
    with pytest.raises(ValueError, match="'dec64\\+\\+fe96'"):
        hardware.load_students(["dec64++fe96"], teacher, tmp_path, runs, writer, model="m", profile="p")
    assert writer.frame().empty
    whole = "istft192x6-regress+flow96-long+fe96-long@cpu-long"
    assert hardware.load_students([whole], teacher, tmp_path, runs[:1] + ["none/flow96"] + runs[2:], writer, model="m",
                                  profile="p") == []
    row = writer.frame().drop_duplicates("variant").set_index("variant").loc[whole]
    assert row["status"] == "absent" and "none/flow96" in row["reason"]
