"""Track B measured: SpeechT5 fine-tuned by each method on a hub corpus and judged in the harness (`speecht5_track`),
and its training cost per method on a GPU machine without the hub (`speecht5_cost`,
`main`, which lib.jobs.device_launch runs there)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.core.results import atomic_write_json
from lib.core.subject import Technique
from lib.harness import bench, evaluate
from lib.harness.bench import size_mb
from lib.techniques.finetune import parse_method
from lib.techniques.speecht5 import (linear4bit_to_float, prepare_speecht5, speecht5_batches, speecht5_examples,
                                     speecht5_loss, speecht5_step)
from lib.training.loop import Recipe, Trainer
from lib.voices import hub

_LOGGER = logging.getLogger(__name__)

def speecht5_track(model: str, vocoder: str, dataset: str, methods: Sequence[str], steps: int, work: Path,
                   judges, writer, *, train_limit: int = 200, eval_limit: int = 20, speaker=7306,
                   lr_full: float = 1.0e-5, lr_lora: float = 1.0e-4, batch: int = 8, device: str = "cpu",
                   threads: int = 2, source: str | None = None, progress: bool = True):
    """Track B: SpeechT5 fine-tuned on a hub corpus's recordings by each of `methods` ('full', 'lora-rN',
    'qlora-rN'), same data and steps; per method trainable parameters, adapter size, s/step and peak GPU memory,
    then the (merged) model judged on held-out sentences against their recordings (MCD, F0, PESQ; DNSMOS, WER)
    beside the untrained base. Returns (training table, loss curves, per-clip quality)."""
    import pandas as pd
    from transformers import SpeechT5Processor
    sentences, recordings = hub.reference_set(dataset, train_limit + eval_limit, source=source, sample_rate=16000)
    if len(sentences) <= eval_limit:
        raise ValueError(f"dataset {dataset}: {len(sentences)} utterances, need more than eval_limit={eval_limit}")
    train, held_out = sentences[:-eval_limit], sentences[-eval_limit:]
    processor = hub.pretrained(SpeechT5Processor, model)
    base = prepare_speecht5(model, "full").eval()
    xvector = hub.speaker_xvector(speaker, base.config.speaker_embedding_dim)
    examples = speecht5_examples(processor, train, recordings, base.config.reduction_factor)
    rows, curves, per_clip = [], [], []

    def judge(name, net, technique):
        voice = hub.SpeechT5Voice(name=name, model=model, vocoder=vocoder, speaker=xvector, module=net.cpu())
        out = writer.about(name, technique, model="speecht5", parent="base" if name != "base" else "",
                           backend="torch-cpu", threads=1)
        df = evaluate.evaluate_quality(voice, held_out, judges, out, reference=recordings)
        per_clip.append(df)

    judge("base", base, Technique.BASELINE)
    full_params = sum(p.numel() for p in base.parameters())
    for name in methods:
        kind, _ = parse_method(name)
        net = prepare_speecht5(model, name, device=device)
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        batches = speecht5_batches(examples, xvector, batch, processor.tokenizer.pad_token_id)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        recipe = Recipe(steps=steps, lr=lr_full if kind == "full" else lr_lora, lr_decay=1.0, grad_clip=10.0,
                        checkpoint_every=50, log_every=1)
        log = Trainer(net, batches, recipe, Path(work) / f"speecht5-{name}", loss_fn=speecht5_step, device=device,
                      threads=threads, progress=f"speecht5 {name}" if progress else None).fit()
        saved = Path(work) / f"speecht5-{name}-adapter"
        net.save_pretrained(str(saved))
        row = {"variant": name, "trainable_params": trainable, "trained_pct_of_full": 100.0 * trainable / full_params,
               "adapter_mb": bench.size_mb(saved), "train_s_per_step": log.s_per_step,
               "final_loss": float(np.mean(log.loss[-10:]))}
        if device.startswith("cuda"):
            row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
        rows.append(row)
        curves.append(pd.DataFrame({"method": name, "step": log.steps, "loss": log.loss}))
        out = writer.about(name, Technique.FINETUNE, model="speecht5", parent="base", backend="torch-cpu",
                           device=device)
        out.add_many({k: v for k, v in row.items() if k in ("trainable_params", "train_s_per_step", "peak_gpu_mb")},
                     n=steps)
        out.add("size_mb", row["adapter_mb"])
        merged = net.merge_and_unload() if kind != "full" else net
        judge(name, linear4bit_to_float(merged) if kind == "qlora" else merged, Technique.FINETUNE)
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True), pd.concat(per_clip, ignore_index=True)


def speecht5_cost_inputs(out_dir: Path, sentences, recordings, tokenizer_corpus: Sequence[str]) -> Path:
    """What a GPU machine without internet needs to measure SpeechT5's training cost: a SpeechT5 processor (a
    character SentencePiece tokenizer trained on `tokenizer_corpus`, SpeechT5's feature extractor) and the
    (ids, log-mel) pairs of `sentences` spoken in `recordings` (16 kHz)."""
    import sentencepiece as spm
    from transformers import SpeechT5FeatureExtractor, SpeechT5Processor, SpeechT5Tokenizer
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    corpus = out_dir / "tokenizer_corpus.txt"
    corpus.write_text("\n".join(t.lower() for t in tokenizer_corpus), encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(out_dir / "spm_char"), vocab_size=60,
                                   model_type="char", character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2,
                                   unk_id=3, minloglevel=2)
    processor = SpeechT5Processor(feature_extractor=SpeechT5FeatureExtractor(),
                                  tokenizer=SpeechT5Tokenizer(str(out_dir / "spm_char.model")))
    processor.save_pretrained(out_dir / "processor")
    examples = speecht5_examples(processor, sentences, recordings, reduction_factor=2)
    torch.save({"examples": examples, "pad_id": processor.tokenizer.pad_token_id}, out_dir / "examples.pt")
    return out_dir


def speecht5_cost(inputs: Path, methods: Sequence[str], steps: int = 50, warmup: int = 10, batch: int = 8,
                  device: str = "cuda", lr: float = 1.0e-4, config: dict | None = None) -> list[dict]:
    """Training cost of each method on SpeechT5's own architecture (SpeechT5Config()'s defaults are
    microsoft/speecht5_tts's shape), randomly initialised because the hub is out of reach: trainable parameters,
    adapter size, seconds per step after `warmup` steps, peak GPU memory. Cost only: with random weights nothing
    here says anything about quality. `config` overrides SpeechT5Config fields (the tests shrink it)."""
    import tempfile
    from transformers import SpeechT5Config, SpeechT5ForTextToSpeech
    inputs = Path(inputs)
    saved = torch.load(inputs / "examples.pt", weights_only=False)
    model_dir = Path(tempfile.mkdtemp()) / "speecht5_random"
    torch.manual_seed(0)
    SpeechT5ForTextToSpeech(SpeechT5Config(**(config or {}))).save_pretrained(model_dir)
    rows = []
    for name in methods:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        net = prepare_speecht5(str(model_dir), name, device=device)
        params = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr)
        next_batch = speecht5_batches(saved["examples"], np.zeros(512, np.float32), batch, saved["pad_id"])
        rng = np.random.default_rng(0)
        times = []
        for step in range(warmup + steps):
            b = [t.to(device) for t in next_batch(rng)]
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loss = speecht5_loss(net, *b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - t0)
        out = Path(tempfile.mkdtemp()) / name
        net.save_pretrained(str(out))
        trainable = sum(p.numel() for p in params)
        total = sum(p.numel() for p in net.parameters())
        rows.append({"variant": name, "trainable_params": trainable, "total_params": total,
                     "adapter_mb": size_mb(out), "train_s_per_step": float(np.median(times)),
                     "train_s_per_step_p90": float(np.percentile(times, 90)),
                     "peak_gpu_mb": (torch.cuda.max_memory_allocated() / 2**20) if device.startswith("cuda") else None,
                     "final_loss": float(loss.detach()), "batch": batch, "steps_timed": steps})
        del net, opt, params
    return rows


def main(argv=None) -> int:
    """`speecht5-cost`: SpeechT5's training cost per method on a GPU machine (lib.jobs.device_launch runs it)."""
    import argparse

    import pandas as pd

    from lib.core.results import atomic_write_text
    from lib.harness.bench import environment
    ap = argparse.ArgumentParser(prog="python3 -m lib.jobs.device_launch BUNDLE lib.jobs.speecht5_bench",
                                 description="speecht5-cost: SpeechT5 training cost per method on a GPU machine")
    ap.add_argument("command", choices=["speecht5-cost"])
    ap.add_argument("--inputs", required=True, help="folder written by speecht5_cost_inputs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", nargs="+", default=["full", "lora-r8", "qlora-r8"])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = speecht5_cost(Path(a.inputs), a.methods, steps=a.steps, batch=a.batch, device=a.device)
    env = environment(device=a.device)
    if a.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    atomic_write_text(out / "speecht5_cost.csv", pd.DataFrame(rows).to_csv(index=False))
    atomic_write_json(out / "env.json", env)
    _LOGGER.info("%s", pd.DataFrame(rows).to_string())
    return 0
