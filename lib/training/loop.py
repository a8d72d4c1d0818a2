"""One training stack for every notebook that trains a part of the voice (02 adaptation, 03 recovery, 04 students):
the VITS/HiFi-GAN recipe piper trains with, built from piper-tts's own parts, on Hugging Face accelerate.

- losses: mel L1 x45 (piper's mel_processing), piper's LSGAN and feature-matching losses against its MPD and MRD,
  or lighter discriminators by name (lib.training.discriminators), under bf16 on a CPU with native bf16, on a window;
  APNet's amplitude and phase losses (lib.training.phase_losses); with gan_objective, HiFi-GAN's loss alone;
- piper's AdamW and decay; fresh discriminators start after `warmup_steps` (Vocos' `pretrain_mel_steps`);
- `accelerate`: this CPU, one GPU or several; checkpoints hold models, optimizers, schedulers, RNGs and the loop's
  state, so a resumed run equals an uninterrupted one;
- a curve (`curve.csv`, written atomically, and TensorBoard) with a held-out check every `eval_every` steps.
Knows nothing of metrics or timing harnesses: a caller that wants PESQ on held-out data passes `eval_fn`.
"""
from __future__ import annotations

import logging
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from piper.train.vits.losses import discriminator_loss, feature_loss, generator_loss
from safetensors import safe_open
from safetensors.torch import save_file
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from lib.core import machine, worktime
from lib.core.pause import active
from lib.core.audio import DEFAULT_SAMPLE_RATE
from lib.core.results import atomic_write_json, atomic_write_text
from lib.training import disc_state, discriminators as discs
from lib.training.batches import random_segments
from lib.training.losses import complex_stft_loss, mel_l1, mr_stft_loss
from lib.training.phase_losses import PredictedSpectra, apnet_losses
from lib.training.recipe import DISCRIMINATORS, Recipe, cosine_factor, ema_with_warmup  # noqa: F401 (re-exported)
from lib.training.stop import stop_on_signal

_LOGGER = logging.getLogger(__name__)
MAX_SKIPPED_STEPS = 20  # optimiser steps skipped in a row for non-finite gradients before a run stops as diverged
TRACKER = "tensorboard"  # accelerate's tracker of the curve (tensorboardX writes it), in <work_dir>/tensorboard/


def make_discriminators(names: Sequence[str]) -> torch.nn.ModuleDict:
    """Fresh discriminators by name: piper's 'mpd' (MultiPeriodDiscriminator) and 'mrd'
    (MultiResolutionDiscriminator), or a lighter one of lib.training.discriminators."""
    return discs.build(names)


