"""The GPU job runs here on a few CPU steps: it trains every student with the shared stack, keeps the full state
under --work, `pack` brings back loadable artefacts, and a second run resumes the generators from them."""
import json
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import save_file

from lib.voices import artefacts, parts, piper_torch, synth as voices
from lib.voices.istft_decoder import FrameRateDecoder
from lib.training.loop import Recipe
from lib.techniques import distill
from lib.jobs import run_configs, train_job


def _with(args: list[str], values: dict[str, str]) -> list[str]:
    """`args` with the values of the named options replaced (the rest, threads and corpus among them, unchanged)."""
    return [values.get(args[i - 1], a) if i else a for i, a in enumerate(args)]


def test_gpu_job_trains_packs_and_resumes_on_cpu(tmp_path):
    common = ["--device", "cpu", "--mixed-precision", "no", "--widths", "64", "--decoder-steps", "2",
              "--adversarial-steps", "1", "--discriminators", "mpd", "--flow-steps", "2", "--recovery-steps", "0",
              "--batch", "1", "--corpus-limit", "2", "--istft-steps", "2", "--istft-dim", "32", "--istft-blocks", "1",
              "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1",
              "--threads", "2"]
    train_job.main(["students", "--work", str(tmp_path / "w"), *common])
    assert (tmp_path / "w" / "dec64-prune" / "state" / "model_1.safetensors").exists(), "discriminator state kept"
    started = run_configs.RunConfig.read(tmp_path / "w" / "dec64-prune")  # written at the start
    assert (started.kind, started.build["upsample_initial_channel"], started.job) == ("decoder", 64, "students")
    assert (started.recipe.steps, started.recipe.warmup_steps, started.recipe.seed) == (2, 1, 0)
    assert started.options["widths"] == [64] and started.recipe_name == "adversarial"
    flow = run_configs.RunConfig.read(tmp_path / "w" / "flow96")
    assert flow.build["hidden_channels"] == 96 and flow.recipe.lr == 5e-4 and not flow.recipe.adversarial
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
    """Regression.phase_name and Run.packed_start, which `regress` and `regress-istft` share: with --adversarial-steps
    the part is `<student>-adv`, started from its own pack where there is one, else from `<student>-regress`'s."""
    cfg = run_configs.Regress(work="w", adversarial_steps=100, init_from=str(tmp_path))
    assert cfg.phase_name("dec8-regress") == "dec8-adv"
    assert run_configs.Regress(work="w").phase_name("dec8-regress") == "dec8-regress"
    assert cfg.packed_start("dec8-adv", "dec8-regress") is None
    (tmp_path / "dec8-regress").mkdir()
    (tmp_path / "dec8-regress" / "config.json").write_text("{}")
    assert cfg.packed_start("dec8-adv", "dec8-regress") == tmp_path / "dec8-regress"
    (tmp_path / "dec8-adv").mkdir()
    (tmp_path / "dec8-adv" / "config.json").write_text("{}")
    assert cfg.packed_start("dec8-adv", "dec8-regress") == tmp_path / "dec8-adv"


def _part_folder(work, name: str) -> FrameRateDecoder:
    """A part folder as a run leaves it (its state and curve), for a frame-rate decoder whose name says nothing."""
    dec = parts.fold_weight_norm(FrameRateDecoder(192, 8, 1))
    (work / name / "state").mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in dec.state_dict().items()},
              str(work / name / "state" / "model.safetensors"))
    (work / name / "curve.csv").write_text("step,seconds\n1,1.0\n2,2.0\n")
    return dec


def test_pack_rebuilds_each_part_from_the_config_it_started_with(tmp_path):
    """`pack` reads the part's kind and build from --work/<part>/config.json, not from its name or weights; a missing
    or cut-short config is named."""
    dec = _part_folder(tmp_path / "w", "mystery")
    started = run_configs.RunConfig("mystery", "istft_decoder", dec.config, "regression-first", Recipe(steps=2),
                                    "regress-istft", {"dim": 8})
    path = started.write(tmp_path / "w")
    assert run_configs.RunConfig.read(tmp_path / "w" / "mystery") == started
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    packed, config = artefacts.load_part(tmp_path / "out" / "mystery")
    assert config["kind"] == "istft_decoder" and config["build"] == dec.config and config["steps"] == 2
    assert config["recipe"] == "regression-first"
    z = torch.randn(1, 192, 8)
    with torch.no_grad():
        assert torch.equal(packed(z), dec(z))
    path.unlink()  # no config: the pack names the file it reads a part's kind and build from
    with pytest.raises(artefacts.ArtefactError, match=f"{path} is missing: the part's kind and build are read"):
        train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    path.write_text(json.dumps(asdict(started))[:40])
    with pytest.raises(artefacts.ArtefactError, match=f"{path} cannot be read"):
        train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    started.write(tmp_path / "w")
    (tmp_path / "w" / "mystery").rename(tmp_path / "w" / "other")
    with pytest.raises(artefacts.ArtefactError, match="describes part 'mystery', not the folder 'other'"):
        run_configs.RunConfig.read(tmp_path / "w" / "other")
