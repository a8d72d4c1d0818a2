"""Back-end probes, explicit-noise export and engines, and the benchmark scenarios."""
import numpy as np
import pytest

from lib.core import audio as lab_audio
from lib.voices import piper_torch
from lib.voices.synth import SCALES
from lib.techniques import export
from lib.core import params
from lib.runtimes import backends, bench_engines
from lib.runtimes.engine_spec import EngineSpec
from lib.harness import scenarios, trackers


class FakeEngine(bench_engines.Engine):
    """Audio of 100 samples per phoneme, instantly; `oom_at` raises CUDA's out-of-memory error from that batch on."""
    label, backend, sample_rate = "fake-fp32", "fake", 1000

    def __init__(self, oom_at=None):
        self.oom_at, self.calls = oom_at, []

    def synth(self, batch, seed=0):
        self.calls.append(len(batch))
        if self.oom_at and len(batch) >= self.oom_at:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [np.ones(100 * len(ids), np.float32) for ids in batch]


def test_registry_probes_give_a_status_and_a_reason():
    probes = backends.probe_all()
    assert {p.label for p in probes} == {f"{b}-{p}" for b, p in backends.REGISTRY}
    for p in probes:
        assert p.status in (backends.RUNNABLE, backends.PREPARE_ONLY, backends.UNAVAILABLE)
        assert p.status == backends.RUNNABLE or p.reason, f"{p.label} is {p.status} without a reason"
    by = {p.label: p for p in probes}
    assert by["torch-cpu-fp32"].status == backends.RUNNABLE and by["torch-cpu-fp32"].effective == "cpu:float32"
    assert by["ort-cpu-fp32"].effective == "CPUExecutionProvider"
    import torch
    if not torch.cuda.is_available():
        assert by["torch-cuda-fp16"].status == backends.UNAVAILABLE and "CUDA" in by["torch-cuda-fp16"].reason
    with pytest.raises(ValueError, match="unknown back-end"):
        backends.probe("tpu-v5", "bf16")


def test_a_provider_that_falls_back_is_not_runnable(monkeypatch):
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider really loads here")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    p = backends.probe("ort-cuda", "fp32")
    assert p.status == backends.UNAVAILABLE
    assert "fell back" in p.reason or "failed" in p.reason


def test_offline_throughput_stops_at_out_of_memory():
    rows = scenarios.offline_throughput(FakeEngine(oom_at=4), [[1] * 10, [1] * 20, [1] * 5] * 4, [1, 2, 4, 8],
                                       min_seconds=0.0, min_batches=2)
    assert [r["batch"] for r in rows] == [1, 2, 4]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed"] and "out of memory" in rows[-1]["reason"]
    ok = rows[0]
    assert ok["audio_s"] == pytest.approx(sum(a for a in [0.5, 1.0][:ok["batches"]]), rel=1e-6) or ok["audio_s"] > 0
    with pytest.raises(RuntimeError, match="shape"):
        class Broken(FakeEngine):
            def synth(self, batch, seed=0):
                raise RuntimeError("shape mismatch")
        scenarios.offline_throughput(Broken(), [[1]], [1], min_seconds=0.0)


def test_single_stream_runs_at_least_min_queries():
    eng = FakeEngine()
    t = scenarios.single_stream(eng, [[1] * 3, [1] * 7], min_queries=11, min_seconds=0.0, warmup=2)
    assert len(t.latencies_s) == 11 and len(eng.calls) == 13
    assert sorted(set(t.audio_s)) == [0.3, 0.7]


def test_windows_cover_every_frame_once():
    for frames in (1, 63, 64, 65, 200):
        w = bench_engines.windows(frames, 64, 16)
        assert sum(k for _, k in w) == frames
        assert [s for s, _ in w] == list(range(0, frames, 64))


