"""Adaptation as a long run (issue 25): notebook 02's methods trained toward a real other speaker for hours, on the
CPU across sessions or on a lent GPU. The job builds its own aligned set (the target speaker on the teacher's timing,
notebook 02's corpus lists) and a held-out set (lists no training step touches), keeps its full state in --work, and
`pack` writes each method's adapter (PEFT) or weights (full) from the latest state, with a ledger row: held-out mel L1
to the target's audio and SECS to the target speaker. A start with --init-from goes on from packed adapters.

Reached through `python -m lib.jobs.train_job adapt ...` and `... pack` (train_job owns the command line)."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lib.jobs.run_state import accounted_hours, gpu_name, packed_count

ADAPT_CORPUS_LISTS = [11, 12, 13, 14, 15, 16]  # notebook 02's `corpus_lists`: its adapters and these share a target set


def target_voice(spec: str, threads: int):
    """`voice:speaker` (e.g. kokoro-82m:jf_alpha) as the target on the teacher's timing (SpeakerTarget)."""
    from lib.techniques import adapt_targets
    from lib.voices import synth as voices
    other, _, speaker = spec.partition(":")
    if other not in voices.VOICE_NAMES:
        raise ValueError(f"--target-speaker {spec!r}: the voice must be one of {voices.VOICE_NAMES} (e.g. 'kokoro-82m:jf_alpha')")
    return adapt_targets.SpeakerTarget(voices.load_voice(other, threads=threads, **({"speaker": speaker} if speaker else {})))


def aligned_sets(teacher, work: Path, *, target_speaker: str, corpus_lists, corpus_limit: int, heldout_lists,
                 heldout_limit: int, threads: int):
    """(training set, held-out set, the target's description): built once and kept in `work` as safetensors; a later
    start with the same target and lists loads them."""
    from lib.core import text
    from lib.training.batches import AlignedSet, aligned_set
    from lib.voices import synth as voices
    spec = {"target_speaker": target_speaker, "corpus_lists": list(corpus_lists), "corpus_limit": corpus_limit,
            "heldout_lists": list(heldout_lists), "heldout_limit": heldout_limit}
    meta, train_path, held_path = work / "sets.json", work / "aligned_set.safetensors", work / "heldout_set.safetensors"
    if meta.exists() and train_path.exists() and held_path.exists():
        kept = json.loads(meta.read_text())
        if kept.get("spec") == spec:
            return AlignedSet.load(train_path), AlignedSet.load(held_path), kept["target"]
    shift = target_voice(target_speaker, threads)
    fe = voices.PiperFrontend(voices.joe_paths()[1])

    def build(sents, path):
        return aligned_set(teacher, fe.sentence_ids(sents), [s.id for s in sents], target=shift,
                           sample_rate=fe.sample_rate, texts=[s.text for s in sents], progress=None).save(path)
    started = time.time()
    build(text.harvard_sentences(corpus_lists)[: corpus_limit or None], train_path)
    build(text.harvard_sentences(heldout_lists)[:heldout_limit], held_path)
    from lib.core.results import atomic_write_json
    atomic_write_json(meta, {"spec": spec, "target": shift.describe(), "seconds": time.time() - started})
    print(f"aligned sets for {shift.describe()} built in {time.time() - started:.0f} s", flush=True)
    return AlignedSet.load(train_path), AlignedSet.load(held_path), shift.describe()


def _resume_from(adapted, folder: Path) -> dict | None:
    """Load a packed adapter (PEFT) or adapted weights (full) of the same method into `adapted`; its config.json."""
    if not (folder / "config.json").exists():
        return None
    config = json.loads((folder / "config.json").read_text())
    if adapted.is_peft:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file
        set_peft_model_state_dict(adapted.trainable, load_file(str(folder / "adapter_model.safetensors")))
    else:
        from safetensors.torch import load_file
        adapted.trainable.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    print(f"{folder.name} initialised from {folder} ({config.get('steps', 0)} steps, {config.get('hours', 0.0):.2f} h)",
          flush=True)
    return config


