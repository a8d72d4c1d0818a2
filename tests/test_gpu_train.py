"""The GPU job runs here on a few CPU steps: it trains every student with the shared stack, keeps the full state
under --work, `pack` brings back loadable artefacts, and a second run resumes the generators from them."""
import json

import torch

from lib import artefacts, distill, gpu_train, voices


def test_gpu_job_trains_packs_and_resumes_on_cpu(tmp_path):
    common = ["--device", "cpu", "--mixed-precision", "no", "--widths", "64", "--decoder-steps", "2",
              "--adversarial-steps", "1", "--discriminators", "mpd", "--flow-steps", "2", "--recovery-steps", "0",
              "--batch", "1", "--corpus-limit", "2", "--istft-steps", "2", "--istft-dim", "32", "--istft-blocks", "1", "--checkpoint-every", "1", "--eval-every", "2", "--log-every", "1",
              "--threads", "2"]
    gpu_train.main(["students", "--work", str(tmp_path / "w"), *common])
    assert (tmp_path / "w" / "dec64-prune" / "state" / "model_1.safetensors").exists(), "discriminator state kept"
    gpu_train.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    for name, kind in (("dec64-prune", "decoder"), ("flow96", "flow"), ("istft32x1", "istft_decoder")):
        module, config = artefacts.load_part(tmp_path / "out" / name)
        assert config["kind"] == kind and config["steps"] == 2
        env = json.loads((tmp_path / "out" / name / "env.json").read_text())
        assert env["steps"] == 2 and "students" in env["command"] and env["cpu_model"]
        assert "heldout_mel" in (tmp_path / "out" / name / "curve.csv").read_text() or kind == "flow"
    trained, _ = artefacts.load_part(tmp_path / "out" / "dec64-prune")
    gpu_train.main(["students", "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    *[c if c != "2" else "3" for c in common]])
    gpu_train.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    again, config = artefacts.load_part(tmp_path / "out2" / "dec64-prune")
    assert config["steps"] == 3
    z = torch.randn(1, 192, 16)
    with torch.no_grad():
        assert not torch.equal(again(z), trained(z)), "the resumed run trained on"
    loaded, absent = distill.recorded_students(tmp_path / "out")
    assert set(loaded) == {"dec64-prune", "flow96", "istft32x1"} and not absent
    voices_, absent_, info = distill.recorded_voices(voices.load_piper_torch(voices.joe_paths()[0]),
                                                     {"cpu": tmp_path / "out", "h100": tmp_path / "none"})
    assert {"dec64-prune@cpu", "istft32x1@cpu", "istft32x1+flow96@cpu"} <= set(voices_)
    assert "students@h100" in absent_ and "does not exist" in absent_["students@h100"]
