"""The long training runs, as a job a lent GPU machine runs on its own (`setsid`), within the device tool's limits:
full state (generators, discriminators, optimizers, RNG) stays on that machine's disk under --work; `pack` copies
the small part (each student's folded generator as safetensors + config.json, its curve, env) to --out, which
comes back and is committed under outputs/recorded/<device>/04_distillation/. The next session resumes the
generators from the committed artefacts (--init-from), and the discriminators the packs kept (lib.training.disc_state).

    python3 -m lib.jobs.device_launch .devrun lib.jobs.train_job students --work /tmp/train --out "$OUT" \
        --device cuda --mixed-precision bf16 --decoder-steps 20000 --adversarial-steps 18000 --flow-steps 10000 \
        --recovery-steps 20000
    tts-lab train pack --work /tmp/train --out "$OUT"   # here; there: ... lib.jobs.train_job pack ...

The same code runs on a CPU with a few steps (the tests do), and under `accelerate launch` on several GPUs. The
regression-first runs live in lib.jobs.regress_job, what every run shares (corpus, bookkeeping, held-out quality)
in lib.jobs.run_state.
"""
from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch
import tyro
from safetensors.torch import load_file

from lib.core import text
from lib.core.pause import Yielder
from lib.core.results import atomic_write_json, portable
from lib.harness import bench
from lib.harness.queries import write_queries
from lib.jobs import device_launch
from lib.jobs.device_site import write_site, write_wheels
from lib.jobs.regress_job import regress, regress_flow, regress_frontend, regress_hybrid, regress_istft
from lib.jobs.run_configs import (CONFIG, JOBS, Bundle, JudgePacks, Pack, RegressFlow, RegressFrontend, RegressIstft,
                                  RegressHybrid, Regress, RunConfig, Students)
from lib.jobs.run_state import (CORPUS_LISTS, HELDOUT_JUDGES, HELDOUT_SET, accounted_hours, corpus, heldout_judged,
                                heldout_quality, init_from, packed_count, read_json)
from lib.techniques import compress, distill
from lib.training import disc_state
from lib.training.ledger import JUDGED, append, append_judged, has_row, judge_means, read_judged
from lib.training.loop import train_decoder
from lib.voices import parts, piper_torch, synth as voices
from lib.voices.artefacts import ArtefactError, gpu_of_hours, load_part, save_part
from lib.voices.cards import pack_card
from lib.voices.istft_decoder import FrameRateDecoder
from lib.voices.teacher_bundle import teacher_identity, write_bundle

_LOGGER = logging.getLogger(__name__)


