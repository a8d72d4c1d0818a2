import numpy as np
from pathlib import Path

import pytest
import torch

from lib.core import text
from lib.voices import piper_torch, synth as voices
from lib.techniques import compress


def _convnet():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(8, 16, 3), torch.nn.ReLU(), torch.nn.Conv1d(16, 4, 1))


def test_unstructured_pruning_zeroes_what_it_claims():
    net = _convnet()
    pruned = compress.prune_unstructured(net, 0.3)
    for (_, a), (_, b) in zip(compress.prunable_layers(net), compress.prunable_layers(pruned)):
        zeros = int((b.weight == 0).sum())
        assert zeros == round(0.3 * b.weight.numel())
        kept = b.weight != 0
        assert torch.equal(a.weight[kept], b.weight[kept]), "kept weights are unchanged"
        assert a.weight.abs()[~kept].max() <= a.weight.abs()[kept].min(), "the smallest magnitudes go"
    assert compress.weight_sparsity(net) == 0.0
    assert compress.weight_sparsity(pruned) == pytest.approx(0.3, abs=0.01)
    assert not any("weight_orig" in k for k in pruned.state_dict()), "pruning is made permanent"
    with pytest.raises(ValueError, match="amount"):
        compress.prune_unstructured(net, 1.0)


def test_sizes_of_sparse_weights():
    net = _convnet()
    dense, dense_zip = compress.state_dict_bytes(net), compress.state_dict_bytes(net, compressed=True)
    pruned = compress.prune_unstructured(net, 0.7)
    assert compress.state_dict_bytes(pruned) == pytest.approx(dense, rel=0.02), \
        "zeros take the same room in a dense file"
    assert compress.state_dict_bytes(pruned, compressed=True) < 0.75 * dense_zip


