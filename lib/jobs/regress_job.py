"""The regression-first long runs (issue 25): a channel-pruned decoder (`regress`), the 5x voice's frame-rate
decoder (`regress-istft`), the half-width flow (`regress-flow`) and the x_low front end (`regress-frontend`), each
resuming from its local state or from its packed files; `python -m lib.jobs.train_job` parses their options and
`pack` brings them back."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from lib.core import text
from lib.core.results import atomic_write_text
from lib.jobs.run_state import (CORPUS_LISTS, FRONTEND_LISTS, HELDOUT_LISTS, HELDOUT_SENTENCES, corpus, flow_heldout,
                                init_from, packed_count, packed_start, phase_name, write_run)
from lib.techniques import distill, frontend_student as fs
from lib.techniques.channel_prune import pruned_student
from lib.techniques.regress_recipe import WEIGHTS, feature_forward, recipe, segments, spectral_forward, stage_targets
from lib.training import batches
from lib.training.batches import random_segments
from lib.training.loop import Trainer
from lib.training.phase_losses import spectra_forward
from lib.voices import parts, teacher_bundle
from lib.voices.artefacts import load_part
from lib.voices.istft_decoder import FrameRateDecoder


def regress(args) -> None:
    """The regression-first recipe (lib.techniques.regress_recipe) on a channel-pruned decoder student: channels chosen by the
    teacher's activations and refitted by least squares before the first step (channel_prune), then waveform, complex
    STFT, mel and stage-feature losses under a cosine schedule with an EMA; resumes from --work, or from a committed
    artefact (--init-from) whose config keeps the channel choice. With --adversarial-steps it is the adversarial
    phase, `dec<width>-adv`, which starts from the regression run's pack (run_state.phase_name)."""
    import copy
    import numpy as np
    work = Path(args.work)
    base = f"dec{args.width}-regress"
    name = phase_name(base, args)
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    teacher_dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    latents, heldout = corpus(teacher, args.corpus_limit, args.noise_scale, args.noise_w, args.draws)
    keep_file = work / name / "keep.json"
    init = packed_start(args, name, fallback=base)
    before = {}
    if keep_file.exists():  # local state: the trainer loads the weights; a start from packed files stays counted
        keep = [torch.tensor(k) for k in json.loads(keep_file.read_text())]
        old = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
        before = old.get("before", {})
        student = parts.fold_weight_norm(distill.decoder_student(teacher, args.width, "scratch"))
    elif init is not None:
        student, config = load_part(init)
        keep = [torch.tensor(k) for k in config["keep"]]
        before = {name: packed_count(config)}
        print(f"generator initialised from {init} ({before[name]['steps']} steps, {before[name]['hours']:.2f} h)",
              flush=True)
    else:
        rng = np.random.default_rng(7)
        calib = [batches.random_segments(latents, args.calib_segments, args.calib_frames, rng)[0]
                 for _ in range(args.calib_batches)]
        t0 = time.time()
        student, keep = pruned_student(teacher, args.width, calib, refit_zs=calib, ridge=args.ridge)
        print(f"channels chosen by activation and refitted by least squares in {time.time() - t0:.0f} s", flush=True)
    atomic_write_text(keep_file, json.dumps([k.tolist() for k in keep]))
    write_run(work, args, recipe=recipe_name(args), before=before)
    targets, held_targets = stage_targets(teacher_dec, latents, keep), stage_targets(teacher_dec, heldout, keep)
    rng = np.random.default_rng(1234)
    held = [segments(heldout, held_targets, args.batch, args.frames, rng) for _ in range(2)]
    rec = _regression_recipe(args, before.get(name, {}).get("steps", 0))  # a packed start: the cosine goes on
    curve = Trainer(student, lambda r: segments(latents, targets, args.batch, args.frames, r), rec, work / name,
                    forward=feature_forward(WEIGHTS["feature"]), eval_batches=held, device=args.device,
                    threads=args.threads, progress=None).fit()
    print(f"{name}: {curve.steps_done} steps, {curve.seconds:.0f} s", flush=True)


def _start_regression(work: Path, name: str, student, args, fallback: str = "", apnet: bool = False) -> dict:
    """A regression run's start: local state (the trainer loads it) keeps run.json's count; else --init-from's
    packed part of this `name` (or, where it has none, of `fallback`: an adversarial phase starts from the
    regression pack) initialises `student` and its steps and machine-hours go on counting. Writes run.json and
    returns its `before`."""
    old = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    before = old.get("before", {})
    init = packed_start(args, name, fallback)
    if not (work / name / "state").exists() and init is not None:
        config = init_from(student, init) or {}
        before = {**before, name: packed_count(config)}
        print(f"{name} initialised from {init} ({before[name]['steps']} steps, {before[name]['hours']:.2f} h)",
              flush=True)
    write_run(work, args, recipe=recipe_name(args, apnet), before=before)
    return before


def recipe_name(args, apnet: bool = False) -> str:
    """The ledger's and config's name of a regression run's recipe: APNet's losses and, with discriminators on its
    last steps, the adversarial phase are named too, with whatever of it is not piper's (lighter discriminators,
    bf16, a shorter window)."""
    name = "regression-first" + ("+apnet" if apnet else "")
    if not args.adversarial_steps:
        return name
    detail = [d for d in args.discriminators if d not in ("mpd", "mrd")]
    detail += ["bf16"] * bool(args.disc_bf16) + [f"{args.disc_segment} samples"] * bool(args.disc_segment)
    return name + "+adversarial" + (f"({', '.join(detail)})" if detail else "")


