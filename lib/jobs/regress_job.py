"""The regression-first long runs: a channel-pruned decoder (`regress`), the 5x voice's frame-rate decoder
(`regress-istft`), the half-width flow (`regress-flow`) and the x_low front end (`regress-frontend`), each resuming
from its local state or from its packed files and writing its RunConfig as it starts; `pack` brings them back."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from lib.core import text
from lib.core.results import atomic_write_text
from lib.data import varied_text
from lib.jobs.run_configs import Regress, Regression, RegressFlow, RegressFrontend, RegressHybrid, RegressIstft
from lib.jobs.run_state import (CORPUS_LISTS, FRONTEND_LISTS, HELDOUT_LISTS, HELDOUT_SENTENCES, flow_heldout, init_from,
                                corpus_text_of, packed_count, read_json, training_corpus)
from lib.techniques import distill, frontend_student as fs
from lib.techniques.channel_prune import hybrid_student, pruned_student
from lib.techniques.regress_recipe import (WEIGHTS, feature_forward, hybrid_forward, segments, spectral_forward,
                                          stage_targets, with_stage_targets)
from lib.training.batches import random_segments
from lib.training.loop import Recipe, Trainer
from lib.training.phase_losses import spectra_forward
from lib.voices import parts, teacher_bundle
from lib.voices.artefacts import load_part
from lib.voices.istft_decoder import FrameRateDecoder

_LOGGER = logging.getLogger(__name__)


def regress(cfg: Regress) -> None:
    """The regression-first recipe (lib.techniques.regress_recipe) on a channel-pruned decoder: channels chosen by the
    teacher's activations and refitted by least squares before the first step (channel_prune), then waveform, complex
    STFT, mel and stage-feature losses under a cosine schedule with an EMA; resumes from --work, or from a packed
    part (--init-from) whose config keeps the channel choice. With --adversarial-steps it is the adversarial phase,
    `dec<width>-adv`, which starts from the regression run's pack."""
    base = f"dec{cfg.width}-regress"
    _pruned_run(cfg, cfg.phase_name(base), "decoder", lambda teacher: parts.decoder_build(teacher, cfg.width),
                lambda teacher, calib: pruned_student(teacher, cfg.width, calib, refit_zs=calib, ridge=cfg.ridge),
                feature_forward(WEIGHTS["feature"]), fallback=base)


def regress_hybrid(cfg: RegressHybrid) -> None:
    """The regression-first recipe on the hybrid decoder: its kept stages start from the teacher's, pruned and
    refitted before the first step (channel_prune.hybrid_student), its head from scratch; spectral terms on the
    head and the kept stages' outputs against the teacher's; resumes from --work or from a packed part."""
    _pruned_run(cfg, cfg.part_name(), "hybrid_decoder",
                lambda teacher: parts.hybrid_build(teacher, cfg.width, cfg.keep_stages, cfg.n_fft),
                lambda teacher, calib: hybrid_student(teacher, cfg.width, cfg.keep_stages, calib, cfg.n_fft,
                                                      refit_latents=calib, ridge=cfg.ridge),
                hybrid_forward(WEIGHTS["spectral"], WEIGHTS["feature"]))


def _pruned_run(cfg: Regress | RegressHybrid, name: str, kind: str, build_of, fresh, forward,
                fallback: str = "") -> None:
    """What the runs of a decoder that keeps some of the teacher's channels share: the kept channels from local
    state (keep.json), else from the packed part (--init-from, `fallback`'s for an adversarial phase), else chosen and
    refitted by `fresh(teacher, calibration latents) -> (student, keep)`; the teacher's outputs on the kept channels
    as targets (each batch's, where the student trains); the recipe, its RunConfig and the trainer."""
    work = Path(cfg.work)
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    teacher_dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    source, heldout, summary = training_corpus(teacher, cfg)
    build = build_of(teacher)
    keep_file, init = work / name / "keep.json", cfg.packed_start(name, fallback)
    before = read_json(work / "run.json", {}).get("before", {})
    if keep_file.exists():  # local state: the trainer loads the weights; a start from packed files stays counted
        keep = [torch.tensor(k) for k in read_json(keep_file)]
        student = parts.fold_weight_norm(parts.build_part(kind, build))
    elif init is not None:
        student, config = load_part(init, teacher)
        keep, before = [torch.tensor(k) for k in config["keep"]], {name: packed_count(config)}
        _LOGGER.info("generator initialised from %s (%d steps, %.2f h)", init, before[name]["steps"],
                     before[name]["hours"])
    else:
        rng = np.random.default_rng(7)
        calib = [source(cfg.calib_segments, cfg.calib_frames, rng)[0] for _ in range(cfg.calib_batches)]
        t0 = time.time()
        student, keep = fresh(teacher, calib)
        _LOGGER.info("%s: channels chosen by activation and refitted by least squares in %.0f s", name,
                     time.time() - t0)
    atomic_write_text(keep_file, json.dumps([k.tolist() for k in keep]))
    cfg.record(work, recipe=cfg.recipe_name(), before=before, corpus=summary)
    held_targets = stage_targets(teacher_dec, heldout, keep)
    teacher_dec.to(cfg.device)  # each batch's stage targets where the student trains
    rng = np.random.default_rng(1234)
    held = [segments(heldout, held_targets, cfg.batch, cfg.frames, rng) for _ in range(2)]
    rec = cfg.recipe(before.get(name, {}).get("steps", 0))  # a packed start: the cosine goes on
    cfg.part(name, kind, build, rec, cfg.recipe_name()).write(work)
    batch_fn = lambda r: with_stage_targets(teacher_dec, keep, source(cfg.batch, cfg.frames, r))
    _fit(name, Trainer(student, batch_fn, rec, work / name, forward=forward, eval_batches=held, device=cfg.device,
                       threads=cfg.threads, progress=None, disc_init=init))


