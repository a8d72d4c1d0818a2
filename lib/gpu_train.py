"""The long training runs, as a job a lent GPU machine runs on its own (`setsid`), within the device tool's limits:
full state (generators, discriminators, optimizers, RNG) stays on that machine's disk under --work; `pack` copies
the small part (each student's folded generator as safetensors + config.json, its curve, env) to --out, which
comes back and is committed under outputs/recorded/<device>/04_distillation/. The next GPU session resumes the
generators from the committed artefacts (--init-from) with fresh discriminators after a short warm-up.

    python -m lib.gpu_train students --work /tmp/train --out "$OUT" --device cuda --mixed-precision bf16 \
        --decoder-steps 20000 --adversarial-steps 18000 --flow-steps 10000 --recovery-steps 20000
    python -m lib.gpu_train adapt --work /tmp/adapt --data aligned_set.safetensors --target "<notebook 02's target>" \
        --steps 5000 --adversarial-steps 4000 --f0-weight 2
    python -m lib.gpu_train pack --work /tmp/train --out "$OUT"

The same code runs on a CPU with a few steps (the tests do), and under `accelerate launch` on several GPUs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

CORPUS_LISTS = list(range(11, 31))  # the synthetic corpus of notebooks 03/04; lists 1-10 are judged, 31 held out
HELDOUT_LISTS = [31]


def _recipe(steps: int, adversarial: int, args):
    from .training import Recipe
    return Recipe(steps=steps, lr=args.lr, warmup_steps=max(0, steps - adversarial), mixed_precision=args.mixed_precision,
                  discriminators=tuple(args.discriminators), checkpoint_every=args.checkpoint_every,
                  eval_every=args.eval_every, log_every=args.log_every)


def _init_from(module, art_dir: Path) -> bool:
    """Start a generator from a committed artefact of the same shape, when there is one."""
    from .artefacts import ArtefactError, load_part
    if not (art_dir / "config.json").exists():
        return False
    try:
        loaded, _ = load_part(art_dir)
    except ArtefactError as exc:
        print(f"not resuming from {art_dir}: {exc}", flush=True)
        return False
    from .distill import finalize
    finalize(module)  # artefacts hold folded weights; the resumed run trains them without weight norm
    module.load_state_dict(loaded.state_dict())
    print(f"generator initialised from {art_dir}", flush=True)
    return True


def students(args) -> None:
    from . import compress, distill, finetune, text, voices
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    onnx_path, config = voices.joe_paths()
    teacher = voices.load_piper_torch(onnx_path)  # stays on the CPU: it only makes the training targets
    fe = voices.PiperFrontend(config)
    sents = text.harvard_sentences(CORPUS_LISTS)[: args.corpus_limit or None]
    held = text.harvard_sentences(HELDOUT_LISTS)[:4]
    latents = finetune.teacher_latents(teacher, [fe.phoneme_ids(s.text)[0] for s in sents], [s.id for s in sents])
    heldout = finetune.teacher_latents(teacher, [fe.phoneme_ids(s.text)[0] for s in held], [s.id for s in held])
    init = Path(args.init_from) if args.init_from else None
    widths = [int(w) for w in args.widths]
    recipes = [_recipe(args.decoder_steps, args.adversarial_steps, args) for _ in widths]
    started = time.time()
    studs, curves, chain_end = distill.train_chain(
        teacher, latents, widths, recipes, work, compare_scratch=False, batch=args.batch, frames=args.frames,
        heldout=heldout, device=args.device, threads=args.threads, progress=False,
        prepare=(lambda name, module: _init_from(module, init / name)) if init is not None else None)
    flow_name = f"flow{args.flow_hidden}"
    flow = distill.flow_student(teacher, args.flow_hidden)
    if init is not None:
        _init_from(flow, init / flow_name)
    from .training import Recipe
    pairs = distill.flow_pairs(teacher, [fe.phoneme_ids(s.text)[0] for s in sents])
    curves[flow_name] = distill.train_flow(flow, pairs, Recipe(steps=args.flow_steps, lr=5e-4, checkpoint_every=args.checkpoint_every,
                                                               log_every=args.log_every, mixed_precision=args.mixed_precision),
                                           work / flow_name, device=args.device, threads=args.threads, progress=None)
    if args.istft_steps:  # the 5x voice's frame-rate decoder, from scratch on the teacher's own audio
        from .istft_decoder import FrameRateDecoder
        from .training import train_decoder
        name = f"istft{args.istft_dim}x{args.istft_blocks}"
        voc = FrameRateDecoder(teacher.hparams["inter_channels"], args.istft_dim, args.istft_blocks,
                               hop=int(latents.hop))
        if init is not None:
            _init_from(voc, init / name)
        curves[name] = train_decoder(voc, latents, _recipe(args.istft_steps, args.istft_adversarial_steps, args),
                                     work / name, batch=args.batch, frames=args.frames, heldout=heldout,
                                     device=args.device, threads=args.threads, progress=None)
    if args.recovery_steps:
        name = f"structured-{int(args.structured_ratio * 100)}"
        rec = compress.prune_structured(teacher.dec, args.structured_ratio, latents.z[0])
        if init is not None:
            _init_from(rec, init / name)
        from .training import train_decoder
        curves[name] = train_decoder(rec, latents, _recipe(args.recovery_steps, args.adversarial_steps, args),
                                     work / name, batch=args.batch, frames=args.frames, heldout=heldout,
                                     device=args.device, threads=args.threads, progress=None)
        studs[name] = distill.finalize(rec.cpu())
    (work / "done.json").write_text(json.dumps({"chain_end": chain_end, "seconds": time.time() - started,
                                                "command": args.command}))
    print(f"trained {', '.join(curves)} in {time.time() - started:.0f} s", flush=True)


def adapt(args) -> None:
    """Adaptation (notebook 02's methods) on the aligned set notebook 02 wrote (`--data`, safetensors), with the shared
    recipe and the F0 term; each finished method's adapter (PEFT) or weights (full) go to --work/adapters/<method>,
    which `pack` copies out. A re-run resumes every method from its state folder."""
    from . import finetune, voices
    from .training import Recipe
    work = Path(args.work)
    data = finetune.AlignedSet.load(Path(args.data))
    teacher = voices.load_piper_torch(voices.joe_paths()[0])
    started = time.time()
    for name in args.methods:
        method, rank = finetune.parse_method(name)
        recipe = Recipe(steps=args.steps, lr=args.lr_full if method == "full" else args.lr_lora,
                        warmup_steps=max(0, args.steps - args.adversarial_steps), f0_weight=args.f0_weight,
                        discriminators=tuple(args.discriminators), mixed_precision=args.mixed_precision,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every)
        a = finetune.prepare(teacher, method, rank=rank or 8, device=args.device)
        curve = finetune.train_adapted(a, data, recipe, work / name, batch=args.batch, frames=args.frames,
                                       threads=args.threads, progress=None, device=args.device)
        a.trainable.cpu()
        dest = a.save(work / "adapters" / name, base=args.base, card={
            "target": args.target, "steps": args.steps, "device": args.device, "recipe": asdict(recipe),
            "command": args.command, "s_per_step": curve.s_per_step})
        (dest / "curve.csv").write_text((work / name / "curve.csv").read_text())
        print(f"adapted {name}: {curve.steps_done} steps, {curve.s_per_step:.3f} s/step -> {dest}", flush=True)
    (work / "done.json").write_text(json.dumps({"seconds": time.time() - started, "command": args.command}))


def pack(args) -> None:
    """Copy each student's latest saved generator (folded, safetensors + config.json), curve and env to --out."""
    import pandas as pd
    from safetensors.torch import load_file
    from . import bench, distill, voices
    from .artefacts import save_part
    work, out = Path(args.work), Path(args.out)
    teacher = voices.load_piper_torch(voices.joe_paths()[0])
    env = bench.environment(device=args.device)
    command = json.loads((work / "done.json").read_text())["command"] if (work / "done.json").exists() else "(running)"
    import shutil
    for folder in sorted((work / "adapters").glob("*")) if (work / "adapters").exists() else []:
        shutil.copytree(folder, out / folder.name, dirs_exist_ok=True)
        (out / folder.name / "env.json").write_text(json.dumps({**env, "command": command}, indent=1, default=str))
        print(f"packed adapter {folder.name} -> {out / folder.name}", flush=True)
    students = ("dec", "flow", "istft", "structured")  # run folders of `students`; adaptation runs pack as adapters
    for run in sorted(p for p in work.iterdir() if (p / "state" / "model.safetensors").exists() and p.name.startswith(students)):
        state = load_file(str(run / "state" / "model.safetensors"))
        curve = (run / "curve.csv").read_text() if (run / "curve.csv").exists() else ""
        frame = pd.read_csv(run / "curve.csv") if curve.count("\n") > 1 else pd.DataFrame({"step": [0], "seconds": [0.0]})
        steps, seconds = int(frame["step"].iloc[-1]), float(frame["seconds"].iloc[-1])
        if run.name.startswith("istft"):
            from .istft_decoder import FrameRateDecoder
            dim, blocks = (int(v) for v in run.name.removeprefix("istft").split("x"))
            module, kind = FrameRateDecoder(teacher.hparams["inter_channels"], dim, blocks), "istft_decoder"
            build = module.config
        elif run.name.startswith("flow"):
            hidden = int(run.name.removeprefix("flow"))
            module, kind, build = distill.flow_student(teacher, hidden), "flow", distill.flow_build(teacher, hidden)
        else:
            width = int(state["conv_pre.weight"].shape[0] if "conv_pre.weight" in state else state["conv_pre.weight_v"].shape[0])
            module = distill.decoder_student(teacher, width, "scratch")
            kind, build = "decoder", distill.decoder_build(teacher, width)
        if not any(k.endswith("weight_g") for k in state):
            distill.finalize(module)  # trained without weight norm (pruned students): fold first, then load
        module.load_state_dict(state)
        distill.finalize(module)
        dest = save_part(module, out / run.name, kind, build, extra={"student": run.name, "steps": steps, "seconds": seconds,
                                                                         "device": env.get("gpu") or args.device})
        (dest / "curve.csv").write_text(curve)
        (dest / "env.json").write_text(json.dumps({**env, "steps": steps, "command": command}, indent=1, default=str))
        print(f"packed {run.name}: {steps} steps -> {dest}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m lib.gpu_train", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("students", help="train the decoder chain, the flow student and the pruned decoder's recovery")
    s.add_argument("--work", required=True, help="folder for the full training state (the machine's own disk)")
    s.add_argument("--init-from", default="", help="a committed outputs/recorded/<device>/04_distillation to resume from")
    s.add_argument("--device", default="cuda")
    s.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    s.add_argument("--widths", nargs="+", default=[128, 64])
    s.add_argument("--decoder-steps", type=int, default=20000)
    s.add_argument("--adversarial-steps", type=int, default=18000)
    s.add_argument("--discriminators", nargs="+", default=["mpd", "mrd"])
    s.add_argument("--flow-hidden", type=int, default=96)
    s.add_argument("--flow-steps", type=int, default=10000)
    s.add_argument("--recovery-steps", type=int, default=20000)
    s.add_argument("--structured-ratio", type=float, default=0.5)
    s.add_argument("--istft-steps", type=int, default=0, help="train the 5x voice's frame-rate iSTFT decoder too")
    s.add_argument("--istft-adversarial-steps", type=int, default=0)
    s.add_argument("--istft-dim", type=int, default=256)
    s.add_argument("--istft-blocks", type=int, default=6)
    s.add_argument("--lr", type=float, default=2.0e-4)
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--frames", type=int, default=32)
    s.add_argument("--corpus-limit", type=int, default=0)
    s.add_argument("--checkpoint-every", type=int, default=500)
    s.add_argument("--eval-every", type=int, default=500)
    s.add_argument("--log-every", type=int, default=50)
    s.add_argument("--threads", type=int, default=8)
    a = sub.add_parser("adapt", help="notebook 02's adaptation methods on its aligned set, with the F0 term")
    a.add_argument("--work", required=True)
    a.add_argument("--data", required=True, help="the aligned_set.safetensors notebook 02 wrote for this target")
    a.add_argument("--target", required=True, help="the target's description, as notebook 02 prints it")
    a.add_argument("--base", default="piper:en_US-joe-medium")
    a.add_argument("--methods", nargs="+", default=["full", "lora-r4", "lora-r8", "lora-r16", "lora-attention-r16", "qlora-r8"])
    a.add_argument("--steps", type=int, default=5000)
    a.add_argument("--adversarial-steps", type=int, default=4000)
    a.add_argument("--f0-weight", type=float, default=2.0)
    a.add_argument("--discriminators", nargs="+", default=["mpd"])
    a.add_argument("--lr-full", type=float, default=2.0e-4)
    a.add_argument("--lr-lora", type=float, default=1.0e-3)
    a.add_argument("--batch", type=int, default=16)
    a.add_argument("--frames", type=int, default=32)
    a.add_argument("--device", default="cuda")
    a.add_argument("--mixed-precision", default="bf16", choices=["no", "bf16", "fp16"])
    a.add_argument("--checkpoint-every", type=int, default=500)
    a.add_argument("--log-every", type=int, default=50)
    a.add_argument("--threads", type=int, default=8)
    k = sub.add_parser("pack", help="copy the latest generators, adapters, curves and env to --out")
    k.add_argument("--work", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--device", default="cuda")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.command = "python -m lib.gpu_train " + " ".join(argv)
    {"students": students, "adapt": adapt, "pack": pack}[args.cmd](args)


if __name__ == "__main__":
    main()