def students(cfg: Students) -> None:
    """Train the decoder chain, the flow student, the frame-rate decoder and the pruned decoder's recovery; each part
    writes its RunConfig as it starts and, with --init-from, starts from its pack there."""
    work = Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path, _ = voices.piper_paths()
    teacher = piper_torch.load_piper_torch(onnx_path)  # stays on the CPU: it only makes the training targets
    cfg.record(work, recipe=cfg.recipe_name())
    latents, heldout = corpus(teacher, cfg.corpus_limit, cfg.noise_scale, cfg.noise_w, cfg.draws)
    init = Path(cfg.init_from) if cfg.init_from else None

    def start(name: str, module, kind: str, build: dict, recipe) -> None:
        cfg.part(name, kind, build, recipe, cfg.recipe_name()).write(work)
        packed = init_from(module, init / name) if init is not None else None
        if packed:  # a part started from packed files goes on counting their steps and machine-hours
            cfg.record(work, before={**read_json(work / "run.json", {}).get("before", {}), name: packed_count(packed)})

    chain_recipe = cfg.recipe(cfg.decoder_steps, cfg.adversarial_steps)
    started = time.time()
    studs, curves, chain_end = distill.train_chain(
        teacher, latents, cfg.widths, [chain_recipe] * len(cfg.widths), work, compare_scratch=False, batch=cfg.batch,
        frames=cfg.frames, heldout=heldout, device=cfg.device, threads=cfg.threads, progress=False,
        prepare=lambda name, dec: start(name, dec, "decoder", parts.decoder_build(teacher, distill.decoder_width(dec)),
                                        chain_recipe))
    flow_name = f"flow{cfg.flow_hidden}"
    flow = distill.flow_student(teacher, cfg.flow_hidden)
    flow_recipe = cfg.recipe(cfg.flow_steps, lr=5e-4, adversarial=False, eval_every=0)  # a regression: no discriminator
    start(flow_name, flow, "flow", parts.flow_build(teacher, cfg.flow_hidden), flow_recipe)
    fe = voices.PiperFrontend(voices.piper_paths()[1])
    sents = text.harvard_sentences(CORPUS_LISTS)[: cfg.corpus_limit or None]
    pairs = distill.flow_pairs(teacher, fe.sentence_ids(sents)) if cfg.flow_steps else None
    curves[flow_name] = distill.train_flow(flow, pairs, flow_recipe, work / flow_name, device=cfg.device,
                                           threads=cfg.threads, progress=None)
    if cfg.istft_steps:  # the 5x voice's frame-rate decoder, from scratch on the teacher's own audio
        name = f"istft{cfg.istft_dim}x{cfg.istft_blocks}"
        voc = FrameRateDecoder(teacher.hparams["inter_channels"], cfg.istft_dim, cfg.istft_blocks,
                               hop=int(latents.hop))
        recipe = cfg.recipe(cfg.istft_steps, cfg.istft_adversarial_steps)
        start(name, voc, "istft_decoder", voc.config, recipe)
        curves[name] = train_decoder(voc, latents, recipe, work / name, batch=cfg.batch, frames=cfg.frames,
                                     heldout=heldout, device=cfg.device, threads=cfg.threads, progress=None)
    if cfg.recovery_steps:
        name = f"structured-{int(cfg.structured_ratio * 100)}"
        rec = compress.prune_structured(teacher.dec, cfg.structured_ratio, latents.z[0])
        recipe = cfg.recipe(cfg.recovery_steps, cfg.adversarial_steps)
        start(name, rec, "decoder", parts.decoder_build(teacher, distill.decoder_width(rec)), recipe)
        curves[name] = train_decoder(rec, latents, recipe, work / name, batch=cfg.batch, frames=cfg.frames,
                                     heldout=heldout, device=cfg.device, threads=cfg.threads, progress=None)
        studs[name] = parts.fold_weight_norm(rec.cpu())
    atomic_write_json(work / "done.json", {"chain_end": chain_end, "seconds": time.time() - started,
                                           "command": cfg.command})
    _LOGGER.info("trained %s in %.0f s", ", ".join(curves), time.time() - started)


def trained_part(run: Path, config: RunConfig):
    """The generator trained in the part folder `run` (its EMA where the recipe keeps one), rebuilt from its
    RunConfig and folded; ArtefactError names the weights when they do not fit."""
    ema = run / "ema.safetensors"  # the averaged weights, where the recipe keeps an EMA
    weights = ema if ema.exists() else run / "state" / "model.safetensors"
    state = {k.removeprefix("module."): v for k, v in load_file(str(weights)).items() if k != "n_averaged"}
    module = parts.build_part(config.kind, config.build)
    if not any(k.endswith("weight_g") for k in state):
        parts.fold_weight_norm(module)  # trained without weight norm (pruned students): fold first, then load
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtefactError(f"{weights} does not fit the {config.kind} of {run / CONFIG}: {str(exc)[:300]}") from None
    return parts.fold_weight_norm(module)