def _start(work: Path, name: str, student, cfg: Regression, kind: str, build: dict, fallback: str = "",
           apnet: bool = False, corpus: dict | None = None, **extra) -> Recipe:
    """A regression part's start: local state (the trainer loads it) keeps run.json's count; else --init-from's
    packed part of this `name` (or, where it has none, of `fallback`: an adversarial phase starts from the
    regression pack) initialises `student` and its steps and machine-hours go on counting. Writes run.json and the
    part's RunConfig; returns its Recipe (`extra`: more Recipe fields, APNet's weights)."""
    before = read_json(work / "run.json", {}).get("before", {})
    init = cfg.packed_start(name, fallback)
    if not (work / name / "state").exists() and init is not None:
        config = init_from(student, init) or {}
        before = {**before, name: packed_count(config)}
    cfg.record(work, recipe=cfg.recipe_name(apnet), before=before, **({"corpus": corpus} if corpus else {}))
    recipe = cfg.recipe(before.get(name, {}).get("steps", 0), **extra)
    cfg.part(name, kind, build, recipe, cfg.recipe_name(apnet)).write(work)
    return recipe


def _fit(name: str, trainer: Trainer) -> None:
    curve = trainer.fit()
    _LOGGER.info("%s: %d steps, %.0f s", name, curve.steps_done, curve.seconds)


def regress_flow(cfg: RegressFlow) -> None:
    """The flow student at `--hidden` channels (the half-width flow), fit by regression: the masked L1 between its
    reverse pass and the teacher flow's on the same prior sample (no discriminator acts on a latent), under the
    regression-first recipe's cosine schedule and EMA, with a held-out loss on list 31's prior samples. With
    --corpus its pairs come from the corpus's latents: the teacher flow's forward pass gives each segment's prior
    sample (the flow is exactly invertible), so hours of corpus cost no memory."""
    work = Path(cfg.work)
    name = f"flow{cfg.hidden}"
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    if cfg.corpus:
        source, _, summary = training_corpus(teacher, cfg)
        teacher_flow = copy.deepcopy(teacher.flow).to(cfg.device)  # the teacher itself stays for the held-out pairs
        batch_fn = lambda r: distill.flow_batch_of_latents(teacher_flow, source(cfg.batch, cfg.frames, r)[0])
    else:
        ids = teacher_bundle.sentence_ids(text.harvard_sentences(CORPUS_LISTS)[: cfg.corpus_limit or None])
        pairs = distill.flow_pairs(teacher, ids, noise_scale=cfg.noise_scale, noise_w=cfg.noise_w, draws=cfg.draws)
        batch_fn, summary = lambda r: distill.flow_batch(pairs, cfg.batch, cfg.frames, r), None
    held_pairs = flow_heldout(teacher, {"noise_scale": cfg.noise_scale, "noise_w": cfg.noise_w})
    student = parts.fold_weight_norm(distill.flow_student(teacher, cfg.hidden))  # plain weights: the EMA copies them
    recipe = _start(work, name, student, cfg, "flow", parts.flow_build(teacher, cfg.hidden), corpus=summary)
    rng = np.random.default_rng(1234)
    held = [distill.flow_batch(held_pairs, cfg.batch, cfg.frames, rng) for _ in range(2)]
    _fit(name, Trainer(student, batch_fn, recipe, work / name,
                       loss_fn=distill.flow_loss, eval_batches=held, device=cfg.device, threads=cfg.threads,
                       progress=None))