def _run_info(work: Path, **update) -> dict:
    from lib.core.results import atomic_write_json
    info = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {}
    info.update(update)
    atomic_write_json(work / "run.json", info)
    return info


def adapt(args, heldout_lists) -> None:
    """Train each of --methods toward the target (one after the other; one method per process is the way to run them
    side by side), resuming from --work's state, or from packed adapters (--init-from) on a fresh machine."""
    import os
    from lib.techniques import finetune
    from lib.training.batches import AlignedSet
    from lib.training.loop import Recipe
    from lib.voices import piper_torch
    from lib.voices import synth as voices
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    if args.data:
        if not args.target:
            raise ValueError("--data needs --target (the target's description, as notebook 02 prints it)")
        data, heldout, target = AlignedSet.load(Path(args.data)), None, args.target
    else:
        data, heldout, target = aligned_sets(teacher, work, target_speaker=args.target_speaker,
                                             corpus_lists=args.corpus_lists, corpus_limit=args.corpus_limit,
                                             heldout_lists=heldout_lists, heldout_limit=args.heldout_limit,
                                             threads=args.threads)
    info = _run_info(work, threads=args.threads, cores=os.cpu_count(), command=args.command, recipe="adapt",
                     target=target, base=args.base, device=args.device, gpu=gpu_name(args.device))
    started = time.time()
    for name in args.methods:
        method, rank = finetune.parse_method(name)
        a = finetune.prepare(teacher, method, rank=rank or 8, device=args.device)
        if args.init_from and not (work / name / "state").exists():
            config = _resume_from(a, Path(args.init_from) / name)
            if config:
                info = _run_info(work, before={**info.get("before", {}), name: packed_count(config)})
        # --steps is the run's whole budget, packed steps included (as for regress): the rest trains here, and the
        # learning rate goes on decaying from where the packed run left it
        done = int(info.get("before", {}).get(name, {}).get("steps", 0))
        steps = max(1, args.steps - done)
        recipe = Recipe(steps=steps, lr=args.lr_full if method == "full" else args.lr_lora, schedule_offset=done,
                        warmup_steps=max(0, steps - args.adversarial_steps), f0_weight=args.f0_weight,
                        discriminators=tuple(args.discriminators), mixed_precision=args.mixed_precision,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every, eval_every=args.eval_every)
        curve = finetune.train_adapted(a, data, recipe, work / name, batch=args.batch, frames=args.frames,
                                       threads=args.threads, progress=None, device=args.device, heldout=heldout)
        a.trainable.cpu()
        dest = a.save(work / "adapters" / name, base=args.base, card={
            "target": target, "steps": args.steps, "device": args.device, "recipe": asdict(recipe),
            "command": args.command, "s_per_step": curve.s_per_step})
        (dest / "curve.csv").write_text((work / name / "curve.csv").read_text())
        print(f"adapted {name}: {curve.steps_done} steps, {curve.s_per_step:.3f} s/step -> {dest}", flush=True)
    (work / "done.json").write_text(json.dumps({"seconds": time.time() - started, "command": args.command}))


def heldout_quality(teacher, adapted_voice, heldout, threads: int = 1) -> dict:
    """Mel L1 to the target's audio on the held-out utterances (whole, on the teacher's timing) and SECS to the
    target speaker of the adapted voice and of the teacher on the same utterances, with the target's own ceiling."""
    from lib.core.audio import Audio
    from lib.harness.judges import speaker_similarity
    from lib.techniques.finetune import VoicePath
    from lib.training.loop import mel_l1
    sr = teacher.sample_rate
    clips = {"adapted": [], "teacher": []}
    mel = []
    with torch.no_grad():
        for x, a, y in zip(heldout.phonemes, heldout.attn, heldout.wav):
            args = (x[None], torch.tensor([x.numel()]), a[None])
            for name, voice in (("adapted", adapted_voice), ("teacher", teacher)):
                out = VoicePath(voice.eval())(*args)[..., : y.shape[-1]]
                clips[name].append(Audio(out.flatten().numpy(), sr))
                if name == "adapted":
                    mel.append(float(mel_l1(out, y, sr)))
    target = [Audio(y.flatten().numpy(), sr) for y in heldout.wav]
    secs, ceiling = speaker_similarity(clips, target, threads=threads)
    return {"heldout_mel_l1": float(np.mean(mel)), "heldout_secs": secs["adapted"],
            "teacher_secs": secs["teacher"], "target_self_secs": ceiling}


