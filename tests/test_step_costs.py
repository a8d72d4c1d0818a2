"""The step-cost job (lib.jobs.step_costs): every option timed through the training stack's own step on one
student and batch, a regression row as the unit, absent rows with their reason, and a CSV + env.json."""
import json

import numpy as np
import pandas as pd
import torch

from lib import cli
from lib.core import machine
from lib.jobs import step_costs
from lib.voices.istft_decoder import FrameRateDecoder


def test_the_command_line_parses_into_the_jobs_dataclass():
    cmd = cli.parse(["study", "step-costs", "--out", "x.csv", "--discriminators", "wave-unet", "mrd",
                      "--precisions", "fp32", "--segments", "0", "2048", "--no-pair"])
    assert isinstance(cmd, step_costs.StepCosts) and cmd.discriminators == ["wave-unet", "mrd"]
    opts = step_costs.options(cmd)
    assert opts[0] == step_costs.Option() and len(opts) == 1 + 2 * 2
    assert step_costs.Option(("mpd", "mrd")) in step_costs.options(step_costs.StepCosts())
    both = cli.parse(["step-costs", "--discriminators", "mpd-2", "--precisions", "fp32", "--segments",
                      "2048", "--no-pair", "--objectives", "recipe", "gan"])
    assert [o.objective for o in step_costs.options(both)] == ["recipe", "recipe", "gan"]  # the regression step once


def test_options_are_timed_interleaved_with_absent_rows_for_what_the_cpu_lacks(monkeypatch):
    monkeypatch.setattr(machine, "has_native_bf16", lambda: False)
    cfg = step_costs.StepCosts(discriminators=["wave-unet-small", "mpd-2"], pair=False, precisions=["fp32", "bf16"],
                               segments=[0], reps=2, warmup=0, quiet_wait_s=0)
    torch.manual_seed(0)
    student = FrameRateDecoder(8, 16, 1)  # hop 256: the recipe's STFTs need a few thousand samples
    batch = (torch.randn(2, 8, 12), torch.randn(2, 1, 12 * 256) * 0.1)
    frame = step_costs.measure(cfg, student, batch)
    assert list(frame["discriminator"]) == ["none (regression)"] + ["wave-unet-small", "mpd-2"] * 2
    measured = frame[frame["status"] != "absent"]
    assert len(measured) == 3 and (measured["s_per_step"] > 0).all() and (measured["n"] == 2).all()
    assert measured["ratio_to_regression"].iloc[0] == 1.0 and (measured["disc_params_m"].iloc[1:] > 0).all()
    absent = frame[frame["status"] == "absent"]
    assert list(absent["precision"]) == ["bf16", "bf16"] and absent["s_per_step"].isna().all()
    assert absent["reason"].str.contains("bf16").all() and (frame["segment"] == 12 * 256).all()
    assert frame["cpu_model"].iloc[0] == machine.cpu_model()


def test_the_gan_objective_is_timed_as_its_own_row():
    cfg = step_costs.StepCosts(discriminators=["mpd-2"], pair=False, precisions=["fp32"], segments=[0],
                               objectives=["recipe", "gan"], reps=1, warmup=0, quiet_wait_s=0)
    torch.manual_seed(0)
    batch = (torch.randn(2, 8, 12), torch.randn(2, 1, 12 * 256) * 0.1)
    frame = step_costs.measure(cfg, FrameRateDecoder(8, 16, 1), batch)
    assert list(frame["objective"]) == ["recipe", "recipe", "gan"] and (frame["s_per_step"] > 0).all()


def test_the_job_writes_its_csv_and_environment(tmp_path):
    cfg = step_costs.StepCosts(out=str(tmp_path / "costs.csv"), dim=16, blocks=1, batch=1, frames=8,
                               discriminators=["wave-unet-small"], pair=False, precisions=["fp32"], segments=[0],
                               reps=1, warmup=0, corpus_limit=1, quiet_wait_s=0)
    step_costs.run(cfg)
    frame = pd.read_csv(tmp_path / "costs.csv")
    assert list(frame["discriminator"]) == ["none (regression)", "wave-unet-small"]
    assert np.isfinite(frame["s_per_step"]).all() and frame["student"].iloc[0] == "istft16x1"
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["cpu_model"] == machine.cpu_model() and env["threads"] == 1 and env["config"]["frames"] == 8
