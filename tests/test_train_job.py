"""The GPU job runs here on a few CPU steps: it trains every student with the shared stack, keeps the full state
under --work, `pack` brings back loadable artefacts, and a second run resumes the generators from them."""
import json

import torch

from lib.voices import artefacts, piper_torch, synth as voices
from lib.techniques import distill
from lib.jobs import train_job


def _with(args: list[str], values: dict[str, str]) -> list[str]:
    """`args` with the values of the named options replaced (the rest, threads and corpus among them, unchanged)."""
    return [values.get(args[i - 1], a) if i else a for i, a in enumerate(args)]


def test_gpu_job_trains_packs_and_resumes_on_cpu(tmp_path):
    common = ["--device", "cpu", "--mixed-precision", "no", "--widths", "64", "--decoder-steps", "2",
              "--adversarial-steps", "1", "--discriminators", "mpd", "--flow-steps", "2", "--recovery-steps", "0",
              "--batch", "1", "--corpus-limit", "2", "--istft-steps", "2", "--istft-dim", "32", "--istft-blocks", "1", "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1",
              "--threads", "2"]
    train_job.main(["students", "--work", str(tmp_path / "w"), *common])
    assert (tmp_path / "w" / "dec64-prune" / "state" / "model_1.safetensors").exists(), "discriminator state kept"
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    for name, kind in (("dec64-prune", "decoder"), ("flow96", "flow"), ("istft32x1", "istft_decoder")):
        module, config = artefacts.load_part(tmp_path / "out" / name)
        assert config["kind"] == kind and config["steps"] == 2
        env = json.loads((tmp_path / "out" / name / "env.json").read_text())
        assert env["steps"] == 2 and "students" in env["command"] and env["cpu_model"]
        assert "heldout_mel" in (tmp_path / "out" / name / "curve.csv").read_text() or kind == "flow"
    trained, _ = artefacts.load_part(tmp_path / "out" / "dec64-prune")
    train_job.main(["students", "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    *_with(common, {"--decoder-steps": "3", "--flow-steps": "3", "--istft-steps": "3",
                                    "--checkpoint-every": "3", "--eval-every": "3"})])
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    again, config = artefacts.load_part(tmp_path / "out2" / "dec64-prune")
    assert config["steps"] == 2 + 3, "steps go on from the packed run's"
    assert artefacts.load_part(tmp_path / "out2" / "flow96")[1]["steps"] == 2 + 3
    z = torch.randn(1, 192, 16)
    with torch.no_grad():
        assert not torch.equal(again(z), trained(z)), "the resumed run trained on"
    loaded, absent = distill.recorded_students(tmp_path / "out")
    assert set(loaded) == {"dec64-prune", "flow96", "istft32x1"} and not absent
    voices_, absent_, info = distill.recorded_voices(piper_torch.load_piper_torch(voices.joe_paths()[0]),
                                                     {"cpu": tmp_path / "out", "h100": tmp_path / "none"})
    assert {"dec64-prune@cpu", "istft32x1@cpu", "istft32x1+flow96@cpu"} <= set(voices_)
    assert "students@h100" in absent_ and "does not exist" in absent_["students@h100"]



def test_packed_hours_count_a_gpu_apart_from_the_cpu():
    """run_state.accounted_hours, which both packs (decoders, adapters) use: a CPU run adds wall time times its share
    of the cores; a run whose run.json says it trained on a GPU adds device-hours only, and names the GPU."""
    from lib.jobs.run_state import accounted_hours
    before = {"hours": 1.0, "device_hours": 0.25}
    assert accounted_hours({"threads": 1, "cores": 2}, before, 3600, {}, "cpu") == (1.5, 0.25, "cpu")
    assert accounted_hours({"threads": 1, "cores": 16, "device": "cuda", "gpu": "Some GPU"}, before, 1800,
                           {"gpu": None}, "cpu") == (1.0, 0.75, "Some GPU")


def test_an_adversarial_phase_is_a_part_of_its_own_that_starts_from_the_regression_pack(tmp_path):
    """run_state.phase_name and packed_start, which `regress` and `regress-istft` share: with --adversarial-steps the
    part is `<student>-adv`, started from its own pack where there is one, else from `<student>-regress`'s."""
    from argparse import Namespace
    from lib.jobs.run_state import packed_start, phase_name
    args = Namespace(adversarial_steps=100, init_from=str(tmp_path))
    assert phase_name("dec8-regress", args) == "dec8-adv"
    assert phase_name("dec8-regress", Namespace(adversarial_steps=0)) == "dec8-regress"
    assert packed_start(args, "dec8-adv", "dec8-regress") is None
    (tmp_path / "dec8-regress").mkdir()
    (tmp_path / "dec8-regress" / "config.json").write_text("{}")
    assert packed_start(args, "dec8-adv", "dec8-regress") == tmp_path / "dec8-regress"
    (tmp_path / "dec8-adv").mkdir()
    (tmp_path / "dec8-adv" / "config.json").write_text("{}")
    assert packed_start(args, "dec8-adv", "dec8-regress") == tmp_path / "dec8-adv"