def regress_frontend(cfg: RegressFrontend) -> None:
    """The front-end student (text encoder + deterministic duration predictor at `--hidden`/`--filter` channels) by
    regression on the teacher's prior statistics and log-durations (lib.techniques.frontend_student), on every
    Harvard list no notebook judges, or with --corpus every sentence of a teacher corpus (text only: no audio is
    read or made), with a held-out loss on list 31. With
    --varied-sentences, varied text (names, numbers, long sentences) joins them, and the held-out loss also reads
    the next few sentences of that family, which no step trains on."""
    work = Path(cfg.work)
    name = cfg.part_name()
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    ids = teacher_bundle.sentence_ids
    train = text.harvard_sentences(FRONTEND_LISTS)[: cfg.corpus_limit or None]
    held = text.harvard_sentences(HELDOUT_LISTS)[:HELDOUT_SENTENCES]
    summary = {"corpus_hash": "harvard-lists-11-30-32-66", "corpus_sentences": len(train)}
    if cfg.corpus:  # the teacher corpus's text (it holds the templated family: no --varied-sentences beside it)
        if cfg.varied_sentences:
            raise ValueError("--varied-sentences with --corpus: the corpus's text holds that templated family already")
        train, summary = corpus_text_of(Path(cfg.corpus))
        train = train[: cfg.corpus_limit or None]
    if cfg.varied_sentences:
        varied = varied_text.varied_sentences(varied_text.Family.TRAIN, cfg.varied_sentences + HELDOUT_SENTENCES)
        train, held = train + varied[: cfg.varied_sentences], held + varied[cfg.varied_sentences:]
    _LOGGER.info("%s: %d training sentences, %d held out", name, len(train), len(held))
    train_ids, held_targets = ids(train), fs.teacher_targets(teacher, ids(held))
    student = fs.frontend_student(teacher, cfg.hidden, cfg.filter)
    # a varied front end may go on from the Harvard one's pack
    recipe = _start(work, name, student, cfg, "frontend", fs.frontend_build(teacher, cfg.hidden, cfg.filter),
                    fallback=f"fe{cfg.hidden}", corpus=summary)
    held = [fs.frontend_batch(held_targets, len(held), None)]  # every held-out sentence once
    _fit(name, Trainer(student, lambda r: fs.streamed_batch(teacher, train_ids, cfg.batch, r), recipe, work / name,
                       loss_fn=fs.frontend_loss, eval_batches=held, device=cfg.device, threads=cfg.threads,
                       progress=None))


def regress_istft(cfg: RegressIstft) -> None:
    """The regression-first recipe on the 5x voice's frame-rate decoder (from scratch): dense targets from the
    teacher's own STFT at the latent's hop, beside waveform L1, complex STFT and mel. With --adversarial-steps it is
    the adversarial phase, `istft<dim>x<blocks>-adv`; with --amp-weight or --phase-weight, APNet's amplitude and
    phase losses replace the spectral term, `istft<dim>x<blocks>-apnet`. Both start from the regression run's pack."""
    work = Path(cfg.work)
    base = f"istft{cfg.dim}x{cfg.blocks}{f'm{cfg.mag_hidden}' if cfg.mag_hidden else ''}-regress"
    apnet = bool(cfg.amp_weight or cfg.phase_weight)
    name = apnet_name(cfg.phase_name(base)) if apnet else cfg.phase_name(base)
    (work / name).mkdir(parents=True, exist_ok=True)
    teacher = teacher_bundle.teacher()
    source, heldout, summary = training_corpus(teacher, cfg)
    student = FrameRateDecoder(teacher.hparams["inter_channels"], cfg.dim, cfg.blocks, hop=heldout.hop,
                               mag_hidden=cfg.mag_hidden)
    recipe = _start(work, name, student, cfg, "istft_decoder", student.config, fallback=base, apnet=apnet,
                    amp_weight=cfg.amp_weight, phase_weight=cfg.phase_weight, corpus=summary)
    if cfg.mag_only:
        if student.mag_mlp is None:
            raise ValueError("--mag-only trains the magnitude MLP alone: give it --mag-hidden")
        for n, p in student.named_parameters():
            p.requires_grad_(n.startswith(FrameRateDecoder.GROWN))
    rng = np.random.default_rng(1234)
    held = [random_segments(heldout, cfg.batch, cfg.frames, rng) for _ in range(2)]
    forward = spectra_forward() if apnet else spectral_forward(WEIGHTS["spectral"])
    _fit(name, Trainer(student, lambda r: source(cfg.batch, cfg.frames, r), recipe, work / name, forward=forward,
                       eval_batches=held, device=cfg.device, threads=cfg.threads, progress=None,
                       disc_init=cfg.packed_start(name, base)))


def apnet_name(name: str) -> str:
    """The discriminator-free arm's part name: `<student>-apnet` (`-apnet-adv` with an adversarial phase too)."""
    return name.replace("-regress", "-apnet").replace("-adv", "-apnet-adv")