def disc_window(y: torch.Tensor, y_hat: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random window of `samples` samples of each item of both waveforms [B, 1, T] (all of them where
    `samples` is 0 or not shorter): what the discriminators see. torch's RNG draws it, which a checkpoint keeps."""
    if not samples or samples >= y.shape[-1]:
        return y, y_hat
    starts = torch.randint(0, y.shape[-1] - samples + 1, (y.shape[0],)).tolist()
    return (torch.stack([y[i, ..., s:s + samples] for i, s in enumerate(starts)]),
            torch.stack([y_hat[i, ..., s:s + samples] for i, s in enumerate(starts)]))


# --- the loop ------------------------------------------------------------------------------------------------

class _LoopState:
    """What accelerate does not know about: the step, the batch sampler's generator and the curve so far."""

    def __init__(self, seed: int):
        self.step, self.seconds, self.rows, self.disc_steps = 0, 0.0, [], 0
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return {"step": self.step, "seconds": self.seconds, "rows": self.rows, "rng": self.rng.bit_generator.state,
                "disc_steps": self.disc_steps}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.seconds, self.rows = int(state["step"]), float(state["seconds"]), list(state["rows"])
        self.disc_steps = int(state.get("disc_steps", 0))  # a state saved before the count: none counted
        self.rng.bit_generator.state = state["rng"]


@dataclass
class Curve:
    """The training curve of one run folder (every call that trained it), as `curve.csv` holds it."""
    frame: pd.DataFrame
    seconds: float
    resumed_from: int
    steps_done: int = field(default=0)

    @property
    def steps(self) -> list:
        return self.frame["step"].tolist() if len(self.frame) else []

    @property
    def loss(self) -> list:
        return self.frame["loss_g"].tolist() if len(self.frame) else []

    @property
    def s_per_step(self) -> float:
        """Wall seconds per training step, over every call that trained this folder."""
        return self.seconds / max(1, self.steps_done)


Forward = Callable[[torch.nn.Module, tuple], tuple]


class Trainer:
    """Train `generator` on batches from `batch_fn(rng)`.

    Waveform mode (`forward`): `forward(generator, batch) -> (y_hat, y)` or `(y_hat, y, {name: (weight, loss)})`,
    waveforms [B, 1, T], with a fourth element the generator's PredictedSpectra (for APNet's losses); reconstruction is
    mel x `mel_weight` (+ MR-STFT x `stft_weight`, waveform L1 x `wave_weight`, complex STFT x `cstft_weight`, APNet's
    amplitude and phase x `amp_weight`/`phase_weight`, and the forward's own weighted terms), and after `warmup_steps`
    the LSGAN and feature-matching terms against fresh discriminators (piper's, or lighter ones). Regression mode
    (`loss_fn`): `loss_fn(generator, batch) -> loss`, no discriminator (the flow student). `eval_batches` are
    held-out batches whose mel L1 is logged every `eval_every` steps; `eval_fn(generator) -> dict` adds any other
    held-out figure (PESQ from the harness, say). A `yielder` (`pause.Yielder`) makes a long run wait between steps
    while anything on the machine is timed. `should_stop()`, asked at every logged step, ends the run early
    (checkpointed) when it gives a reason (early stopping). `disc_init`: a pack whose discriminators (and their
    moments) a run without local state starts from (lib.training.disc_state), instead of fresh ones.

    Everything needed to resume sits under `work_dir/state` (accelerate's `save_state`); `curve.csv` beside it."""

    def __init__(self, generator: torch.nn.Module, batch_fn: Callable[[np.random.Generator], tuple], recipe: Recipe,
                 work_dir: Path, *, forward: Forward | None = None, loss_fn: Callable | None = None,
                 sample_rate: int = DEFAULT_SAMPLE_RATE, mel_hop: int = 256,
                 eval_batches: Sequence[tuple] = (), eval_fn: Callable | None = None, device: str = "cpu",
                 threads: int = 2, progress: str | None = "train", yielder=None,
                 should_stop: Callable[[], str | None] | None = None, disc_init: Path | None = None):
        if (forward is None) == (loss_fn is None):
            raise ValueError("give the Trainer either forward (waveform training) or loss_fn (regression)")
        self.generator, self.batch_fn, self.recipe = generator, batch_fn, recipe
        self.work_dir = Path(work_dir)
        self.forward, self.loss_fn = forward, loss_fn
        self.sample_rate, self.hop, self.device, self.threads, self.progress = (sample_rate, mel_hop, device, threads,
                                                                                progress)
        self.eval_batches, self.eval_fn, self.should_stop = list(eval_batches), eval_fn, should_stop
        self.yielder = yielder if yielder is not None else active()  # a long run pauses while anything is timed
        self.adversarial = forward is not None and recipe.adversarial and bool(recipe.discriminators)
        self.skipped_in_a_row = 0  # optimiser steps skipped for non-finite gradients (_clip)
        self.disc_init, self.disc_resumed = disc_init, {}

    def _setup(self):
        r = self.recipe
        if self.device == "cpu":
            torch.set_num_threads(int(self.threads))
        # the curve goes to accelerate's tracker too (skipped where tensorboardX is not installed, as on a bare GPU
        # site)
        self.acc = Accelerator(cpu=self.device == "cpu",
                               mixed_precision=r.mixed_precision if self.device != "cpu" else "no",
                               log_with=TRACKER, project_dir=str(self.work_dir))
        self.acc.init_trackers(TRACKER)
        if self.adversarial and r.disc_bf16 and self.device == "cpu":
            machine.require_precision("torch-cpu", "bf16")  # emulated bf16 would be slower, not cheaper
        set_seed(r.seed)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter of the generator is frozen")
        # piper's exponential decay goes on from a packed run's last step (the cosine counts the offset itself)
        lr0 = r.lr if r.schedule == "cosine" else r.lr * r.lr_decay ** r.schedule_offset
        opt_g = torch.optim.AdamW(params, lr=lr0, betas=r.betas, eps=r.eps)
        if r.schedule == "cosine":
            sched_g = torch.optim.lr_scheduler.LambdaLR(opt_g, lambda k: cosine_factor(k, r))
        else:
            sched_g = torch.optim.lr_scheduler.ExponentialLR(opt_g, gamma=r.lr_decay)
        objs = [self.generator, opt_g, sched_g]
        if self.adversarial:
            disc = make_discriminators(r.discriminators)
            opt_d = torch.optim.AdamW(disc.parameters(), lr=r.lr_d, betas=r.betas, eps=r.eps)
            if self.disc_init is not None and not (self.work_dir / "state" / "custom_checkpoint_0.pkl").exists():
                self.disc_resumed = disc_state.load(self.disc_init, disc, opt_d)  # before the scheduler reads lr
            sched_d = torch.optim.lr_scheduler.ExponentialLR(opt_d, gamma=r.lr_decay_d)
            objs += [disc, opt_d, sched_d]
        prepared = self.acc.prepare(*objs)
        self.gen, self.opt_g, self.sched_g = prepared[:3]
        self.disc, self.opt_d, self.sched_d = (prepared[3:] if self.adversarial else (None, None, None))
        self.state = _LoopState(r.seed)
        self.acc.register_for_checkpointing(self.state)
        self.ema = None
        if r.ema_decay:
            self.ema = AveragedModel(self.acc.unwrap_model(self.gen), multi_avg_fn=ema_with_warmup(r.ema_decay),
                                     use_buffers=True)
            self.acc.register_for_checkpointing(self.ema)
        self.state_dir = self.work_dir / "state"
        if (self.state_dir / "custom_checkpoint_0.pkl").exists():
            self._check_shapes()  # shapes checked here, so the load may skip bitsandbytes' quantization-state keys
            self.acc.load_state(str(self.state_dir), strict=False)

    def _check_shapes(self):
        """Refuse a state folder written for another set of trainable parameters, naming one that differs."""
        path = self.state_dir / "model.safetensors"
        if not path.exists():
            return
        with safe_open(str(path), "pt") as f:
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        own = {k: tuple(v.shape) for k, v in self.acc.unwrap_model(self.gen).state_dict().items()}
        differ = sorted(k for k in set(saved) | set(own) if saved.get(k) != own.get(k))
        if differ:
            raise ValueError(f"{self.state_dir} was written for another model ({len(differ)} tensors differ, e.g. "
                             f"{differ[0]}): use a fresh folder for a different setup")

    def _step(self, batch, step: int) -> dict:
        """One optimisation step; returns the losses it saw. Adversarial order as HiFi-GAN: the generator's output
        once, the discriminators' step on it (detached), then the generator's step against the updated ones."""
        r = self.recipe
        if self.adversarial and r.warmup_steps <= step < r.warmup_steps + r.disc_warmup_steps:
            return self._discriminators_only(batch)
        params_g = [p for p in self.gen.parameters() if p.requires_grad]
        if self.loss_fn is not None:
            with self.acc.autocast():
                out = {"loss_g": self.loss_fn(self.gen, batch)}
        else:
            with self.acc.autocast():
                y_hat, y, *terms = self.forward(self.gen, batch)
            y_hat = y_hat[..., : y.shape[-1]]
            out = {"loss_mel": mel_l1(y_hat, y, self.sample_rate, hop=self.hop)}
            loss = r.mel_weight * out["loss_mel"]
            adversarial = self.adversarial and step >= r.warmup_steps
            if not (adversarial and r.gan_objective):
                loss = self._regression_terms(loss, out, terms, y_hat, y)
            if adversarial:
                y, y_hat = disc_window(y, y_hat, r.disc_segment)
                loss_d = self._discriminator_step(y, y_hat)
                adv = fm = 0.0
                # the generator's step needs the gradient through the discriminators, not of their weights (the
                # next discriminator step clears those): frozen meanwhile, their backward costs about half as much
                self.disc.requires_grad_(False)
                with self._disc_autocast():
                    for d in self.disc.values():
                        _, y_d_g, fmap_r, fmap_g = d(y, y_hat)
                        adv = adv + generator_loss(y_d_g)[0]
                        fm = fm + feature_loss(fmap_r, fmap_g)
                out.update(loss_adv=adv, loss_fm=fm, loss_d=loss_d)
                loss = loss + r.adv_weight * (adv + fm)
                out["adv_share"] = float(r.adv_weight * (adv + fm).detach() / loss.detach())
            out["loss_g"] = loss
        self.opt_g.zero_grad(set_to_none=True)
        self.acc.backward(out["loss_g"])
        if self.disc is not None:
            self.disc.requires_grad_(True)
        if self._clip(params_g):
            self.opt_g.step()
        self.sched_g.step()
        if self.ema is not None:
            self.ema.update_parameters(self.acc.unwrap_model(self.gen))
        return out

    def _discriminator_step(self, y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """One step of the discriminators on real `y` against the generator's `y_hat` (detached); their loss."""
        with self._disc_autocast():
            loss_d = sum(discriminator_loss(*d(y, y_hat.detach())[:2])[0] for d in self.disc.values())
        self.opt_d.zero_grad(set_to_none=True)
        self.acc.backward(loss_d)
        if self._clip(list(self.disc.parameters())):
            self.opt_d.step()
        self.sched_d.step()
        self.state.disc_steps += 1
        return loss_d

    def _discriminators_only(self, batch) -> dict:
        """A warm-up step of fresh discriminators against the generator as it is: they start the adversarial phase
        already telling its output from the teacher's, so their first gradients to it are not noise. The generator,
        its schedule and its EMA are held."""
        with torch.no_grad(), self.acc.autocast():
            y_hat, y, *_ = self.forward(self.gen, batch)
        y_hat = y_hat[..., : y.shape[-1]]
        out = {"loss_mel": mel_l1(y_hat, y, self.sample_rate, hop=self.hop)}
        out["loss_d"] = self._discriminator_step(*disc_window(y, y_hat, self.recipe.disc_segment))
        return out

    def _regression_terms(self, loss: torch.Tensor, out: dict, terms: list, y_hat: torch.Tensor,
                          y: torch.Tensor) -> torch.Tensor:
        """`loss` plus the recipe's losses beside mel (a forward's own terms, APNet's, the STFT and waveform L1s),
        weighted, added in that order; each is also logged in `out`."""
        r = self.recipe
        for name, (weight, term) in (terms[0] if terms else {}).items():  # e.g. stage features of a student
            out[name] = term
            loss = loss + weight * term
        if r.amp_weight or r.phase_weight:
            loss = loss + self._apnet(out, terms[1] if len(terms) > 1 else None, y)
        wave = lambda a, b: torch.nn.functional.l1_loss(a.float(), b.float())
        for name, weight, fn in (("loss_stft", r.stft_weight, mr_stft_loss), ("loss_wave", r.wave_weight, wave),
                                 ("loss_cstft", r.cstft_weight, complex_stft_loss)):  # in the recipe's order
            if weight:
                out[name] = fn(y_hat, y)
                loss = loss + weight * out[name]
        return loss

    def _disc_autocast(self):
        """The discriminators' precision: bf16 autocast where the recipe asks (the generator's passes stay as they
        are), else the accelerator's."""
        if self.recipe.disc_bf16:
            return torch.autocast(self.acc.device.type, dtype=torch.bfloat16)
        return self.acc.autocast()

    def _apnet(self, out: dict, spectra: PredictedSpectra | None, y: torch.Tensor) -> torch.Tensor:
        """APNet's weighted amplitude and phase losses on the forward's predicted spectra (logged into `out`)."""
        if not isinstance(spectra, PredictedSpectra):
            raise ValueError("amp_weight/phase_weight need a forward that returns its PredictedSpectra "
                             "(lib.training.phase_losses.spectra_forward)")
        terms = apnet_losses(spectra, y)
        out.update(terms)
        return (self.recipe.amp_weight * terms["loss_amp"]
                + self.recipe.phase_weight * (terms["loss_ip"] + terms["loss_gd"] + terms["loss_iaf"]))

    def _clip(self, params) -> bool:
        """Clip the gradients of `params`; False where they are not finite, so the caller skips that optimiser's
        step and the weights stay finite (a NaN step would poison every later one); too many in a row stop the run."""
        norm = (self.acc.clip_grad_norm_(params, self.recipe.grad_clip) if self.recipe.grad_clip
                else torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
        if torch.isfinite(torch.as_tensor(norm)).item():
            self.skipped_in_a_row = 0
            return True
        self.skipped_in_a_row += 1
        _LOGGER.warning("%s: non-finite gradients at step %d, optimiser step skipped (%d in a row)",
                        self.work_dir.name, self.state.step, self.skipped_in_a_row)
        if self.skipped_in_a_row > MAX_SKIPPED_STEPS:
            raise FloatingPointError(f"{self.work_dir}: non-finite gradients at {self.skipped_in_a_row} steps in a row "
                                     f"up to step {self.state.step}; the recipe diverges (its last checkpoint is "
                                     f"finite: change the recipe, e.g. drop bf16, and resume)")
        return False

    @torch.no_grad()
    def _evaluate(self) -> dict:
        out = {}
        gen = self.acc.unwrap_model(self.gen) if self.ema is None else self.ema.module  # the EMA is what is kept
        was = gen.training
        gen.eval()
        if self.eval_batches and self.forward is not None:
            vals = []
            for batch in self.eval_batches:
                y_hat, y, *_ = self.forward(gen, tuple(b.to(self.acc.device) for b in batch))
                vals.append(float(mel_l1(y_hat[..., : y.shape[-1]], y, self.sample_rate, hop=self.hop)))
            out["heldout_mel"] = float(np.mean(vals))
        elif self.eval_batches:
            out["heldout_loss"] = float(np.mean([float(self.loss_fn(gen, tuple(b.to(self.acc.device) for b in batch)))
                                                 for batch in self.eval_batches]))
        if self.eval_fn is not None:
            out.update({k: float(v) for k, v in self.eval_fn(gen).items()})
        gen.train(was)
        return out

    def save(self) -> None:
        """accelerate's full state (models, optimizers, schedulers, RNGs, the loop) and the curve, atomically
        enough: the state folder is written beside and swapped in."""
        tmp = self.work_dir / ".state.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        self.acc.save_state(str(tmp), safe_serialization=True)
        old = self.work_dir / ".state.old"
        if self.state_dir.exists():
            self.state_dir.replace(old)
        tmp.replace(self.state_dir)
        if old.exists():
            shutil.rmtree(old)
        if self.ema is not None:  # the averaged generator, as pack reads it
            tmp_ema = self.work_dir / ".ema.tmp.safetensors"
            save_file({k: v.detach().contiguous() for k, v in self.ema.module.state_dict().items()}, str(tmp_ema))
            tmp_ema.replace(self.work_dir / "ema.safetensors")
        if self.disc is not None:  # the discriminators as a pack keeps them: they resume, never restart at chance
            opt_d = getattr(self.opt_d, "optimizer", self.opt_d)  # accelerate's wrapper holds the AdamW
            disc_state.save(self.work_dir, self.acc.unwrap_model(self.disc), opt_d, self.state.disc_steps)
        atomic_write_text(self.work_dir / "curve.csv", pd.DataFrame(self.state.rows).to_csv(index=False))
        atomic_write_json(self.work_dir / "recipe.json", asdict(self.recipe))

    def fit(self) -> Curve:
        """Train up to `recipe.steps` (resuming from the state folder; a finished run only loads); returns the curve.
        SIGTERM or SIGINT stops it after the step under way, checkpointed there, then raises SystemExit(143) or
        KeyboardInterrupt: a stopped run loses nothing."""
        with stop_on_signal() as stop, worktime.spent(worktime.TRAIN):
            try:
                return self._fit(stop)
            finally:
                if hasattr(self, "acc"):
                    self.acc.end_training()  # flushes and closes the tracker's files

    def _fit(self, stop: dict) -> Curve:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._setup()
        r, st = self.recipe, self.state
        resumed_from = st.step
        self.gen.train()
        t0 = time.perf_counter()
        bar = tqdm(total=r.steps, initial=st.step, desc=self.progress, disable=self.progress is None,
                   mininterval=5.0, leave=False)
        end = min(r.steps, r.stop_step) if r.stop_step else r.steps
        while st.step < end:
            if self.yielder is not None and not stop:
                t0 += self.yielder.between_steps()  # paused time is not training time
            if stop:  # checked after a pause too (a run signalled while paused stops when the timing ends)
                st.seconds += time.perf_counter() - t0
                self.save()
                bar.close()
                _LOGGER.warning("stopped by signal %s after step %d, checkpointed in %s", stop["signum"], st.step,
                                self.work_dir)
                raise KeyboardInterrupt if stop["signum"] == signal.SIGINT else SystemExit(128 + stop["signum"])
            batch = tuple(b.to(self.acc.device) for b in self.batch_fn(st.rng))
            losses = self._step(batch, st.step)
            st.step += 1
            bar.update()
            if st.step % r.log_every == 0 or st.step == end:
                row = {"step": st.step, "lr": self.sched_g.get_last_lr()[0],
                       **({"disc_steps": st.disc_steps} if self.adversarial else {}),
                       **{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in losses.items()}}
                if r.eval_every and (st.step % r.eval_every == 0 or st.step == end):
                    row.update(self._evaluate())
                st.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                row["seconds"] = st.seconds
                st.rows.append(row)
                self.acc.log({k: v for k, v in row.items() if k != "step"}, step=st.step)
                if self.progress is None:  # no bar: a line per logged row says where the run is and when it ends
                    rate = st.seconds / st.step
                    _LOGGER.info("%s step %d/%d, %.2f s/step, about %.0f min left; %s", self.work_dir.name, st.step,
                                 end, rate, rate * (end - st.step) / 60,
                                 ", ".join(f"{k} {v:.3g}" for k, v in row.items()
                                           if k.startswith(("loss_mel", "loss_kl", "loss_d", "adv_share", "heldout"))))
            why = self.should_stop() if self.should_stop is not None and st.step % r.log_every == 0 else None
            if st.step % r.checkpoint_every == 0 or st.step == end or why:
                st.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save()
            if why:
                _LOGGER.info("%s stopped early at step %d: %s", self.work_dir.name, st.step, why)
                break
        bar.close()
        self.gen.eval()
        return Curve(pd.DataFrame(st.rows), st.seconds, resumed_from, st.step)


# --- what the notebooks train --------------------------------------------------------------------------------

def decoder_forward(dec, batch):
    """Waveform mode for a decoder student: batch (z, y) -> (dec(z), y)."""
    z, y = batch
    return dec(z), y


def train_decoder(decoder, lat, recipe: Recipe, work_dir: Path, batch: int = 4, frames: int = 32,
                  heldout=None, eval_fn: Callable | None = None, device: str = "cpu", threads: int = 2,
                  progress: str | None = "train") -> Curve:
    """Teach `decoder` the mapping latent z -> waveform of `lat` (a batches.Latents: teacher latents and the
    parent's audio), on random aligned segments, with the recipe; `heldout` (another Latents, sentences no
    training touched) gives the held-out mel curve."""
    held = []
    if heldout is not None:
        rng = np.random.default_rng(1234)
        held = [random_segments(heldout, batch, frames, rng) for _ in range(2)]
    trainer = Trainer(decoder, lambda rng: random_segments(lat, batch, frames, rng), recipe, work_dir,
                      forward=decoder_forward, eval_batches=held, eval_fn=eval_fn, device=device,
                      threads=threads, progress=progress)
    return trainer.fit()
