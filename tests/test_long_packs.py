"""Notebooks 03 and 05 use the long CPU runs' packs too (issue 39, item 6): notebook 03 judges the long runs' recovered
decoders beside its short recovery, each with its training budget, and a pack that cannot be loaded is an absent row;
notebook 05 times the long packs' voices under the names notebook 04 judges them by, and names a student it cannot
make."""
import re
from types import SimpleNamespace

import pandas as pd
import pytest

from lib.core import params, registry
from lib.core.results import ResultWriter
from lib.report import answers
from lib.studies import compression, hardware
from lib.techniques import distill, packs
from lib.voices import parts, piper_torch, synth as voices
from lib.voices.artefacts import save_part
from lib.voices.istft_decoder import FrameRateDecoder


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


def _packs(teacher, root):
    """A long regression-first decoder pack (2.5 machine-hours), a flow pack, a corrupt pack; the runs naming them
    and one that was never packed."""
    dec = parts.fold_weight_norm(distill.decoder_student(teacher, 32, "scratch"))
    flow = parts.fold_weight_norm(distill.flow_student(teacher, 16))
    save_part(dec, root / "r" / "dec32-regress", "decoder", parts.decoder_build(teacher, 32),
              {"recipe": "regression-first", "student": "dec32-regress", "steps": 1000, "hours": 2.5})
    save_part(flow, root / "f" / "flow16", "flow", parts.flow_build(teacher, 16), {"recipe": "regression-first"})
    save_part(dec, root / "b" / "dec32-broken", "decoder", parts.decoder_build(teacher, 32),
              {"recipe": "regression-first"})
    (root / "b" / "dec32-broken" / "model.safetensors").write_bytes(b"not a safetensors file")
    return ["r/dec32-regress", "f/flow16", "b/dec32-broken", "none/dec8"]


def test_notebook_03_judges_a_long_recovered_decoder_with_its_budget(teacher, tmp_path, monkeypatch):
    """The long decoder pack becomes the ONNX Runtime variant `<run>@cpu-long-ort` (technique RECOVERY, parent fp32),
    exported from the teacher with that decoder into a folder without '@'; its budget is its pack's machine-hours and
    this run's recovery's its minutes; the flow pack, the corrupt and the missing pack are absent rows that say why,
    and nothing crashes. The report's pruning answer weighs it."""
    runs = _packs(teacher, tmp_path)
    exported = {}

    def export_voice(voice, out_dir, config):  # the ONNX export is exercised by notebook 04's tests
        exported[out_dir.name] = voice
        return out_dir / "model.onnx"
    monkeypatch.setattr(compression.export, "export_voice", export_voice)
    writer = ResultWriter("p", "03_pruning_quantization", "m")
    variants, specs = compression.long_recoveries(teacher, runs, voices.joe_paths()[1], tmp_path / "work", writer,
                                                  root=tmp_path)
    assert [(v.name, v.technique, v.parent, v.backend) for v in variants] == [
        ("dec32-regress@cpu-long-ort", compression.RECOVERY, "fp32", "ort-cpu")]
    assert list(specs) == ["dec32-regress@cpu-long-ort"] and list(exported) == ["dec32-regress_at_cpu-long-ort"]
    assert distill.decoder_width(exported["dec32-regress_at_cpu-long-ort"].dec) == 32
    budgets = compression.recovery_budgets("structured-50-ort", specs, SimpleNamespace(seconds=150.0), "cpu")
    assert budgets == {"structured-50-ort": "after 2.5 minutes on cpu in this run (decoder) of training",
                       "dec32-regress@cpu-long-ort": "after 2.50 machine-hours on cpu-long (decoder) of training"}
    rows = writer.frame().drop_duplicates("variant").set_index("variant")
    assert set(rows.index) == {"flow16@cpu-long", "dec32-broken@cpu-long", "dec8@cpu-long"}
    assert (rows["status"] == "absent").all() and rows["value"].isna().all()
    assert "not a pruned HiFi-GAN decoder" in rows.loc["flow16@cpu-long", "reason"]
    assert "cannot be loaded" in rows.loc["dec32-broken@cpu-long", "reason"]
    assert "none/dec8" in rows.loc["dec8@cpu-long", "reason"]
    pruning = next(t for t in answers.TECHNIQUES if t.name == "pruning")
    assert compression.RECOVERY.family is pruning.family  # the recoveries stand in the pruning answer


