"""The GPU job runs here on a few CPU steps: it trains every student with the shared stack, keeps the full state
under --work, `pack` brings back loadable artefacts, and a second run resumes the generators from them."""
import json
import shutil

import pandas as pd
import pytest
import torch

from lib.voices import artefacts, piper_torch, synth as voices
from lib.training import batches
from lib.training.loop import Recipe
from lib.techniques import adapt_targets, distill
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


def test_gpu_adaptation_job_trains_packs_loadable_adapters_on_cpu(tmp_path):
    """`adapt` trains notebook 02's methods on its aligned set (safetensors) with the F0 term and discriminators;
    `pack` brings back PEFT adapters and full fine-tuning weights with config, card, curve and env, which notebook 02
    loads for the same target (finetune.recorded_adaptations)."""
    from lib.techniques import finetune
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    ids = voices.PiperFrontend(voices.joe_paths()[1]).phoneme_ids("A small dog ran home.")[0]
    data = batches.aligned_set(teacher, [ids], ["u0"], target=adapt_targets.VoiceShift(semitones=2.0), progress=None)
    path = data.save(tmp_path / "set.safetensors")
    train_job.main(["adapt", "--work", str(tmp_path / "w"), "--data", str(path), "--target", "up 2",
                    "--methods", "full", "lora-r4", "--steps", "2", "--adversarial-steps", "1", "--batch", "1",
                    "--frames", "16", "--device", "cpu", "--mixed-precision", "no", "--checkpoint-every", "2",
                    "--log-every", "1", "--threads", "2"])
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    for name in ("full", "lora-r4"):
        cfg = json.loads((tmp_path / "out" / name / "config.json").read_text())
        assert cfg["target"] == "up 2" and cfg["steps"] == 2 and cfg["recipe"]["f0_weight"] == 2.0
        assert "loss_f0" in (tmp_path / "out" / name / "curve.csv").read_text()
        assert json.loads((tmp_path / "out" / name / "env.json").read_text())["cpu_model"]
    assert not (tmp_path / "out" / "lora-r4" / "state").exists() and not list((tmp_path / "out").glob("dec*"))
    loaded, absent = finetune.recorded_adaptations(teacher, {"cpu": tmp_path / "out"}, "up 2")
    assert set(loaded) == {"full@cpu", "lora-r4@cpu"} and not absent


def test_adaptation_long_run_builds_its_target_packs_a_ledger_row_and_goes_on_from_the_pack(tmp_path):
    """The long CPU run toward a real other speaker (issue 25): `adapt --target-speaker` builds the aligned and
    held-out sets itself (kept for the next start), `pack --ledger` writes the adapter with its cumulative steps and a
    ledger row with held-out mel L1 and SECS to the target, and a fresh --work started from the pack counts on."""
    from lib.techniques import finetune
    from lib.training import ledger
    common = ["--target-speaker", "kokoro-82m:jf_alpha", "--corpus-limit", "1", "--heldout-limit", "2",
              "--methods", "lora-r4", "--adversarial-steps", "0", "--batch", "1", "--frames", "16",
              "--device", "cpu", "--mixed-precision", "no", "--checkpoint-every", "2", "--eval-every", "2",
              "--log-every", "1", "--threads", "2"]
    book = tmp_path / "ledger.csv"
    train_job.main(["adapt", "--work", str(tmp_path / "w"), "--steps", "2", *common])
    sets = json.loads((tmp_path / "w" / "sets.json").read_text())
    assert "jf_alpha" in sets["target"] and sets["spec"]["heldout_lists"] == train_job.HELDOUT_LISTS
    assert "heldout_mel" in (tmp_path / "w" / "lora-r4" / "curve.csv").read_text()
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--ledger", str(book)])
    cfg = json.loads((tmp_path / "out" / "lora-r4" / "config.json").read_text())
    assert cfg["target"] == sets["target"] and cfg["steps"] == 2 and cfg["hours"] > 0
    rows = ledger.read(book)
    assert list(rows["run"]) == ["w/lora-r4"] and rows["part"].iloc[0] == "adapter"
    assert 0 < rows["heldout_mel_l1"].iloc[0] < 5 and -1 <= rows["heldout_secs"].iloc[0] <= 1
    held = json.loads((tmp_path / "out" / "lora-r4" / "heldout.json").read_text())  # the SECS's scale, beside the pack
    assert held["steps"] == 2 and held["heldout_secs"] == rows["heldout_secs"].iloc[0]
    assert -1 <= held["teacher_secs"] <= 1 and held["teacher_secs"] < held["target_self_secs"] <= 1
    trained = finetune.load_adaptation(piper_torch.load_piper_torch(voices.joe_paths()[0]), tmp_path / "out" / "lora-r4")
    (tmp_path / "w2").mkdir()  # the sets kept as a machine keeps them (building them again, Kokoro speaking, is tested above)
    for kept in ("sets.json", "aligned_set.safetensors", "heldout_set.safetensors"):
        shutil.copy(tmp_path / "w" / kept, tmp_path / "w2" / kept)
    train_job.main(["adapt", "--work", str(tmp_path / "w2"), "--steps", "5", "--init-from", str(tmp_path / "out"), *common])
    lr = [pd.read_csv(tmp_path / w / "lora-r4" / "curve.csv")["lr"].iloc[0] for w in ("w", "w2")]
    assert lr[1] == pytest.approx(lr[0] * Recipe(steps=1).lr_decay ** 2), "the learning rate goes on from the packed step"
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu",
                    "--ledger", str(book)])
    assert json.loads((tmp_path / "out2" / "lora-r4" / "config.json").read_text())["steps"] == 2 + 3
    again = finetune.load_adaptation(piper_torch.load_piper_torch(voices.joe_paths()[0]), tmp_path / "out2" / "lora-r4")
    z = dict(trained.dec.named_parameters())
    assert any(not torch.equal(p, z[n]) for n, p in again.dec.named_parameters()), "the resumed run trained on"
    assert list(ledger.read(book)["steps"]) == [2, 5]


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