def test_noise_of_an_item_does_not_depend_on_the_rest_of_its_batch():
    a, b = [5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9]
    dp1, z1 = export.make_noise([a], 4, seed=3)
    dpb, zb = export.make_noise([a, b], 4, seed=3)
    np.testing.assert_array_equal(dp1[0], dpb[0, :, :3])
    np.testing.assert_array_equal(z1[0], zb[0, :, :z1.shape[2]])
    assert not np.array_equal(export.make_noise([a], 4, seed=4)[0], dp1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from lib.voices import synth as voices
    model = piper_torch.load_piper_torch(voices.joe_paths()[0])
    paths = export.export_noise_input(model, tmp_path_factory.mktemp("noise"), chunk_frames=32, context_frames=16)
    fe = voices.PiperFrontend(voices.joe_paths()[1])
    ids = [fe.phoneme_ids(t)[0] for t in ("The birch canoe slid on the smooth planks.",
                                          "Glue the sheet to the dark blue background.")]
    return model, paths, ids


def test_noise_input_export_has_no_random_op_and_a_static_decoder(exported):
    _, paths, _ = exported
    voice = export.npu_readiness(paths["voice"])
    assert voice["random_ops"] == [] and not voice["static_ready"] and "input" in voice["dynamic_io"]
    dec = export.npu_readiness(paths["decoder"])
    assert dec["static_ready"] and dec["dynamic_io"] == {} and "Conv" in dec["ops"]
    import onnx
    shipped = onnx.load(str(__import__("lib.voices.synth", fromlist=["x"]).joe_paths()[0]), load_external_data=False)
    assert "RandomNormalLike" in {n.op_type for n in shipped.graph.node}, "the shipped file draws noise inside"


def test_engines_agree_and_streaming_matches_the_whole(exported):
    model, paths, ids = exported
    torch_engine = bench_engines.TorchEngine(model, "cpu", "fp32", threads=2)
    ort_engine = bench_engines.OnnxEngine(paths, "ort-cpu", threads=2)
    assert ort_engine.label == ort_engine.spec.label == "ort-cpu-fp32" and torch_engine.label == "torch-cpu-fp32"
    a, b = torch_engine.synth(ids, seed=7), ort_engine.synth(ids, seed=7)
    for x, y in zip(a, b):
        assert x.size == y.size > 0
        assert lab_audio.snr_db(x, y) > 60
    alone = torch_engine.synth([ids[0]], seed=7)[0]
    assert alone.size == a[0].size and lab_audio.snr_db(alone, a[0]) > 60, "batching does not change an utterance"
    assert lab_audio.snr_db(torch_engine.synth([ids[0]], seed=8)[0], a[0]) < 20, "another seed, another draw"
    good = scenarios.chunk_fidelity(ort_engine, ids[:1], 32, 16)[0]
    assert good["length_diff_samples"] == 0 and good["snr_db"] > 40
    bad = scenarios.chunk_fidelity(torch_engine, ids[:1], 32, 0)[0]
    assert bad["snr_db"] < good["snr_db"] - 10, "without context the chunk borders differ from the whole"
    ttfa = scenarios.streaming_ttfa(ort_engine, ids, 32, 16, min_queries=2, min_seconds=0.0, warmup=0)
    assert 0 < ttfa["ttfa_ms_p50"] <= ttfa["ttfa_ms_p99"]


def test_diverged_durations_are_named(exported):
    import torch
    model, _, ids = exported
    x = torch.tensor([ids[0]])
    with pytest.raises(ValueError, match="durations have diverged"):
        export.latent_with_noise(model, x, torch.tensor([len(ids[0])]), (0.667, 5.0, 0.8),
                                   torch.zeros(1, 2, len(ids[0])), torch.zeros(1, 192, 10))


def test_refuses_a_label_it_did_not_run_on(exported):
    _, paths, _ = exported
    import onnxruntime as ort
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA provider really loads here")
    with pytest.raises(Exception) as info:
        bench_engines.OnnxEngine(paths, "ort-cuda")
    assert isinstance(info.value, backends.BackendMismatch) or "CUDA" in str(info.value)


PROFILES_05 = sorted(f.parent.name for f in params.PARAMS.glob("*/05_hardware_benchmark.yaml"))


@pytest.mark.parametrize("profile", PROFILES_05)
def test_every_engine_label_of_notebook_05_round_trips(profile):
    """Issue 38: each engine label a profile of notebook 05 names reads as a spec once, and the spec renders it back
    byte for byte (the result rows' variants are the spec's labels)."""
    p = params.resolved(profile, "05_hardware_benchmark")
    for label in p["engines"] + p["student_engines"]:
        spec = EngineSpec.parse(label)
        assert spec.label == label and EngineSpec.parse(spec.label) == spec


def test_an_engine_is_its_fields_and_its_label_is_rendered_from_them():
    window = EngineSpec.parse("ort-cpu-fp32+openvino-bf16-window")
    assert window == EngineSpec("ort-cpu", "fp32", "bf16") and window.base == EngineSpec("ort-cpu", "fp32")
    assert window.base.label == "ort-cpu-fp32" and str(window) == "ort-cpu-fp32+openvino-bf16-window"
    assert EngineSpec.parse("openvino-cpu-f32") == EngineSpec("openvino-cpu", "f32")
    assert EngineSpec.parse("torch-cpu-bf16") == EngineSpec("torch-cpu", "bf16")
    assert len({EngineSpec("ort-cpu", "fp32"), window.base}) == 1, "a spec is a key"


@pytest.mark.parametrize("label", ["ort-cpu", "ort-cpu-fp32+openvino-bf16", "torch-cpu-f32", "openvino-cpu-fp32",
                                   "openvino-cpu-f32+openvino-bf16-window", "ort-cpu-fp32+openvino-q4-window",
                                   "litert-cpu-fp32", "ort-cpu-fp32 "])
def test_a_bad_engine_label_is_named_with_the_valid_forms(label):
    with pytest.raises(ValueError) as info:
        EngineSpec.parse(label)
    message = str(info.value)
    assert repr(label) in message and "torch-cpu-{fp32|fp16|bf16}" in message and "-window" in message
    with pytest.raises(ValueError, match="runs at"):
        EngineSpec("ort-cpu", "int8")


def test_monitor_reports_energy_only_from_counters():
    import time
    with trackers.Monitor(interval_s=0.01) as mon:
        time.sleep(0.1)
    s = mon.summary()
    assert s["cpu_util_pct"] is not None and s["seconds"] >= 0.1
    ok, reason = trackers.rapl_status()
    assert (s["cpu_energy_j"] is not None) == ok
    assert ok or "RAPL" in reason


def test_static_spline_equals_piper_spline():
    import torch
    from piper.train.vits.transforms import piecewise_rational_quadratic_transform
    torch.manual_seed(0)
    x = torch.randn(2, 1, 40) * 4
    uw, uh, ud = torch.randn(2, 1, 40, 10), torch.randn(2, 1, 40, 10), torch.randn(2, 1, 40, 9)
    want, _ = piecewise_rational_quadratic_transform(x, uw, uh, ud, inverse=True, tails="linear", tail_bound=5.0)
    got, _ = export.spline_inverse_static(x, uw, uh, ud, inverse=True, tails="linear", tail_bound=5.0)
    assert (x.abs() > 5).any() and (x.abs() < 5).any(), "both the spline and the linear tails are exercised"
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    fwd, _ = export.spline_inverse_static(x, uw, uh, ud, inverse=False, tails="linear", tail_bound=5.0)
    assert not torch.allclose(fwd, got), "the forward direction is piper's own, not the inverse"


def test_static_shape_latent_equals_the_dynamic_one(exported):
    """What the CUDA graph captures: padded phonemes, a fixed frame count, the static spline."""
    import torch
    model, _, ids = exported
    t = len(ids[0])
    tb = -(-t // 32) * 32
    frames = export.frames_budget(tb)
    dp, zn = export.make_noise([ids[0]], 192, seed=3)
    with torch.inference_mode():
        z, y = export.latent_with_noise(model, torch.tensor([ids[0]]), torch.tensor([t]), SCALES,
                                          torch.from_numpy(dp), torch.from_numpy(zn))
        x = torch.zeros(1, tb, dtype=torch.long)
        x[0, :t] = torch.tensor(ids[0])
        dpb, zb = torch.zeros(1, 2, tb), torch.zeros(1, 192, frames)
        dpb[:, :, :t], zb[:, :, :zn.shape[2]] = torch.from_numpy(dp), torch.from_numpy(zn)
        with export.StaticSplines():
            zs, ys = export.latent_with_noise(model, x, torch.tensor([t]), SCALES, dpb, zb, frames=frames)
    assert int(ys) == int(y) and zs.shape[-1] == frames
    torch.testing.assert_close(zs[:, :, :int(y)], z, rtol=0, atol=1e-4)
    assert float(zs[:, :, int(y):].abs().max()) == 0.0, "frames past the utterance are masked"


def test_reduced_precision_keeps_the_timing_of_a_padded_sentence(exported):
    """Issue 52's fp16 chunks (1.2 dB against their own whole synthesis on an H100): under fp16 autocast a CUDA
    graph's bucket-padded sentence and the same sentence unpadded got different durations (ceil of a log-duration
    that differs in its last bits), so every later sample shifted. Reproduced on this CPU with list 2's sentences
    (4 of 20 lengths differed, and a 11 dB latent where they agreed); the durations are now computed in fp32."""
    import torch
    from lib.core import text
    from lib.voices import synth as voices
    model = exported[0]
    sents = text.harvard_sentences([2])
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids([sents[i] for i in (1, 9)])  # they flipped

    def latent(seq, bucket):
        t = len(seq)
        tb = -(-t // bucket) * bucket if bucket else t
        dp, zn = export.make_noise([seq], 192, seed=0)
        frames = export.frames_budget(tb)
        x, dpb, zb = torch.zeros(1, tb, dtype=torch.long), torch.zeros(1, 2, tb), torch.zeros(1, 192, frames)
        x[0, :t], dpb[:, :, :t], zb[:, :, :zn.shape[2]] = torch.tensor(seq), torch.from_numpy(dp), torch.from_numpy(zn)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.float16), export.StaticSplines():
            z, y = export.latent_with_noise(model, x, torch.tensor([t]), SCALES, dpb, zb,
                                            frames=frames if bucket else None)
        return int(y[0]), z[..., :int(y[0])].float()
    for seq in ids:
        (y_eager, z_eager), (y_graph, z_graph) = latent(seq, 0), latent(seq, 32)
        assert y_eager == y_graph, "the same sentence, the same number of frames"
        snr = 10 * np.log10(float((z_eager ** 2).sum()) / max(float(((z_eager - z_graph) ** 2).sum()), 1e-20))
        assert snr > 40, f"latent {snr:.1f} dB from its own unpadded self: a duration moved"