def _regression_recipe(args, done: int, **extra):
    """The regression-first recipe of a run whose packed start had `done` steps: the cosine goes on from there, or,
    with --warm-restart, starts again from --lr (its warm-up included) over the steps left: an adversarial phase
    after a finished cosine would otherwise train at its floor. `extra`: more Recipe fields (APNet's weights)."""
    return recipe(max(1, args.steps - done), lr=args.lr, warmup=args.lr_warmup, ema=args.ema,
                  adversarial_steps=args.adversarial_steps, schedule_offset=0 if args.warm_restart else done,
                  discriminators=tuple(args.discriminators), disc_bf16=args.disc_bf16, disc_segment=args.disc_segment,
                  checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, log_every=args.log_every,
                  **extra)


def regress_flow(args) -> None:
    """The flow student at `--hidden` channels (the half-width flow), fit by regression: the masked L1 between its
    reverse pass and the teacher flow's on the same prior sample (no discriminator acts on a latent), under the
    regression-first recipe's cosine schedule and EMA, with a held-out loss on list 31's prior samples; local state
    resumes, else --init-from's packed flow."""
    import numpy as np
    work = Path(args.work)
    name = f"flow{args.hidden}"
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    ids = teacher_bundle.sentence_ids
    pairs = distill.flow_pairs(teacher, ids(text.harvard_sentences(CORPUS_LISTS)[: args.corpus_limit or None]),
                               noise_scale=args.noise_scale, noise_w=args.noise_w, draws=args.draws)
    held_pairs = flow_heldout(teacher, {"noise_scale": args.noise_scale, "noise_w": args.noise_w})
    student = parts.fold_weight_norm(distill.flow_student(teacher, args.hidden))  # plain weights: the EMA copies them
    before = _start_regression(work, name, student, args)
    rng = np.random.default_rng(1234)
    held = [distill.flow_batch(held_pairs, args.batch, args.frames, rng) for _ in range(2)]
    curve = Trainer(student, lambda r: distill.flow_batch(pairs, args.batch, args.frames, r),
                    _regression_recipe(args, before.get(name, {}).get("steps", 0)), work / name,
                    loss_fn=distill.flow_loss, eval_batches=held, device=args.device, threads=args.threads,
                    progress=None).fit()
    print(f"{name}: {curve.steps_done} steps, {curve.seconds:.0f} s", flush=True)


def regress_frontend(args) -> None:
    """The front-end student (text encoder + deterministic duration predictor at `--hidden`/`--filter` channels) by
    regression on the teacher's prior statistics and log-durations (lib.techniques.frontend_student), on every
    Harvard list no notebook judges (text only: no audio is made), under the regression-first recipe's cosine
    schedule and EMA, with a held-out loss on list 31; local state resumes, else --init-from's packed front end."""
    work = Path(args.work)
    name = f"fe{args.hidden}"
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    ids = teacher_bundle.sentence_ids
    targets = fs.teacher_targets(teacher, ids(text.harvard_sentences(FRONTEND_LISTS)[: args.corpus_limit or None]))
    held_targets = fs.teacher_targets(teacher, ids(text.harvard_sentences(HELDOUT_LISTS)[:HELDOUT_SENTENCES]))
    student = fs.frontend_student(teacher, args.hidden, args.filter)
    before = _start_regression(work, name, student, args)
    held = [fs.frontend_batch(held_targets, HELDOUT_SENTENCES, None)]  # every held-out sentence once
    curve = Trainer(student, lambda r: fs.frontend_batch(targets, args.batch, r),
                    _regression_recipe(args, before.get(name, {}).get("steps", 0)), work / name,
                    loss_fn=fs.frontend_loss, eval_batches=held, device=args.device, threads=args.threads,
                    progress=None).fit()
    print(f"{name}: {curve.steps_done} steps, {curve.seconds:.0f} s", flush=True)


def regress_istft(args) -> None:
    """The regression-first recipe on the 5x voice's frame-rate decoder (from scratch): dense targets from the
    teacher's own STFT at the latent's hop, beside waveform L1, complex STFT and mel; local state resumes, else
    --init-from's packed decoder. With --adversarial-steps it is the adversarial phase (piper's or lighter
    discriminators beside those losses), a run of its own, `istft<dim>x<blocks>-adv`; with --amp-weight or
    --phase-weight, APNet's amplitude and phase losses replace the spectral term, `istft<dim>x<blocks>-apnet`
    (the discriminator-free arm). Both start from the regression run's pack."""
    import numpy as np
    work = Path(args.work)
    base = f"istft{args.dim}x{args.blocks}-regress"
    apnet = bool(args.amp_weight or args.phase_weight)
    name = apnet_name(phase_name(base, args)) if apnet else phase_name(base, args)
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    latents, heldout = corpus(teacher, args.corpus_limit, args.noise_scale, args.noise_w, args.draws)
    student = FrameRateDecoder(teacher.hparams["inter_channels"], args.dim, args.blocks, hop=latents.hop)
    before = _start_regression(work, name, student, args, fallback=base, apnet=apnet)
    rng = np.random.default_rng(1234)
    held = [random_segments(heldout, args.batch, args.frames, rng) for _ in range(2)]
    rec = _regression_recipe(args, before.get(name, {}).get("steps", 0), amp_weight=args.amp_weight,
                             phase_weight=args.phase_weight)
    forward = spectra_forward() if apnet else spectral_forward(WEIGHTS["spectral"])
    curve = Trainer(student, lambda r: random_segments(latents, args.batch, args.frames, r), rec, work / name,
                    forward=forward, eval_batches=held, device=args.device, threads=args.threads, progress=None).fit()
    print(f"{name}: {curve.steps_done} steps, {curve.seconds:.0f} s", flush=True)


def apnet_name(name: str) -> str:
    """The discriminator-free arm's part name: `<student>-apnet` (`-apnet-adv` with an adversarial phase too)."""
    return name.replace("-regress", "-apnet").replace("-adv", "-apnet-adv")
