"""The frame-rate decoder of the 5x voice: its matrix-product iSTFT equals torch.istft, it exports to an ONNX graph
without random or STFT ops that ONNX Runtime and OpenVINO run alike, and the shared training stack trains it."""
import numpy as np
import pytest
import torch

from lib.voices import istft_decoder
from lib.training import batches, loop as training


@pytest.mark.parametrize("n_fft,hop", [(1024, 256), (16, 4)])
def test_matmul_istft_matches_torch_istft(n_fft, hop):
    torch.manual_seed(0)
    frames = 40
    mag = torch.rand(2, n_fft // 2 + 1, frames) * 3
    phase = (torch.rand(2, n_fft // 2 + 1, frames) * 2 - 1) * np.pi
    ours = istft_decoder.MatmulISTFT(n_fft, hop)(mag, phase)
    ref = torch.istft(torch.polar(mag, phase), n_fft, hop, window=torch.hann_window(n_fft), center=True)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() < 1e-4, float((ours - ref).abs().max())
    wrong = istft_decoder.MatmulISTFT(n_fft, hop)(mag, phase + 0.1)
    assert (wrong - ref).abs().max() > 1e-2, "a different phase must give a different waveform"


def test_exported_decoder_runs_alike_in_onnx_runtime_and_openvino(tmp_path):
    import onnx
    import onnxruntime as ort
    import openvino as ov
    torch.manual_seed(0)
    dec = istft_decoder.FrameRateDecoder(in_channels=8, dim=32, blocks=2).eval()
    z = torch.randn(1, 8, 30)
    with torch.no_grad():
        ref = dec(z)
    assert ref.shape == (1, 1, 30 * 256)
    path = tmp_path / "dec.onnx"
    torch.onnx.export(dec, (z,), str(path), dynamo=False, opset_version=17, input_names=["z"], output_names=["audio"],
                      dynamic_axes={"z": {2: "frames"}, "audio": {2: "samples"}})
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"RandomNormalLike", "RandomNormal", "STFT", "DFT"}, ops
    z2 = torch.randn(1, 8, 45)
    with torch.no_grad():
        want = dec(z2).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z2.numpy()})[0]
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4
    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    vino = np.asarray(compiled({"z": z2.numpy()})[0])
    assert np.abs(vino - want).max() < 1e-3


def test_the_training_stack_trains_it(tmp_path):
    torch.manual_seed(0)
    target = istft_decoder.FrameRateDecoder(in_channels=8, dim=32, blocks=2).eval()
    zs = [torch.randn(1, 8, 40) for _ in range(4)]
    with torch.no_grad():
        wavs = [target(z) for z in zs]
    lat = batches.Latents([f"u{i}" for i in range(4)], zs, wavs, hop=256)
    student = istft_decoder.FrameRateDecoder(in_channels=8, dim=32, blocks=2)
    recipe = training.Recipe(steps=12, lr=2e-3, warmup_steps=10, checkpoint_every=6, log_every=1)
    curve = training.train_decoder(student, lat, recipe, tmp_path, batch=2, frames=16, progress=None)
    f = curve.frame
    assert f["loss_mel"].iloc[-3:].mean() < f["loss_mel"].iloc[:3].mean()
    assert f.loc[f["step"] > 10, "loss_d"].notna().all()


def test_a_decoder_grown_from_a_linear_head_pack_speaks_as_the_pack_then_learns_past_its_rank(tmp_path):
    """Issue 66: `mag_hidden` adds a GELU MLP beside the head's log-magnitudes whose last layer starts at zero, so a
    decoder grown from a linear-head pack (run_state.init_from) speaks exactly as the pack; trained, the MLP moves,
    its config rebuilds it, and it exports to ONNX Runtime as the linear decoder does. A pack with another body is
    still refused, naming the keys."""
    import onnxruntime as ort
    from lib.jobs.run_state import init_from
    from lib.voices import parts
    from lib.voices.artefacts import ArtefactError, save_part
    torch.manual_seed(0)
    linear = istft_decoder.FrameRateDecoder(in_channels=8, dim=32, blocks=2).eval()
    save_part(linear, tmp_path / "pack", "istft_decoder", linear.config, extra={"steps": 5})
    grown = istft_decoder.FrameRateDecoder(in_channels=8, dim=32, blocks=2, mag_hidden=24)
    assert init_from(grown, tmp_path / "pack")["steps"] == 5
    z = torch.randn(1, 8, 30)
    with torch.no_grad():
        assert torch.equal(grown.eval()(z), linear(z))
    opt = torch.optim.Adam(grown.parameters(), lr=1e-2)
    grown.train()
    for _ in range(3):
        opt.zero_grad()
        grown.spectra(z)[0].pow(2).mean().backward()
        opt.step()
    assert grown.mag_mlp[-1].weight.abs().sum() > 0
    rebuilt = parts.build_part("istft_decoder", grown.config)
    rebuilt.load_state_dict(grown.state_dict())
    path = tmp_path / "grown.onnx"
    grown.eval()
    torch.onnx.export(grown, (z,), str(path), dynamo=False, opset_version=17, input_names=["z"],
                      output_names=["audio"], dynamic_axes={"z": {2: "frames"}, "audio": {2: "samples"}})
    with torch.no_grad():
        want = rebuilt.eval()(z).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z.numpy()})[0]
    assert np.abs(got - want).max() < 1e-4
    wider = istft_decoder.FrameRateDecoder(in_channels=8, dim=48, blocks=2, mag_hidden=24)
    with pytest.raises((ArtefactError, RuntimeError)):
        init_from(wider, tmp_path / "pack")