def test_notebook_03_findings_put_the_best_recovery_first():
    """The recovered decoders, this run's and the long runs', the smallest DNSMOS drop first; no other variant."""
    table = pd.DataFrame({"variant": ["fp32", "structured-50-ort", "dec128-regress@cpu-long-ort", "ort-qdq-int8-all"],
                          "technique": ["baseline", compression.RECOVERY, compression.RECOVERY, "ort static int8"],
                          "rtf_ratio": [1.0, 0.55, 0.54, 0.69], "size_ratio": [1.0, 0.9, 0.9, 0.3],
                          "dnsmos_drop": [0.0, 0.61, 0.30, 0.8], "wer_increase": [0.0, 0.04, 0.01, 0.02]})
    sens = pd.DataFrame({"group": ["decoder", "flow"], "pesq_wb": [2.0, 4.0]})
    sweep = pd.DataFrame({"amount": [0.3], "size_mb": [60.0], "size_mb_zip": [50.0]})
    f = compression.findings_facts(sens, sweep, table, {"guided": "ort-qdq-int8-flow"})
    assert f["recoveries"] == [("dec128-regress@cpu-long-ort", 0.54, 0.30, 0.01),
                               ("structured-50-ort", 0.55, 0.61, 0.04)]


def test_notebook_05_times_the_long_packs_voices_by_notebook_04s_names(teacher, tmp_path):
    """The long whole voices notebook 05's default parameters name load from the committed packs, under names that
    notebook 04 judges on `default`, with their long decoders and front end; a student of notebook 04 not saved on
    the profile is an absent row that says so. The cold start reads the folder notebook 04 exported a voice to."""
    p = params.resolved("default", hardware.NOTEBOOK)
    p["long_runs"] = registry.load(p["registry_file"]).packs(p["long_runs"])  # as the notebook's setup resolves it
    writer = ResultWriter("default", hardware.NOTEBOOK, "m")
    students = hardware.load_students(p["students"], teacher, tmp_path / "students", p["long_runs"], writer,
                                      profile="default")
    by_name = {s.name: s for s in students}
    five, hifi = ("istft192x6-adv+flow96-long+fe96-varied-long@cpu-long",
                  "dec128-regress+flow96-long+fe96-varied-long@cpu-long")
    assert {five, hifi} <= set(p["students"]) and set(by_name) == {five, hifi}
    assert by_name[five].folder == "istft192x6-adv+flow96-long+fe96-varied-long_at_cpu-long"
    assert isinstance(by_name[five].voice.dec, FrameRateDecoder) and not by_name[five].voice.use_sdp
    assert distill.decoder_width(by_name[hifi].voice.dec) == 128 and not by_name[hifi].voice.use_sdp
    absent = writer.frame().drop_duplicates("variant").set_index("variant")
    assert set(absent.index) == set(p["students"]) - {five, hifi} and (absent["status"] == "absent").all()
    assert absent["reason"].str.contains("notebook 04 on profile 'default' saves it").all()
    # the names are those notebook 04 gives the same packs on `default` (beside its own run's flow and front end)
    mine = registry.load().packs(params.resolved("default", "04_distillation")["long_runs"])
    assert set(p["long_runs"]) <= set(mine), "notebook 05 times packs notebook 04 judges"
    long, _, info, specs = packs.one_part_voices(teacher, p["long_runs"])
    judged = set(long) | set(packs.whole_voices(long, info, specs)[0])
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
    writer = ResultWriter("p", hardware.NOTEBOOK, "m")
    with pytest.raises(ValueError,
                       match=re.escape(repr(bad)) + ".*istft192x6-regress\\+flow96-long\\+fe96-long@cpu-long"):
        hardware.load_students([bad], teacher, tmp_path, runs, writer, profile="p")
    with pytest.raises(ValueError, match="'dec64\\+\\+fe96'"):
        hardware.load_students(["dec64++fe96"], teacher, tmp_path, runs, writer, profile="p")
    assert writer.frame().empty
    whole = "istft192x6-regress+flow96-long+fe96-long@cpu-long"
    assert hardware.load_students([whole], teacher, tmp_path, runs[:1] + ["none/flow96"] + runs[2:], writer,
                                  profile="p") == []
    row = writer.frame().drop_duplicates("variant").set_index("variant").loc[whole]
    assert row["status"] == "absent" and "none/flow96" in row["reason"]