def pack(cfg: Pack) -> None:
    """Copy each part's latest saved generator (folded, safetensors + config.json), curve and env to --out, each
    rebuilt from the RunConfig it started with; with --ledger, a row per new checkpoint."""
    work, out = Path(cfg.work), Path(cfg.out)
    env = bench.environment(device=cfg.device)
    info = read_json(work / "run.json", {})
    voices.use_voice(info.get("voice", ""))  # the teacher the run learned from, as its run.json says
    command = info.get("command", read_json(work / "done.json", {}).get("command", "(running)"))
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0]) if cfg.ledger else None  # the ledger's reference
    for run in sorted(p for p in work.iterdir() if (p / "state" / "model.safetensors").exists()):
        config = RunConfig.read(run)
        module = trained_part(run, config)
        curve = (run / "curve.csv").read_text() if (run / "curve.csv").exists() else ""
        frame = (pd.read_csv(run / "curve.csv") if curve.count("\n") > 1
                 else pd.DataFrame({"step": [0], "seconds": [0.0]}))
        steps, seconds = int(frame["step"].iloc[-1]), float(frame["seconds"].iloc[-1])
        before = info.get("before", {}).get(run.name, {})  # a start from packed files: their count goes on
        steps += int(before.get("steps", 0))
        # pack may run elsewhere
        hours, device_hours, trained_on = accounted_hours(info, before, seconds, env, cfg.device)
        extra = {"student": run.name, "steps": steps, "seconds": seconds, "hours": hours, "device_hours": device_hours,
                 "recipe": config.recipe_name, "device": trained_on,
                 "gpu": gpu_of_hours({"device_hours": device_hours, "gpu": before.get("gpu"), "device": trained_on})}
        if (run / "keep.json").exists():
            extra["keep"] = read_json(run / "keep.json")
        trained_d = disc_state.info(run)  # the discriminators go on counting from a packed start's
        if trained_d is not None:
            extra["disc_steps"] = int(before.get("disc_steps", 0)) + trained_d["disc_steps"]
            kept = disc_state.copy(run, out / run.name, extra["disc_steps"], cfg.disc_limit_mb,
                                   getattr(torch, cfg.disc_dtype))
            extra.update(discriminators=kept["packed"], **({"discriminators_left_out": kept["left_out"]}
                                                           if kept["left_out"] else {}))
        dest = save_part(module, out / run.name, config.kind, config.build, extra=extra, teacher=teacher_identity())
        (dest / "curve.csv").write_text(curve)
        (dest / "env.json").write_text(portable(json.dumps({**env, "steps": steps, "command": command,
                                                            "trained_on": trained_on, "device_hours": device_hours},
                                                           indent=1, default=str)))
        _LOGGER.info("packed %s: %d steps, %.2f machine-hours, %.3f device-hours -> %s", run.name, steps, hours,
                     device_hours, dest)
        if cfg.ledger:
            name = f"{work.name}/{run.name}"
            if has_row(Path(cfg.ledger), name, steps):
                _LOGGER.info("ledger: %s has no new checkpoint since its last row", name)
                continue
            judged = (heldout_judged(teacher, module, info, config.kind, cfg.judged_sentences)
                      if cfg.judged_sentences else None)
            row = ledger_row(teacher, module, info, run=name, part=config.kind, recipe=config.recipe_name, steps=steps,
                             hours=hours, env=env, device=trained_on, judged=judged)
            append(Path(cfg.ledger), row)
            if judged is not None:
                append_judged(Path(cfg.ledger).with_name(JUDGED.name), judged, run=name, steps=steps, hours=hours)
            _LOGGER.info("ledger: %s", row)
        deltas = ({m: float((g["value"] - g["teacher"]).mean()) for m, g in judged.groupby("metric")}
                  if cfg.ledger and judged is not None else {})
        heldout = {k: row[k] for k in ("heldout_pesq", "heldout_mel_l1")} if cfg.ledger else {}
        pack_card(name=run.name, kind=config.kind, recipe=config.recipe_name, teacher=teacher_identity(), steps=steps,
                  hours=hours, device_hours=device_hours, trained_on=trained_on, corpus=info.get("corpus", {}),
                  heldout=heldout, deltas=deltas, dataset=HELDOUT_SET).save(str(dest / "README.md"))


