"""The hybrid decoder (the teacher's first upsampling stages, then an iSTFT head): its output is as long as the
teacher decoder's, its config rebuilds it (alone and inside a voice), an unpruned one started from the teacher
reproduces the teacher's stage outputs, and the bare module exports to ONNX Runtime."""
import copy
import json

import numpy as np
import pytest
import torch

from lib.techniques import channel_prune, distill
from lib.voices import parts, piper_torch, synth as voices


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


def small_build(teacher, n_fft=16):
    return json.loads(json.dumps(parts.hybrid_build(teacher, 32, 2, n_fft)))  # as a saved config.json holds it


def test_output_length_and_config_round_trip(teacher):
    torch.manual_seed(0)
    hop = int(np.prod(teacher.hparams["upsample_rates"]))
    for keep, n_fft in [(2, 16), (2, 32), (1, None)]:
        dec = parts.build_part("hybrid_decoder", parts.hybrid_build(teacher, 32, keep, n_fft)).eval()
        assert dec.hop * int(np.prod(teacher.hparams["upsample_rates"][:keep])) == hop
        assert dec.config["n_fft"] == (n_fft or 4 * dec.hop)
        with torch.no_grad():
            assert dec(torch.randn(2, 192, 13)).shape == (2, 1, 13 * hop)
        again = parts.build_part("hybrid_decoder", json.loads(json.dumps(dec.config)))
        assert again.config == dec.config
        again.load_state_dict(dec.state_dict())  # same layers, same shapes
    dec = parts.fold_weight_norm(parts.build_part("hybrid_decoder", small_build(teacher)))
    voice = distill.with_parts(teacher, decoder=dec)
    recorded = parts.student_parts(voice)
    assert recorded["dec"] == {"kind": "hybrid_decoder", "build": dec.config}
    rebuilt = parts.with_student_parts(copy.deepcopy(teacher), json.loads(json.dumps(recorded)))
    rebuilt.load_state_dict(voice.state_dict())
    z = torch.randn(1, 192, 9)
    with torch.no_grad():
        assert torch.equal(rebuilt.dec(z), voice.dec(z))


def test_unpruned_hybrid_keeps_the_teachers_stages(teacher):
    torch.manual_seed(0)
    zs = [torch.randn(1, 192, 16)]
    width = teacher.hparams["upsample_initial_channel"]
    hybrid, keep = channel_prune.hybrid_student(teacher, width, 2, zs)
    assert [len(k) for k in keep] == [width, width // 2, width // 4]
    teacher_dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    z = torch.randn(1, 192, 20)
    with torch.no_grad():
        _, want = channel_prune.stage_outputs(teacher_dec, z)
        last, got = hybrid.stages(z)
        assert hybrid(z).shape == (1, 1, 20 * 256)
    assert len(got) == 3 and last is got[-1]
    for w, g in zip(want, got):
        assert torch.allclose(w, g, atol=1e-5), float((w - g).abs().max())


def test_bare_module_runs_alike_in_onnx_runtime(teacher, tmp_path):
    import onnxruntime as ort
    torch.manual_seed(0)
    dec = parts.fold_weight_norm(parts.build_part("hybrid_decoder", small_build(teacher)))
    torch.nn.init.normal_(dec.conv_post.weight, 0.0, 0.3)  # a head loud enough that a mismatch would show
    path = tmp_path / "hybrid.onnx"
    with torch.no_grad():
        torch.onnx.export(dec, (torch.randn(1, 192, 17),), str(path), dynamo=False, opset_version=15,
                          input_names=["z"], output_names=["audio"],
                          dynamic_axes={"z": {2: "frames"}, "audio": {2: "samples"}})
        z = torch.randn(1, 192, 29)
        want = dec(z).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z.numpy()})[0]
    assert got.shape == want.shape == (1, 1, 29 * 256)
    assert np.abs(want).max() > 0.05
    assert np.abs(got - want).max() < 1e-3, float(np.abs(got - want).max())
