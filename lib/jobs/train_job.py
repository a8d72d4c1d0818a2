"""The long training runs, as a job a lent GPU machine runs on its own (`setsid`), within the device tool's limits:
full state (generators, discriminators, optimizers, RNG) stays on that machine's disk under --work; `pack` copies
the small part (each student's folded generator as safetensors + config.json, its curve, env) to --out, which
comes back and is committed under outputs/recorded/<device>/04_distillation/. The next GPU session resumes the
generators from the committed artefacts (--init-from) with fresh discriminators after a short warm-up.

    python -m lib.jobs.train_job students --work /tmp/train --out "$OUT" --device cuda --mixed-precision bf16 \
        --decoder-steps 20000 --adversarial-steps 18000 --flow-steps 10000 --recovery-steps 20000
    python -m lib.jobs.train_job pack --work /tmp/train --out "$OUT"

The same code runs on a CPU with a few steps (the tests do), and under `accelerate launch` on several GPUs. The
regression-first runs live in lib.jobs.regress_job, what every run shares (corpus, bookkeeping, held-out quality)
in lib.jobs.run_state.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import tyro

from lib.core import text
from lib.core.pause import Yielder
from lib.harness import bench
from lib.jobs.device_site import write_site
from lib.jobs.run_configs import JOBS, Bundle, Pack, RegressFlow, RegressFrontend, RegressIstft, Regress, Students
from lib.jobs.regress_job import regress, regress_flow, regress_frontend, regress_istft
from lib.jobs.run_state import (CORPUS_LISTS, HELDOUT_LISTS, accounted_hours, corpus, count_from,  # noqa: F401
                                heldout_quality, init_from, write_run)
from lib.techniques import compress, distill
from lib.techniques.frontend_student import frontend_build
from lib.training.ledger import append, read
from lib.training.loop import Recipe, train_decoder
from lib.voices import parts, piper_torch, synth as voices
from lib.voices.artefacts import save_part
from lib.voices.istft_decoder import FrameRateDecoder
from lib.voices.teacher_bundle import write_bundle


def _recipe(steps: int, adversarial: int, args):
    return Recipe.adversarial_tail(steps, adversarial, lr=args.lr, mixed_precision=args.mixed_precision,
                  discriminators=tuple(args.discriminators), checkpoint_every=args.checkpoint_every,
                  eval_every=args.eval_every, log_every=args.log_every)


def students(args) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path, _ = voices.joe_paths()
    teacher = piper_torch.load_piper_torch(onnx_path)  # stays on the CPU: it only makes the training targets
    write_run(work, args, recipe="adversarial")
    latents, heldout = corpus(teacher, args.corpus_limit, args.noise_scale, args.noise_w, args.draws)
    init = Path(args.init_from) if args.init_from else None
    widths = [int(w) for w in args.widths]
    recipes = [_recipe(args.decoder_steps, args.adversarial_steps, args) for _ in widths]
    started = time.time()
    studs, curves, chain_end = distill.train_chain(
        teacher, latents, widths, recipes, work, compare_scratch=False, batch=args.batch, frames=args.frames,
        heldout=heldout, device=args.device, threads=args.threads, progress=False,
        prepare=(lambda name, module: count_from(work, args, name, init_from(module, init / name)))
        if init is not None else None)
    flow_name = f"flow{args.flow_hidden}"
    flow = distill.flow_student(teacher, args.flow_hidden)
    if init is not None:
        count_from(work, args, flow_name, init_from(flow, init / flow_name))
    fe = voices.PiperFrontend(voices.joe_paths()[1])
    sents = text.harvard_sentences(CORPUS_LISTS)[: args.corpus_limit or None]
    pairs = distill.flow_pairs(teacher, fe.sentence_ids(sents)) if args.flow_steps else None
    curves[flow_name] = distill.train_flow(flow, pairs, Recipe(steps=args.flow_steps, lr=5e-4, checkpoint_every=args.checkpoint_every,
                                                               log_every=args.log_every, mixed_precision=args.mixed_precision),
                                           work / flow_name, device=args.device, threads=args.threads, progress=None)
    if args.istft_steps:  # the 5x voice's frame-rate decoder, from scratch on the teacher's own audio
        name = f"istft{args.istft_dim}x{args.istft_blocks}"
        voc = FrameRateDecoder(teacher.hparams["inter_channels"], args.istft_dim, args.istft_blocks,
                               hop=int(latents.hop))
        if init is not None:
            count_from(work, args, name, init_from(voc, init / name))
        curves[name] = train_decoder(voc, latents, _recipe(args.istft_steps, args.istft_adversarial_steps, args),
                                     work / name, batch=args.batch, frames=args.frames, heldout=heldout,
                                     device=args.device, threads=args.threads, progress=None)
    if args.recovery_steps:
        name = f"structured-{int(args.structured_ratio * 100)}"
        rec = compress.prune_structured(teacher.dec, args.structured_ratio, latents.z[0])
        if init is not None:
            count_from(work, args, name, init_from(rec, init / name))
        curves[name] = train_decoder(rec, latents, _recipe(args.recovery_steps, args.adversarial_steps, args),
                                     work / name, batch=args.batch, frames=args.frames, heldout=heldout,
                                     device=args.device, threads=args.threads, progress=None)
        studs[name] = parts.fold_weight_norm(rec.cpu())
    (work / "done.json").write_text(json.dumps({"chain_end": chain_end, "seconds": time.time() - started,
                                                "command": args.command}))
    print(f"trained {', '.join(curves)} in {time.time() - started:.0f} s", flush=True)

def pack(args) -> None:
    """Copy each student's latest saved generator (folded, safetensors + config.json), curve and env to --out."""
    import pandas as pd
    from safetensors.torch import load_file
    work, out = Path(args.work), Path(args.out)
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    env = bench.environment(device=args.device)
    command = json.loads((work / "done.json").read_text())["command"] if (work / "done.json").exists() else "(running)"
    students = ("dec", "flow", "istft", "structured", "fe")  # run folders of `students` and the regress runs
    info = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    for run in sorted(p for p in work.iterdir() if (p / "state" / "model.safetensors").exists() and p.name.startswith(students)):
        ema = run / "ema.safetensors"  # the averaged weights, where the recipe keeps an EMA
        state = load_file(str(ema if ema.exists() else run / "state" / "model.safetensors"))
        state = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
        curve = (run / "curve.csv").read_text() if (run / "curve.csv").exists() else ""
        frame = pd.read_csv(run / "curve.csv") if curve.count("\n") > 1 else pd.DataFrame({"step": [0], "seconds": [0.0]})
        steps, seconds = int(frame["step"].iloc[-1]), float(frame["seconds"].iloc[-1])
        if run.name.startswith("istft"):
            dim, blocks = (int(v) for v in run.name.removeprefix("istft").split("-")[0].split("x"))
            module, kind = FrameRateDecoder(teacher.hparams["inter_channels"], dim, blocks), "istft_decoder"
            build = module.config
        elif run.name.startswith("fe"):
            build = frontend_build(teacher, int(run.name.removeprefix("fe")),  # the widths read back from the weights
                                   int(state["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0]),
                                   dp_filter_channels=int(state["dp.conv_1.weight"].shape[0]))
            module, kind = parts.build_part("frontend", build), "frontend"
        elif run.name.startswith("flow"):
            hidden = int(run.name.removeprefix("flow"))
            module, kind, build = distill.flow_student(teacher, hidden), "flow", parts.flow_build(teacher, hidden)
        else:
            width = int(state["conv_pre.weight"].shape[0] if "conv_pre.weight" in state else state["conv_pre.weight_v"].shape[0])
            module = distill.decoder_student(teacher, width, "scratch")
            kind, build = "decoder", parts.decoder_build(teacher, width)
        if not any(k.endswith("weight_g") for k in state):
            parts.fold_weight_norm(module)  # trained without weight norm (pruned students): fold first, then load
        module.load_state_dict(state)
        parts.fold_weight_norm(module)
        before = info.get("before", {}).get(run.name, {})  # a start from packed files: their count goes on
        steps += int(before.get("steps", 0))
        hours, device_hours, trained_on = accounted_hours(info, before, seconds, env, args.device)  # pack may run elsewhere
        extra = {"student": run.name, "steps": steps, "seconds": seconds, "hours": hours, "device_hours": device_hours,
                 "recipe": info.get("recipe", "adversarial"), "device": trained_on}
        if (run / "keep.json").exists():
            extra["keep"] = json.loads((run / "keep.json").read_text())
        dest = save_part(module, out / run.name, kind, build, extra=extra)
        (dest / "curve.csv").write_text(curve)
        (dest / "env.json").write_text(json.dumps({**env, "steps": steps, "command": info.get("command", command),
                                                   "trained_on": trained_on, "device_hours": device_hours},
                                                  indent=1, default=str))
        print(f"packed {run.name}: {steps} steps, {hours:.2f} machine-hours, {device_hours:.3f} device-hours -> {dest}",
              flush=True)
        if args.ledger and kind in ("decoder", "istft_decoder", "flow", "frontend"):
            book = read(Path(args.ledger))
            seen = book[book["run"] == f"{work.name}/{run.name}"]
            if len(seen) and int(seen["steps"].iloc[-1]) == steps:
                print(f"ledger: {work.name}/{run.name} has no new checkpoint since its last row", flush=True)
                continue
            row = ledger_row(teacher, module, info, run=f"{work.name}/{run.name}", part=kind, steps=steps, hours=hours,
                             env=env, device=trained_on)
            append(Path(args.ledger), row)
            print(f"ledger: {row}", flush=True)

def ledger_row(teacher, module, info: dict, *, run: str, part: str, steps: int, hours: float, env: dict,
               device: str) -> dict:
    from datetime import datetime, timezone
    return {"run": run, "part": part, "recipe": info.get("recipe", "adversarial"), "device": device,
            "cpu_model": env.get("cpu_model"), "steps": steps, "hours": round(hours, 4),
            **{k: round(v, 4) for k, v in heldout_quality(teacher, module, info, part).items()},
            "heldout_secs": float("nan"), "heldout_wer": float("nan"),
            "commit": env.get("git"), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def main(argv=None) -> None:
    """`python -m lib.jobs.train_job SUBCOMMAND ...` (and `tts-lab train ...`): parse into the job's dataclass, run it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = tyro.extras.subcommand_cli_from_dict({job.NAME: job for job in JOBS}, args=argv,
                                               prog="python -m lib.jobs.train_job", description=__doc__.split("\n\n")[0])
    run(cfg, "python -m lib.jobs.train_job " + " ".join(argv))


def run(cfg, command: str) -> None:
    """Run one parsed job; a training run registers itself so that it pauses while anything on this machine is timed."""
    if isinstance(cfg, Bundle):
        print(f"bundle written to {write_bundle(Path(cfg.out), text.harvard_sentences(cfg.lists), cfg.dtype)}")
        if cfg.site:
            print(f"piper's training code and the librosa stand-in written to {write_site(Path(cfg.site))}")
        return
    if isinstance(cfg, Pack):
        return pack(cfg)
    cfg.command = command
    if cfg.device == "cpu":
        torch.set_num_threads(cfg.threads)  # from the start: a setup on torch's default threads oversubscribes
    job = Yielder(f"{cfg.NAME} {Path(cfg.work).name}").register()
    try:
        {Students: students, Regress: regress, RegressIstft: regress_istft, RegressFlow: regress_flow,
         RegressFrontend: regress_frontend}[type(cfg)](cfg)
    finally:
        job.close()


if __name__ == "__main__":
    main()