def judge_packs(cfg: JudgePacks) -> None:
    """Each pack's held-out sentences judged (run_state.heldout_judged) into `cfg.judged`, named as the ledger names
    the run; a pack already judged at its steps is judged only by the judges it lacks (none: said and skipped)."""
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0])
    info = {"noise_scale": cfg.noise_scale, "noise_w": cfg.noise_w}
    for pack_dir in map(Path, cfg.packs):
        module, config = load_part(pack_dir)
        name, steps = f"{pack_dir.parent.name}/{pack_dir.name}", int(config.get("steps") or 0)
        done = read_judged(Path(cfg.judged))
        had = set(done.loc[(done["run"] == name) & (done["steps"] == steps), "metric"])
        lacking = tuple(m for m in HELDOUT_JUDGES if m not in had)
        if not lacking:
            _LOGGER.info("judged already: %s at %d steps", name, steps)
            continue
        judged = heldout_judged(teacher, module, info, config["kind"], cfg.sentences, lacking)
        append_judged(Path(cfg.judged), judged, run=name, steps=steps, hours=float(config.get("hours") or 0.0))
        _LOGGER.info("judged %s at %d steps: %s", name, steps, judge_means(judged))


def ledger_row(teacher, module, info: dict, *, run: str, part: str, recipe: str, steps: int, hours: float, env: dict,
               device: str, judged: pd.DataFrame | None = None) -> dict:
    """A packed part's ledger row: where and how long it trained, and its held-out quality (with the judges' means
    of `judged`, its heldout_judged sentences)."""
    return {"run": run, "part": part, "recipe": recipe, "device": device,
            "cpu_model": env.get("cpu_model"), "steps": steps, "hours": round(hours, 4),
            **{k: round(v, 4) for k, v in heldout_quality(teacher, module, info, part).items()},
            "heldout_secs": float("nan"), "heldout_wer": float("nan"),
            "corpus_hours": info.get("corpus", {}).get("corpus_hours", float("nan")),
            **(judge_means(judged) if judged is not None else {}),
            "commit": env.get("git"), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> None:
    """`SUBCOMMAND ...` as lib.jobs.device_launch gives it on a GPU machine (here: `tts-lab train ...`): parse into
    the job's dataclass, run it."""
    logging.basicConfig(level=logging.INFO)
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = tyro.extras.subcommand_cli_from_dict({job.NAME: job for job in JOBS}, args=argv,
                                               prog="lib.jobs.train_job",
                                               description=__doc__.split("\n\n")[0])
    run(cfg, "lib.jobs.train_job " + " ".join(argv))


def run(cfg, command: str) -> None:
    """Run one parsed job; a training run registers itself so that it pauses while anything on this machine is timed."""
    if isinstance(cfg, Bundle):
        sentences = text.harvard_sentences(cfg.lists)
        if cfg.corpus_seed:  # a corpus the GPU machine speaks itself (corpus_job --device)
            from lib.data.corpus_text import corpus_sentences
            sentences += [c.sentence for c in corpus_sentences(cfg.corpus_seed)]
        out = write_bundle(Path(cfg.out), sentences, cfg.dtype)
        _LOGGER.info("bundle written to %s", out)
        site, wheels = cfg.site, cfg.wheels
        if cfg.bare_gpu:  # where lib.jobs.device_launch looks for them
            site, wheels = out / device_launch.SITE, out / device_launch.WHEELS
        if site:
            _LOGGER.info("piper's training code and the librosa stand-in written to %s", write_site(Path(site)))
        if wheels:
            _LOGGER.info("wheels for a bare GPU machine written to %s", write_wheels(Path(wheels)))
        if cfg.queries:
            qs = write_queries(out / device_launch.QUERIES, cfg.queries)
            _LOGGER.info("%s: %d queries, %d streaming queries (profile %s)", out / device_launch.QUERIES,
                         len(qs.queries), len(qs.ttfa_queries), cfg.queries)
        return
    if isinstance(cfg, Pack):
        return pack(cfg)
    if isinstance(cfg, JudgePacks):
        return judge_packs(cfg)
    cfg.command = command
    voices.use_voice(cfg.voice)  # before anything loads the teacher: every lookup in this process agrees
    if cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)  # from the start: a setup on torch's default threads oversubscribes
    job = Yielder(f"{cfg.NAME} {Path(cfg.work).name}").register()
    try:
        {Students: students, Regress: regress, RegressIstft: regress_istft, RegressHybrid: regress_hybrid,
         RegressFlow: regress_flow, RegressFrontend: regress_frontend}[type(cfg)](cfg)
    finally:
        job.close()
