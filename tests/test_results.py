import json

import numpy as np
import pandas as pd
import pytest

from lib import results


def test_writer_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    monkeypatch.setattr(results, "RECORDED", tmp_path / "recorded")
    w = results.ResultWriter("p", "nb")
    w.add(model="m", variant="v", metric="rtf", value=np.float32(0.25), backend="ort-cpu", threads=1)
    w.add(model="m", variant="v", metric="wer", value=float("nan"))
    w.absent(model="m", variant="v", metrics=["rtf"], backend="ort-cuda", reason="no GPU on this machine")
    w.scalars["x"] = np.int64(3)
    out = w.write(env={"cpu": "x"})
    df = pd.read_csv(out / "results.csv")
    assert list(df.columns) == results.COLUMNS
    assert df.loc[0, "value"] == pytest.approx(0.25) and df.loc[0, "unit"] == "s/s"
    assert df.loc[1, "status"] == "failed" and "non-finite" in df.loc[1, "reason"]
    assert df.loc[2, "status"] == "absent" and np.isnan(df.loc[2, "value"])
    results.validate_frame(df)
    assert json.loads((out / "metrics.json").read_text())["x"] == 3
    assert json.loads((out / "env.json").read_text())["profile"] == "p"
    loaded = results.load_results("p", tmp_path)
    assert set(loaded["notebook"]) == {"nb"} and len(loaded) == 3


def test_validate_frame_rejects_broken_rows():
    df = pd.DataFrame([dict.fromkeys(results.COLUMNS)])
    df["status"] = "ok"
    with pytest.raises(ValueError, match="must have a value"):
        results.validate_frame(df)
    df["status"], df["value"], df["reason"] = "absent", None, ""
    with pytest.raises(ValueError, match="say why"):
        results.validate_frame(df)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "a.json"
    results.atomic_write_json(target, {"ok": 1})

    class Boom:
        pass
    with pytest.raises(TypeError):
        results.atomic_write_json(target, {"bad": Boom()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_to_jsonable():
    assert results.to_jsonable({"a": np.float64(1.5), "b": np.arange(2), "c": float("inf")}) == {"a": 1.5, "b": [0, 1], "c": None}


def test_metrics_json_keeps_the_command_and_the_resolved_parameters(tmp_path, monkeypatch):
    """The profile's file wins over the notebook's defaults, keys it leaves out keep the defaults, and the command
    run_all.sh exported is kept; a notebook run by hand says so."""
    from lib import params
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    monkeypatch.setenv("TTS_LAB_COMMAND", "./run_all.sh smoke 02")
    w = results.ResultWriter("smoke", "02_lora_qlora")
    w.add(model="m", variant="v", metric="rtf", value=0.1)
    m = json.loads((w.write() / "metrics.json").read_text())
    assert m["command"] == "./run_all.sh smoke 02"
    smoke = params.load("smoke", "02_lora_qlora")
    defaults = params.notebook_defaults("02_lora_qlora")
    assert m["parameters"]["steps"] == smoke["steps"] != defaults["steps"]
    assert m["parameters"]["lr_full"] == defaults["lr_full"] and "lr_full" not in smoke
    assert set(m["parameters"]) == set(defaults)
    monkeypatch.delenv("TTS_LAB_COMMAND")
    m = json.loads((results.ResultWriter("nope", "02_lora_qlora").write() / "metrics.json").read_text())
    assert "by hand" in m["command"] and m["parameters"] == json.loads(json.dumps(defaults))