def test_structured_pruning_removes_channels():
    from piper.train.vits.models import Generator
    torch.manual_seed(0)
    gen = Generator(16, "2", (3, 5), ((1, 2), (2, 6)), (4, 4), 32, (8, 8))
    gen.remove_weight_norm()
    z = torch.randn(1, 16, 12)
    small = compress.prune_structured(gen, 0.5, z, round_to=2)
    n_big = sum(p.numel() for p in gen.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < 0.45 * n_big
    assert small.conv_pre.in_channels == 16 and small.conv_post.out_channels == 1
    assert small.conv_pre.out_channels == 16
    assert small(z).shape == gen(z).shape


def test_torch_dynamic_int8_converts_linear_only():
    lin = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    q, n = compress.quantize_dynamic_torch(lin)
    assert n == 2
    x = torch.randn(4, 8)
    assert torch.allclose(q(x), lin(x), atol=0.05), "int8 Linear stays within 0.05 of float here"
    _, n_conv = compress.quantize_dynamic_torch(_convnet())
    assert n_conv == 0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = piper_torch.load_piper_torch(voices.joe_paths()[0])
    return compress.export_onnx(model, tmp_path_factory.mktemp("onnx") / "fp32.onnx")


def test_export_reproduces_the_shipped_voice(exported):
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    a = voices.load_voice(**q).synthesize("The box was thrown beside the parked truck.").samples
    b = voices.load_voice(model_path=exported, **q).synthesize("The box was thrown beside the parked truck.").samples
    assert len(a) == len(b) and np.abs(a - b).max() < 1e-4


def test_static_int8_of_the_flow_stays_close(exported, tmp_path, monkeypatch):
    """The flow quantized to int8 (QDQ) with the rest in float (compress.CONVERSIONS, the conversion notebook 03's
    guided variant and `tts-lab voice optimize` share): same durations, MCD under 3.5 dB against float
    (noise off; about 2.5 measured). The decoder quantized instead measures about 12 dB, so the bound separates
    the insensitive group from the sensitive one."""
    from lib.harness import metrics
    fe = voices.PiperFrontend(voices.joe_paths()[1])
    calib = [fe.phoneme_ids(s.text)[0] for s in text.harvard_sentences([40])[:4]]
    dst = compress.CONVERSIONS["ort-qdq-int8-flow"].convert(exported, tmp_path, calib)  # the named conversion
    ops = compress.onnx_op_counts(dst)
    assert ops.get("QuantizeLinear", 0) > 10 and ops.get("DequantizeLinear", 0) > 10
    asked = []  # what each named static conversion asks ONNX Runtime to keep in float (quantizing again costs ~8 s)
    monkeypatch.setattr(compress, "ort_quantize_static", lambda src, dst, calibration, **kw: asked.append(kw) or dst)
    compress.CONVERSIONS["ort-qdq-int8-flow"].convert(exported, tmp_path, calib)
    compress.CONVERSIONS["ort-qdq-int8-all"].convert(exported, tmp_path, calib)
    keep = compress.node_names(exported, prefixes=["/enc_p/", "/dp/", "/dec/"])  # the same by hand: the rest float
    assert sorted(asked[0]["nodes_to_exclude"]) == sorted(keep) and keep and not asked[1]["nodes_to_exclude"]
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    s = "Four hours of steady work faced us."
    a = voices.load_voice(model_path=exported, **q).synthesize(s).samples
    b = voices.load_voice(model_path=dst, **q).synthesize(s).samples
    assert len(a) == len(b)
    assert metrics.mcd_and_f0(a, b, 22050)["mcd_db"] < 3.5


class _TinyPiper(torch.nn.Module):
    """A graph with the Piper voice's inputs (phoneme ids, lengths, scales): embedding, two convolutions."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.net = torch.nn.Embedding(20, 8), _convnet()

    def forward(self, input, input_lengths, scales):
        return self.net(self.emb(input).transpose(1, 2)) * scales[1] + 0.0 * input_lengths.float()[:, None, None]


def test_static_int8_calibrates_once_per_model_and_sequences(tmp_path, monkeypatch):
    import importlib
    ort_q = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not its function
    src = tmp_path / "tiny.onnx"
    torch.onnx.export(_TinyPiper(), (torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([5]), torch.tensor([0.0, 1.0, 0.0])),
                      str(src), input_names=["input", "input_lengths", "scales"], dynamo=False,
                      dynamic_axes={"input": {1: "t"}})
    calib = [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10]]
    first = compress.ort_quantize_static(src, tmp_path / "a.onnx", calib, op_types=("Conv",))
    cache = compress.calibration_cache_path(src, calib, ("Conv",))
    assert cache.is_file() and cache.parent == src.parent
    assert compress.calibration_cache_path(src, calib[:1], ("Conv",)) != cache, "other sequences, other ranges"
    real = ort_q.create_calibrator

    def no_calibration(*a, **k):
        raise AssertionError("calibrated again although the ranges were cached")
    monkeypatch.setattr(ort_q, "create_calibrator", no_calibration)
    again = compress.ort_quantize_static(src, tmp_path / "b.onnx", calib, op_types=("Conv",))
    assert again.read_bytes() == first.read_bytes(), "cached ranges give the same quantized model"
    monkeypatch.setattr(ort_q, "create_calibrator", real)
    compress.ort_quantize_static(src, tmp_path / "c.onnx", calib[:1], op_types=("Conv",))
    assert len(list(tmp_path.glob(".tiny.minmax-*.json"))) == 2


def test_dynamic_int8_quantizes_conv_weights(exported, tmp_path):
    dst = compress.ort_quantize_dynamic(exported, tmp_path / "d.onnx", ("Conv",))
    assert dst.stat().st_size < 0.4 * exported.stat().st_size
    assert compress.onnx_op_counts(dst).get("ConvInteger", 0) > 50


def test_bitsandbytes_status_says_why():
    ok, reason = compress.bitsandbytes_status()
    assert isinstance(ok, bool) and (ok or len(reason) > 10)


def test_weight_only_int8_shrinks_without_touching_speed_path(exported, tmp_path):
    """Conv weights stored as int8 + per-channel scale: the file is about 4x smaller; the flow and decoder so
    stored stay within MCD 2 dB of float with unchanged durations (their weights carry no timing)."""
    from lib.harness import metrics
    full = compress.weight_only_int8(exported, tmp_path / "w8.onnx")
    assert full.stat().st_size < 0.3 * exported.stat().st_size
    part = compress.weight_only_int8(exported, tmp_path / "w8fd.onnx", prefixes=["/flow/", "/dec/"])
    assert compress.onnx_op_counts(part)["DequantizeLinear"] > 50
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    s = "The hogs were fed chopped corn and garbage."
    a = voices.load_voice(model_path=exported, **q).synthesize(s).samples
    b = voices.load_voice(model_path=part, **q).synthesize(s).samples
    assert len(a) == len(b) and metrics.mcd_and_f0(a, b, 22050)["mcd_db"] < 2.0


def test_split_voice_matches_the_whole_model(tmp_path):
    """Text -> latent in ORT, decoder in static 96-frame windows: same length as the whole model and the chunk
    borders inaudible (PESQ-WB >= 4.0 against the unchunked output, f32 and, where the CPU has it, bf16; else bf16 is
    refused by name)."""
    from lib.harness import metrics
    model = piper_torch.load_piper_torch(voices.joe_paths()[0])
    latent, decoder = compress.export_split(model, tmp_path, chunk_frames=64, context_frames=16)
    assert decoder.name == "decoder_96.onnx"
    q = dict(noise_scale=0.0, noise_w=0.0, normalize=False, threads=2)
    s = "A large size in stockings is hard to sell, and four hours of steady work faced us."
    ref = voices.load_voice(**q).synthesize(s).samples
    from lib.core import machine
    for precision in ("f32", "bf16"):
        kw = dict(backend="split", model_path=latent, decoder_path=decoder, chunk_frames=64, context_frames=16,
                  precision=precision, **q)
        if precision == "bf16" and "BF16" not in machine.openvino_cpu_precisions():  # the absent path
            with pytest.raises(machine.PrecisionUnavailable, match=f"no {precision}"):
                voices.load_voice(**kw)
            continue
        v = voices.load_voice(**kw)
        out = v.synthesize(s).samples
        assert len(out) == len(ref), precision
        assert metrics.pesq_wb(ref, out, 22050) >= 4.0, precision
        assert v.effective_precision.endswith(("float32'>", "bfloat16'>")) or v.effective_precision in ("f32", "bf16")
    ort_dec = voices.load_voice(backend="split", model_path=latent, decoder_path=decoder, chunk_frames=64,
                                context_frames=16, decoder_backend="ort-cpu", **q)
    chunks = list(ort_dec.decode_chunks(ort_dec.latent_z(ort_dec.frontend.phoneme_ids(s)[0])))
    assert len(chunks) > 2 and all(c.size == 64 * 256 for c in chunks[:-1])


def test_openvino_voice_reports_its_precision():
    v = voices.load_voice(backend="openvino-cpu", precision="f32", threads=1, noise_scale=0.0, noise_w=0.0)
    assert v.effective_precision == "f32"
    assert v.synthesize("Hello.").duration > 0.3
    with pytest.raises(RuntimeError, match="no int3 on this CPU"):
        voices.load_voice(backend="openvino-cpu", precision="int3")


def test_bitsandbytes_replaces_only_1x1_convolutions():
    ok, why = compress.bitsandbytes_status("int8")
    if not ok:
        pytest.skip(why)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv1d(64, 128, 1), torch.nn.Conv1d(128, 128, 3, padding=1),
                              torch.nn.Conv1d(128, 96, 1))
    assert compress.conv1x1_layers(net) == ["0", "2"]
    x = torch.randn(2, 64, 40)
    for mode in ("int8", "nf4"):
        q, names = compress.bnb_convert(net, mode)
        with torch.no_grad():
            ref, out = net(x), q(x)
        assert names == ["0", "2"]
        assert isinstance(q[1], torch.nn.Conv1d), "a 3-wide convolution is not a linear layer and stays"
        rel = float((out - ref).norm() / ref.norm())
        assert 0 < rel < (0.05 if mode == "int8" else 0.25), f"{mode}: relative error {rel}"
    q, names = compress.bnb_convert(torch.nn.Sequential(torch.nn.Conv1d(96, 64, 1)), "nf4")
    assert names == [], "NF4 on the CPU packs 64-channel blocks; a 96-channel input stays float"
    with pytest.raises(ValueError, match="1x1"):
        compress.BnbConv1x1(torch.nn.Conv1d(8, 8, 3), "int8")


def test_the_named_onnx_conversions_are_one_registry():
    """Notebook 03's ONNX Runtime int8 variants and `tts-lab voice optimize`'s candidates are the same named
    conversions; an unknown name is refused with the names it could be."""
    from lib.studies import compression, optimize
    assert set(compression.ORT_CONVERSIONS) < set(compress.CONVERSIONS)
    made = optimize.compression_candidates(["ort-qdq-int8-flow", "ort-weight-int8-all"], Path("v.onnx"), [])
    assert [(c.name, c.technique) for c in made] == [("ort-qdq-int8-flow", "ort static int8"),
                                                     ("ort-weight-int8-all", "weight-only int8")]
    with pytest.raises(ValueError, match=r"\['int4'\] unknown; choose from \['ort-dynamic-int8-conv'"):
        optimize.compression_candidates(["int4"], Path("v.onnx"), [])
