"""CPU features and precisions: a variant whose precision this CPU lacks is an absent row, on any CPU. The
missing precision is faked here, so the path is checked on machines that do have bf16 too."""
import pandas as pd
import pytest

from lib import evaluate, machine, results, text, voices

NO_BF16 = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AMX = NO_BF16 | {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"}


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(NO_BF16))
    monkeypatch.setattr(machine, "openvino_cpu_precisions", lambda: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])


def test_features_follow_the_flags(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(AMX))
    assert machine.cpu_features() == {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True}
    assert machine.has_native_bf16()
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(NO_BF16))
    assert machine.cpu_features()["bf16"] is False and not machine.has_native_bf16()
    assert machine.feature_line() == "AVX2; no AVX-512, no VNNI, no bf16, no AMX"


def test_missing_precision_is_refused_with_the_reason(cpu_without_bf16):
    machine.require_precision("openvino-cpu", "f32")
    machine.require_precision("torch-cpu", "fp32")
    with pytest.raises(machine.PrecisionUnavailable, match="no bf16"):
        voices.load_voice(backend="openvino-cpu", precision="bf16", threads=1)
    with pytest.raises(machine.PrecisionUnavailable, match="neither avx512_bf16 nor amx_bf16"):
        voices.load_voice(backend="torch-cpu", autocast_bf16=True, threads=1)


def test_harness_records_absent_rows_and_carries_on(cpu_without_bf16, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    onnx, _ = voices.joe_paths()
    variants = [evaluate.onnx_variant("fp32", "baseline", onnx, parent=""),
                evaluate.onnx_variant("openvino-bf16", "bf16", onnx, backend="openvino-cpu", precision="bf16"),
                evaluate.onnx_variant("openvino-f32", "runtime", onnx, backend="openvino-cpu", precision="f32")]
    writer = results.ResultWriter("t", "nb")
    sentences = text.harvard_sentences([1])[:2]
    per_clip, speed = evaluate.evaluate_variants(
        variants, sentences, evaluate.Judges(asr=None, dnsmos=False, workers=1), writer, model="piper-joe",
        baseline="fp32", settings=dict(noise_scale=0.0, noise_w=0.0, length_scale=1.0), threads=1,
        speed_sentences=1, warmup=0)
    df = writer.frame()
    results.validate_frame(df)
    bf16 = df[df["variant"] == "openvino-bf16"]
    assert set(bf16["status"]) == {"absent"} and set(bf16["metric"]) >= {"dnsmos_p808", "rtf"}
    assert bf16["reason"].str.contains("no bf16").all() and bf16["value"].isna().all()
    assert set(per_clip["variant"]) == {"fp32", "openvino-f32"}
    assert set(speed["name"]) == {"fp32", "openvino-f32"}
    f32 = df[(df["variant"] == "openvino-f32") & (df["metric"] == "rtf_ratio")]
    assert f32["status"].tolist() == ["ok"] and 0 < f32["value"].iloc[0] < 100
    assert isinstance(per_clip, pd.DataFrame)