def pack_adapters(work: Path, out: Path, teacher, env: dict, *, device: str, ledger: str, heldout_lists) -> None:
    """Each method's latest state as an adapter folder (PEFT) or adapted weights (full) under `out`, with card,
    curve and env; a ledger row per new checkpoint (held-out mel L1 to the target, SECS to the target speaker), and
    heldout.json beside the pack with the SECS that scale it (the teacher's to the target, the target's own)."""
    import pandas as pd
    from safetensors.torch import load_file
    from lib.techniques import finetune
    from lib.training.batches import AlignedSet
    from lib.core.results import atomic_write_text
    from lib.training.ledger import append, read
    info = json.loads((work / "run.json").read_text())
    held_path = work / "heldout_set.safetensors"
    for folder in sorted(p for p in work.iterdir() if (p / "state" / "model.safetensors").exists()):
        try:
            method, rank = finetune.parse_method(folder.name)
        except ValueError:
            continue  # a student's folder: train_job's pack handles it
        a = finetune.prepare(teacher, method, rank=rank or 8)
        state = {k.removeprefix("module."): v for k, v in load_file(str(folder / "state" / "model.safetensors")).items()}
        unexpected = a.trainable.load_state_dict(state, strict=False).unexpected_keys
        if unexpected:
            raise ValueError(f"{folder}/state/model.safetensors: weights {unexpected[:3]} are not a {folder.name} adaptation")
        frame = pd.read_csv(folder / "curve.csv")
        before = info.get("before", {}).get(folder.name, {})
        steps = int(frame["step"].iloc[-1]) + int(before.get("steps", 0))
        hours, device_hours, trained_on = accounted_hours(info, before, float(frame["seconds"].iloc[-1]), env, device)
        dest = a.save(out / folder.name, base=info.get("base", ""), card={
            "target": info.get("target"), "steps": steps, "hours": round(hours, 4),
            "device_hours": round(device_hours, 4), "device": trained_on,
            "recipe": json.loads((folder / "recipe.json").read_text()), "command": info.get("command")})
        (dest / "curve.csv").write_text((folder / "curve.csv").read_text())
        (dest / "env.json").write_text(json.dumps({**env, "steps": steps, "command": info.get("command")}, indent=1, default=str))
        print(f"packed adapter {folder.name}: {steps} steps, {hours:.2f} machine-hours -> {dest}", flush=True)
        run = f"{work.name}/{folder.name}"
        if not ledger or not held_path.exists():
            continue
        seen = read(Path(ledger))
        seen = seen[seen["run"] == run]
        if len(seen) and int(seen["steps"].iloc[-1]) == steps:
            print(f"ledger: {run} has no new checkpoint since its last row", flush=True)
            continue
        quality = heldout_quality(teacher, a.merged(), AlignedSet.load(held_path))
        # beside the pack, what gives its SECS a scale: the teacher's SECS to the target and the target's to itself
        atomic_write_text(dest / "heldout.json", json.dumps({"steps": steps, "heldout_lists": list(heldout_lists),
                                                           **{k: round(float(v), 4) for k, v in quality.items()}}, indent=1))
        from datetime import datetime, timezone
        append(Path(ledger), {"run": run, "part": "adapter", "recipe": folder.name, "device": trained_on,
                              "cpu_model": env.get("cpu_model"), "steps": steps, "hours": round(hours, 4),
                              "heldout_pesq": np.nan, "heldout_mel_l1": round(quality["heldout_mel_l1"], 4),
                              "heldout_secs": round(quality["heldout_secs"], 4), "heldout_wer": np.nan, "commit": env.get("git"),
                              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        print(f"ledger: {run} {quality}", flush=True)
