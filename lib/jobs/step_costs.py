"""What an adversarial step costs on this CPU (issue 39): the frame-rate decoder's regression step against
adversarial steps with each discriminator, precision and segment a run can select, through the training stack's own
step, interleaved on the same student and the same batch, under the machine's timing lock (long runs pause).

    tts-lab step-costs --out outputs/recorded/intel-xeon-amx-2c/23_step_costs/step_costs.csv

Writes one row per option (seconds per step, ratio to the regression step, the discriminators' size, the CPU
model and features, whether the timing was contended) and env.json beside the CSV. An option this CPU cannot run
(bf16 without native bf16 units) is a row with its reason and no number.
"""
from __future__ import annotations

import copy
import itertools
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core import machine, pause
from lib.core.results import atomic_write_text, write_env
from lib.harness import bench
from lib.jobs.run_state import LONG_RUN_NOISE, corpus
from lib.techniques.regress_recipe import WEIGHTS, recipe, spectral_forward
from lib.training.batches import random_segments
from lib.training.loop import Trainer
from lib.voices import teacher_bundle
from lib.voices.istft_decoder import FrameRateDecoder
from lib.jobs.run_configs import Objective, StepCosts, StepPrecision

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """One timed step: no discriminator (the regression step), or these, at this precision, on this window, with
    this generator objective."""
    discriminators: tuple[str, ...] = ()
    precision: StepPrecision = "fp32"
    segment: int = 0
    objective: Objective = "recipe"

    @property
    def label(self) -> str:
        return "+".join(self.discriminators) or "none (regression)"


def options(cfg: StepCosts) -> list[Option]:
    """The regression step first, then every discriminator set x precision x segment x objective."""
    sets = ([("mpd", "mrd")] if cfg.pair else []) + [(d,) for d in cfg.discriminators]
    return [Option()] + [Option(s, p, g, j) for j, p, g, s in
                         itertools.product(cfg.objectives, cfg.precisions, cfg.segments, sets)]


def absent_reason(option: Option) -> str:
    """Why this CPU cannot run `option` ('' where it can)."""
    if option.precision == "bf16":
        try:
            machine.require_precision("torch-cpu", "bf16")
        except machine.PrecisionUnavailable as exc:
            return str(exc)
    return ""


def _trainer(student, batch, option: Option, work: Path, threads: int) -> Trainer:
    """A Trainer ready to step: the regression-first recipe, with `option`'s discriminators from the first step."""
    rec = recipe(10, adversarial_steps=10 if option.discriminators else 0,
                 discriminators=option.discriminators or ("mpd",), disc_bf16=option.precision == "bf16",
                 disc_segment=option.segment, gan_objective=option.objective == "gan")
    trainer = Trainer(copy.deepcopy(student), lambda rng: batch, rec, work,
                      forward=spectral_forward(WEIGHTS["spectral"]), threads=threads, progress=None)
    trainer._setup()
    return trainer


def _wait_for_quiet(cfg: StepCosts) -> None:
    """Give other processes' bursts (not paused by the lock: another session's notebook, say) a moment to end; a
    step timed while they still run is marked contended."""
    if cfg.quiet_wait_s > 0:
        try:
            machine.wait_for_quiet(cfg.threads, cfg.quiet_wait_s)
        except machine.MachineBusy:
            pass


def measure(cfg: StepCosts, student: torch.nn.Module, batch: tuple) -> pd.DataFrame:
    """Every option's seconds per step (median of `reps`, after `warmup`), interleaved: one step of each option in
    turn, so a drift of the machine touches all alike."""
    opts = options(cfg)
    rows = {o: {"absent": absent_reason(o), "times": [], "contended": False} for o in opts}
    live = [o for o in opts if not rows[o]["absent"]]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {o: _trainer(student, batch, o, Path(tmp) / str(i), cfg.threads) for i, o in enumerate(live)}
        with pause.timing("step costs"):
            for rep in range(cfg.warmup + cfg.reps):
                for o in live:
                    _wait_for_quiet(cfg)
                    with machine.LoadMonitor(cfg.threads) as mon:
                        t0 = time.perf_counter()
                        trainers[o]._step(batch, step=10**6)
                        dt = time.perf_counter() - t0
                    if rep >= cfg.warmup:
                        rows[o]["times"].append(dt)
                        rows[o]["contended"] |= mon.load.contended
                    _LOGGER.info("%s %s %s %s: %.2f s", o.label, o.precision, o.segment or "all", o.objective, dt)
        sizes = {o: sum(p.numel() for p in t.disc.parameters()) if t.disc is not None else 0
                 for o, t in trainers.items()}
    base = float(np.median(rows[opts[0]]["times"])) if rows[opts[0]]["times"] else float("nan")
    samples, flags = int(batch[1].shape[-1]), machine.feature_line()
    out = []
    for o in opts:
        r = rows[o]
        s = float(np.median(r["times"])) if r["times"] else float("nan")
        status = "absent" if r["absent"] else ("contended" if r["contended"] else "ok")
        out.append({"student": f"istft{cfg.dim}x{cfg.blocks}", "discriminator": o.label, "precision": o.precision,
                    "segment": o.segment or samples, "objective": o.objective, "batch": cfg.batch,
                    "threads": cfg.threads,
                    "s_per_step": s, "ratio_to_regression": s / base, "n": len(r["times"]),
                    "disc_params_m": round(sizes.get(o, 0) / 1e6, 3) if not r["absent"] else float("nan"),
                    "cpu_model": machine.cpu_model(), "cpu_flags": flags, "status": status,
                    "reason": r["absent"] or ("other processes used the cores meanwhile" if r["contended"] else "")})
    return pd.DataFrame(out)


def run(cfg: StepCosts) -> pd.DataFrame:
    """Make the batch from the teacher's own latents, time every option, write the CSV and env.json."""
    torch.set_num_threads(cfg.threads)
    teacher = teacher_bundle.teacher()
    latents, _ = corpus(teacher, cfg.corpus_limit, **LONG_RUN_NOISE)
    batch = random_segments(latents, cfg.batch, cfg.frames, np.random.default_rng(0))
    torch.manual_seed(0)
    student = FrameRateDecoder(teacher.hparams["inter_channels"], cfg.dim, cfg.blocks, hop=latents.hop)
    frame = measure(cfg, student, batch)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, frame.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": {k: v for k, v in vars(cfg).items()}}
    write_env(out.parent / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, frame[["discriminator", "precision", "segment", "s_per_step",
                                             "ratio_to_regression", "status"]].to_string(index=False))
    return frame
