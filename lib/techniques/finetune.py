"""What LoRA and QLoRA may adapt in a piper voice, and bitsandbytes' NF4 layers made usable on the CPU: the method
names, the layers each LoRA targets, the NF4 kernel check and the dequantization a QLoRA merge needs. The methods
themselves are lib.techniques.speaker_adapt."""
from __future__ import annotations

import copy
from typing import Sequence

import torch

from lib.techniques.compress import bnb_convert
from lib.training.losses import mel_l1 as mel

METHODS = ("full", "full-acoustic", "full-decoder", "full-prior", "lora", "lora-decoder", "lora-attention", "qlora")
# the methods without a rank (speaker_adapt.FULL_SCOPES says what each trains)
FULL = ("full", "full-acoustic", "full-decoder", "full-prior")
ATTENTION_PROJECTIONS = ("conv_q", "conv_k", "conv_v", "conv_o")


def lora_targets(model, scope: Sequence[str] = ("dec.", "flow.")) -> list[str]:
    """The layers LoRA adapts within `scope`: every Conv1d (dilated ones included), ConvTranspose1d and Linear
    (bitsandbytes layers included). PEFT itself has no LoRA for the transposed convolutions and ignores dilation,
    so its config must carry lib.techniques.lora_conv's layers (`lora_conv.register`)."""
    import bitsandbytes as bnb
    kinds = (torch.nn.Conv1d, torch.nn.ConvTranspose1d, torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [n for n, m in model.named_modules() if isinstance(m, kinds) and n.startswith(tuple(scope))]


def target_counts(targets: Sequence[str]) -> dict[str, int]:
    """How many adapted layers sit in the decoder, the flow and the text path (encoder, duration predictor):
    what the method table shows beside the trainable parameters."""
    parts = {"decoder": ("dec.",), "flow": ("flow.",), "text path": ("enc_p.", "dp.")}
    return {part: sum(t.removeprefix("base_model.model.").startswith(p) for t in targets)
            for part, p in parts.items()}


def attention_targets(model) -> list[str]:
    """The text encoder's attention projections (1x1 convolutions q, k, v, o)."""
    return [n for n, m in model.named_modules() if n.startswith("enc_p.") and n.endswith(ATTENTION_PROJECTIONS)]



def _nf4_forward_in_float(self, x):
    """Linear4bit's product with its NF4 weights dequantized to the input's dtype (what QLoRA computes)."""
    import bitsandbytes as bnb
    if getattr(self.weight.quant_state, "packing_format_for_cpu", False):
        self.state_dict()
    w = bnb.functional.dequantize_4bit(self.weight.data, self.weight.quant_state)
    return torch.nn.functional.linear(x, w.to(x.dtype).reshape(self.out_features, self.in_features),
                                      None if self.bias is None else self.bias.to(x.dtype))


def _use_float_kernel(layer) -> None:
    """Run a bitsandbytes 4-bit layer through `_nf4_forward_in_float`. bitsandbytes 0.50's CPU 4-bit kernels do not
    reproduce their own weights on this voice (the flow's NF4 layers through them move the output by a mel L1 of
    1.36, the same weights dequantized by 0.12; see notebook 02), so storage stays NF4 and only the kernel changes."""
    import types
    layer.forward = types.MethodType(_nf4_forward_in_float, layer)


def _dequantize_bases(module) -> None:
    """Replace every bitsandbytes 4-bit layer under a LoRA layer with the float Linear it stands for: the NF4
    weights dequantized, as training saw them (on CPUs with AVX512-BF16 bitsandbytes repacks 4-bit weights for a
    bf16 inference kernel; its own state_dict() unpacks them, which `dequantize_4bit` needs)."""
    import bitsandbytes as bnb
    for m in module.modules():
        base = getattr(m, "base_layer", None)
        if isinstance(base, bnb.nn.Linear4bit):
            base.state_dict()
            w = bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state)
            lin = torch.nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
            lin.weight = torch.nn.Parameter(w.float().reshape(base.out_features, base.in_features), requires_grad=False)
            if base.bias is not None:
                lin.bias = torch.nn.Parameter(base.bias.detach().float().clone(), requires_grad=False)
            m.base_layer = lin


def _drop_graph_caches(module) -> None:
    """Detach tensors that layers keep from their last forward pass (VITS attention keeps its weights as
    `.attn`): after training they carry autograd history, which deepcopy refuses."""
    for m in module.modules():
        for k, v in list(vars(m).items()):
            if isinstance(v, torch.Tensor) and v.grad_fn is not None:
                setattr(m, k, v.detach())



def parse_method(name: str) -> tuple[str, int | None]:
    """'full' -> ('full', None); 'full-acoustic' -> ('full-acoustic', None) (the other FULL likewise); 'lora-r8' ->
    ('lora', 8);
    'lora-decoder-r8', 'lora-attention-r16', 'qlora-r4' likewise."""
    if name in FULL:
        return name, None
    method, sep, rank = name.rpartition("-r")
    if not sep or method not in METHODS or method in FULL or not rank.isdigit() or int(rank) < 1:
        raise ValueError(f"methods: {name!r} is not a method; write {' or '.join(repr(m) for m in FULL)} or "
                         f"<method>-r<rank> with method one of {', '.join(m for m in METHODS if m not in FULL)}, "
                         f"e.g. 'lora-r8'")
    return method, int(rank)


def nf4_kernel_check(model, ids: Sequence[int], scope: Sequence[str] = ("dec.", "flow.")) -> dict:
    """The voice with the 1x1 convolutions of `scope` in bitsandbytes NF4, run through bitsandbytes' own 4-bit
    kernel and through the float product of the same NF4 weights: mel L1 of each to the float voice (noise off).
    If the kernel's distance is far above the float product's, the kernel, not NF4, is what changes the voice."""
    quantized, names = bnb_convert(model, "nf4", "cpu", scope=scope)
    floated = copy.deepcopy(quantized)
    for name in names:
        _use_float_kernel(floated.get_submodule(name).linear)
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        run = lambda m: m.infer(x, torch.tensor([len(ids)]), noise_scale=0.0, noise_scale_w=0.0)[0]
        ref = run(model)
        return {"nf4_layers": len(names), "mel_l1_bnb_kernel": float(mel(run(quantized), ref)),
                "mel_l1_float_kernel": float(mel(run(floated), ref))}
