"""Track B's technique: SpeechT5 (a hub model) made ready to fine-tune on recordings by full fine-tuning, LoRA or
QLoRA (PEFT; bitsandbytes NF4 base), its batches and its own loss. Trains through lib.training.loop; measures nothing
(lib.jobs.speecht5_bench does)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from lib.techniques.compress import bitsandbytes_status
from lib.techniques.finetune import parse_method
from lib.voices.hub import pretrained

SPEECHT5_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def speecht5_examples(processor, sentences, recordings, reduction_factor: int = 2) -> list[tuple]:
    """(token ids, log-mel target) per sentence, the mel cut to a multiple of the model's reduction factor."""
    out = []
    for s in sentences:
        audio = recordings[s.id]
        both = processor(text=s.text, audio_target=audio.samples, sampling_rate=audio.sample_rate, return_tensors="pt")
        ids, mel = both["input_ids"][0], both["labels"][0]
        mel = mel[: mel.shape[0] // reduction_factor * reduction_factor]
        if mel.shape[0] == 0 or ids.numel() == 0:
            raise ValueError(f"sentence {s.id}: no tokens or a recording shorter than one frame")
        out.append((ids, mel))
    return out


def speecht5_batches(examples: Sequence[tuple], xvector: np.ndarray, batch: int, pad_id: int):
    """A `next_batch(rng)` for the Trainer: padded ids, attention mask, mel labels padded with -100 (the value
    SpeechT5's loss masks), and the speaker x-vector for every row."""
    spk = torch.as_tensor(np.asarray(xvector, dtype=np.float32))[None]

    def next_batch(rng):
        picked = [examples[i] for i in rng.integers(0, len(examples), size=batch)]
        n_ids, n_mel = max(e[0].numel() for e in picked), max(e[1].shape[0] for e in picked)
        ids = torch.full((batch, n_ids), pad_id, dtype=torch.long)
        mask = torch.zeros((batch, n_ids), dtype=torch.long)
        labels = torch.full((batch, n_mel, picked[0][1].shape[1]), -100.0)
        for r, (i, m) in enumerate(picked):
            ids[r, : i.numel()], mask[r, : i.numel()], labels[r, : m.shape[0]] = i, 1, m
        return ids, mask, labels, spk.expand(batch, -1).contiguous()

    return next_batch


def speecht5_loss(module, ids, mask, labels, speaker):
    """SpeechT5's own training loss: L1 + MSE on the mel before and after the post-net, stop-token BCE, and its
    guided attention loss."""
    return module(input_ids=ids, attention_mask=mask, labels=labels, speaker_embeddings=speaker,
                  output_attentions=True, use_cache=False).loss


def speecht5_step(module, batch):
    """speecht5_loss on a batch tuple (the Trainer's regression interface)."""
    return speecht5_loss(module, *batch)


def prepare_speecht5(model: str, method: str, alpha: float | None = None, device: str = "cpu"):
    """SpeechT5ForTextToSpeech (hub id or folder) ready for `method`: 'full' (every weight trains), 'lora-rN'
    (PEFT LoRA on the attention projections of encoder and decoder) or 'qlora-rN' (the same LoRA on a base
    loaded in 4-bit NF4 by bitsandbytes through transformers' quantization_config; the mel and stop-token heads
    and the speech decoder pre-net stay in float: small, and their shapes (2 rows, 80 mel inputs) do not fit the CPU
    4-bit kernel's blocks; and on a CPU with avx512_bf16, bitsandbytes repacks 4-bit weights for its inference
    kernel at the first eval-mode call, after which they cannot train: evaluate after training). For the
    adapters the post-net's
    BatchNorm running statistics are frozen (momentum 0): they live in the base, not in the adapter file, so
    training must not move them or the saved adapter would not reproduce the trained model."""
    from transformers import SpeechT5ForTextToSpeech
    kind, rank = parse_method(method)
    if kind == "full":
        net = pretrained(SpeechT5ForTextToSpeech, model).to(device)
        net.train()
        return net
    if kind not in ("lora", "qlora"):
        raise ValueError(f"SpeechT5 methods are 'full', 'lora-rN' and 'qlora-rN', not {method!r}")
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    if kind == "qlora":
        ok, why = bitsandbytes_status("nf4", device)
        if not ok:
            raise RuntimeError(f"QLoRA needs bitsandbytes: {why}")
        from transformers import BitsAndBytesConfig
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32,
                                   llm_int8_skip_modules=["feat_out", "prob_out", "speecht5.decoder.prenet"])
        net = pretrained(SpeechT5ForTextToSpeech, model, quantization_config=quant, device_map={"": device})
        net = prepare_model_for_kbit_training(net, use_gradient_checkpointing=False)
    else:
        net = pretrained(SpeechT5ForTextToSpeech, model).to(device)
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    cfg = LoraConfig(r=rank or 8, lora_alpha=alpha or 2 * (rank or 8), lora_dropout=0.0,
                     target_modules=list(SPEECHT5_LORA_TARGETS))
    return get_peft_model(net, cfg)


def linear4bit_to_float(module):
    """Every bitsandbytes Linear4bit of `module` replaced by a float nn.Linear holding its dequantized weights
    (NF4 rounding kept): how a QLoRA model is evaluated and deployed where the 4-bit kernels are missing or, on
    this CPU, numerically off (see nf4_kernel_check)."""
    import bitsandbytes as bnb
    for name, child in list(module.named_modules()):
        for attr, layer in list(child.named_children()):
            if isinstance(layer, bnb.nn.Linear4bit):
                w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
                dense = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
                dense.weight.data.copy_(w.cpu())
                if layer.bias is not None:
                    dense.bias.data.copy_(layer.bias.data.float().cpu())
                setattr(child, attr, dense)
    if getattr(module, "is_quantized", False):
        module.is_quantized, module.hf_quantizer = False, None
    return module.cpu()
