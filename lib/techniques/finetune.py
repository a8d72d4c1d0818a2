"""Adaptation of the voice to a new target voice by full fine-tuning, LoRA (PEFT) or QLoRA (PEFT on a bitsandbytes
NF4 base), trained offline on the teacher's alignment with the target's audio (training.batches.AlignedSet) through
the one training loop (training.loop)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.training.batches import AlignedSet, aligned_segments


class VoicePath(torch.nn.Module):
    """What shapes the voice, run on a segment: text encoder -> the teacher's fixed alignment -> flow (reverse,
    noise off) -> decoder. It holds the voice's own modules, so training it trains (or adapts) the voice."""

    def __init__(self, model):
        super().__init__()
        self.enc_p, self.flow, self.dec = model.enc_p, model.flow, model.dec

    def forward(self, x, x_len, attn):
        frozen = not any(p.requires_grad for p in self.enc_p.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            _, m_p, _, _ = self.enc_p(x, x_len)
        z_p = torch.bmm(attn, m_p.transpose(1, 2)).transpose(1, 2)
        mask = (attn.sum(-1) > 0).unsqueeze(1).to(z_p.dtype)
        z = self.flow(z_p, mask, g=None, reverse=True)
        return self.dec(z * mask)


METHODS = ("full", "lora", "lora-attention", "qlora")
ATTENTION_PROJECTIONS = ("conv_q", "conv_k", "conv_v", "conv_o")


def lora_targets(model, scope: Sequence[str] = ("dec.", "flow.")) -> list[str]:
    """The layers LoRA can adapt within `scope`: Conv1d and Linear (bitsandbytes layers included). PEFT has no
    LoRA for ConvTranspose1d, and its Conv1d LoRA ignores dilation (the adapter's output would be longer than the
    layer's), so the decoder's upsampling layers and its dilated residual convolutions stay frozen."""
    import bitsandbytes as bnb
    kinds = (torch.nn.Conv1d, torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [n for n, m in model.named_modules() if isinstance(m, kinds) and n.startswith(tuple(scope))
            and tuple(getattr(m, "dilation", (1,))) == (1,)]


def attention_targets(model) -> list[str]:
    """The text encoder's attention projections (1x1 convolutions q, k, v, o)."""
    return [n for n, m in model.named_modules() if n.startswith("enc_p.") and n.endswith(ATTENTION_PROJECTIONS)]


@dataclass
class Adapted:
    """A copy of the voice prepared for one adaptation method: `voice` is the whole SynthesizerTrn (it sees the
    adapters), `trainable` the module to train (a VoicePath, wrapped by PEFT for LoRA and QLoRA)."""
    method: str
    voice: object
    trainable: object
    rank: int | None
    targets: list
    quantized: list

    @property
    def is_peft(self) -> bool:
        return self.method != "full"

    def trainable_params(self) -> int:
        return sum(p.numel() for p in self.trainable.parameters() if p.requires_grad)

    def merged(self):
        """The voice with adapters folded into its weights (PEFT merge_and_unload) in a copy: same architecture,
        so the same speed as the base voice. For QLoRA the NF4 base layers are dequantized first (their rounding
        stays), as a QLoRA model is deployed: an adapter cannot be added to packed 4-bit weights."""
        _drop_graph_caches(self.voice)
        if not self.is_peft:
            return copy.deepcopy(self.voice).eval()
        voice, path = copy.deepcopy((self.voice, self.trainable))
        if self.method == "qlora":
            _dequantize_bases(path)
        path.merge_and_unload()
        return voice.eval()

    def save(self, out_dir: Path, base: str = "", card: dict | None = None) -> Path:
        """What this method adds to the base voice, on disk, loadable without this repository's pickles: a PEFT
        adapter folder (`save_pretrained`, `base_model_name_or_path` = `base`) or, for full fine-tuning, the adapted
        modules' weights (`model.safetensors` + `config.json`); with a model card (README.md) from `card`."""
        from lib.core.results import atomic_write_json, atomic_write_text
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        info = {"method": self.method, "rank": self.rank, "base_model_name_or_path": base,
                "trainable_params": self.trainable_params(), "targets": list(self.targets), **(card or {})}
        if self.is_peft:
            for cfg in self.trainable.peft_config.values():
                cfg.base_model_name_or_path = base or None
            self.trainable.save_pretrained(str(out_dir))
        else:
            from safetensors.torch import save_file
            # float16 on disk: the flow and decoder in float32 are 35 MB, over the repository's 20 MiB bound for a
            # committed file; load_state_dict casts them back to the voice's float32
            weights = {n: p.detach().to(torch.float16).contiguous()
                       for n, p in self.trainable.named_parameters() if p.requires_grad}
            save_file(weights, str(out_dir / "model.safetensors"), metadata={"method": "full", "stored": "float16"})
        atomic_write_json(out_dir / "config.json", {"kind": "peft_adapter" if self.is_peft else "adapted_modules", **info})
        atomic_write_text(out_dir / "README.md", model_card(info))
        return out_dir


def model_card(info: dict) -> str:
    """A short model card for an adapter or adapted weights: what it is, its base, how it was trained, how to load."""
    base = info.get("base_model_name_or_path") or "the Piper voice it was trained on"
    lines = [f"# {info['method']}{'-r' + str(info['rank']) if info.get('rank') else ''} adaptation of {base}", "",
             f"- method: {info['method']}" + (f", LoRA rank {info['rank']}" if info.get("rank") else ""),
             f"- trainable parameters: {info['trainable_params']:,}",
             f"- base voice: {base}"]
    for key in ("target", "steps", "device", "recipe", "command", "commit"):
        if info.get(key) is not None:
            lines.append(f"- {key}: {info[key]}")
    lines += ["", "Load with `lib.techniques.finetune.load_adaptation(teacher, folder)` (PEFT `PeftModel.from_pretrained` on the "
              "voice's VoicePath for adapters; the safetensors weights into the same modules for full fine-tuning).",
              "Trained on the teacher's own synthetic corpus passed to the target; judged on Harvard lists no training "
              "sentence came from.", ""]
    return "\n".join(lines)


def load_adaptation(model, folder: Path):
    """A copy of `model` adapted by a folder from `Adapted.save`: a PEFT adapter merged into it, or full fine-tuning's
    weights loaded into it. A ValueError names the folder when it holds neither."""
    folder = Path(folder)
    if (folder / "adapter_config.json").is_file():  # merged, as deployed (a QLoRA adapter onto the float base)
        from peft import PeftModel
        voice = copy.deepcopy(model).cpu().eval()
        PeftModel.from_pretrained(VoicePath(voice), str(folder)).merge_and_unload()
        return voice.eval()
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        from safetensors.torch import load_file
        voice = copy.deepcopy(model).cpu().eval()
        path = VoicePath(voice)
        state = load_file(str(folder / "model.safetensors"))
        missing = [k for k in state if k not in dict(path.named_parameters())]
        if missing:
            raise ValueError(f"{folder}: weights {missing[:3]} do not belong to this voice")
        path.load_state_dict(state, strict=False)
        return voice
    raise ValueError(f"{folder} holds neither a PEFT adapter (adapter_config.json) nor adapted weights "
                     "(model.safetensors + config.json)")


def load_adapter(model, adapter_dir: Path):
    """A copy of `model` with a saved PEFT adapter (from `Adapted.save`) attached, ready to merge or to run."""
    from peft import PeftModel
    voice = copy.deepcopy(model).cpu().eval()
    path = PeftModel.from_pretrained(VoicePath(voice), str(adapter_dir))
    path.eval()
    return voice


class OtherTarget(ValueError):
    """A recorded adaptation trained for another target than the one asked for."""


def adaptation_for(model, folder: Path, target: str) -> tuple:
    """(a copy of `model` adapted by `folder`, the folder's config) when `folder` was trained for `target` (the
    target's description, as its `config.json` records it); an OtherTarget (a ValueError) says when it was not."""
    import json
    info = json.loads((Path(folder) / "config.json").read_text())
    if info.get("target") != target:
        raise OtherTarget(f"trained for another target ({info.get('target')!r}), not this run's ({target!r})")
    return load_adaptation(model, folder), info


def recorded_adaptations(model, roots: dict, target: str) -> tuple[dict, dict]:
    """Adapted voices recorded on other machines (`roots`: device -> its 02_lora_qlora folder) that were trained for
    `target` (see adaptation_for): ({method@device: merged voice}, {name: why it is absent}). A folder with a missing
    or unreadable file is named with the reason, never loaded half."""
    voices, absent = {}, {}
    for dev, root in roots.items():
        folders = sorted(f for f in Path(root).glob("*") if f.is_dir()) if Path(root).exists() else []
        if not folders:
            absent[f"adapters@{dev}"] = (f"no adaptation recorded on {dev} yet ({root} is empty or missing): train on a "
                                         "GPU and commit the adapter folders")
        for f in folders:
            try:
                voices[f"{f.name}@{dev}"] = adaptation_for(model, f, target)[0]
            except OtherTarget as exc:
                absent[f"{f.name}@{dev}"] = str(exc)
            except (OSError, ValueError, RuntimeError, KeyError) as exc:
                absent[f"{f.name}@{dev}"] = f"{f} cannot be loaded: {type(exc).__name__}: {str(exc)[:200]}"
    return voices, absent


def prepare(model, method: str, rank: int = 8, alpha: float | None = None, scope: Sequence[str] = ("dec.", "flow."),
            device: str = "cpu") -> Adapted:
    """A copy of `model` ready to train with `method`: 'full' (every weight of `scope` trainable), 'lora' (PEFT LoRA
    of `rank` on every Conv1d of `scope`), 'lora-attention' (LoRA on the text encoder's attention projections only)
    or 'qlora' (the 1x1 convolutions of `scope` frozen in bitsandbytes NF4, LoRA on every layer of `scope`).
    The text encoder, duration predictor and alignment stay the teacher's unless LoRA targets attention."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if rank is not None and rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    voice = copy.deepcopy(model).cpu().eval()
    quantized: list = []
    if method == "qlora":
        from lib.techniques.compress import bitsandbytes_status, bnb_convert
        ok, why = bitsandbytes_status("nf4", device)
        if not ok:
            raise RuntimeError(f"QLoRA needs bitsandbytes NF4 layers: {why}")
        voice, quantized = bnb_convert(voice, "nf4", device, scope=scope)
        if device == "cpu":  # bitsandbytes' CPU 4-bit kernel is far off its own weights (notebook 02, section 2)
            for name in quantized:
                _use_float_kernel(voice.get_submodule(name).linear)
    for p in voice.parameters():
        p.requires_grad_(False)
    path = VoicePath(voice)
    if method == "full":
        for name, p in path.named_parameters():
            p.requires_grad_(name.startswith(tuple(scope)))
        return Adapted(method, voice, path, None, [n for n, _ in path.named_parameters() if n.startswith(tuple(scope))], [])
    from peft import LoraConfig, get_peft_model
    targets = attention_targets(path) if method == "lora-attention" else lora_targets(path, scope)
    if not targets:
        raise ValueError(f"no layer for LoRA in scope {tuple(scope)}")
    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, lora_dropout=0.0, target_modules=targets, init_lora_weights=True)
    peft_model = get_peft_model(path, cfg)
    return Adapted(method, voice, peft_model, rank, targets, quantized)


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


def path_forward(path, batch):
    """Waveform mode for adaptation: (phonemes, lengths, alignment, target) -> (the voice's segment, target)."""
    x, x_len, attn, y = batch
    return path(x, x_len, attn), y


def train_adapted(adapted: Adapted, data: AlignedSet, recipe, ckpt_dir: Path, batch: int = 4, frames: int = 32,
                  threads: int = 2, progress: str | None = "adapt", device: str = "cpu", heldout: AlignedSet | None = None,
                  extra_loss=None):
    """Train `adapted.trainable` towards `data`'s target waveforms on random aligned segments with the shared
    recipe (lib.training.loop: mel, then discriminators after its warm-up); resumes from `ckpt_dir`, and a call on a
    finished folder only loads the trained weights. `heldout` gives the held-out mel curve."""
    from lib.training.loop import Trainer
    held = []
    if heldout is not None:
        rng = np.random.default_rng(1234)
        held = [aligned_segments(heldout, batch, frames, rng) for _ in range(2)]
    return Trainer(adapted.trainable, lambda rng: aligned_segments(data, batch, frames, rng), recipe, ckpt_dir,
                   forward=path_forward, extra_loss=extra_loss, eval_batches=held, device=device, threads=threads,
                   progress=progress).fit()


def train_job(spec: dict):
    """Train one method in this process from files (the voice ONNX, an AlignedSet's safetensors): the body of a
    subprocess whose peak memory the harness measures (bench.training_peak_mb)."""
    import warnings
    warnings.filterwarnings("ignore")
    from lib.voices.piper_torch import load_piper_torch
    teacher = load_piper_torch(Path(spec["onnx"]))
    data = AlignedSet.load(Path(spec["data"]))
    from lib.training.loop import Recipe
    adapted = prepare(teacher, spec["method"], rank=spec.get("rank") or 8)
    log = train_adapted(adapted, data, Recipe(**spec["recipe"]), Path(spec["ckpt_dir"]), batch=spec["batch"],
                        frames=spec["frames"], threads=spec.get("threads", 2), progress=spec.get("progress"),
                        device=spec.get("device", "cpu"))
    return log


def parse_method(name: str) -> tuple[str, int | None]:
    """'full' -> ('full', None); 'lora-r8' -> ('lora', 8); 'lora-attention-r16', 'qlora-r4' likewise."""
    if name == "full":
        return "full", None
    method, sep, rank = name.rpartition("-r")
    if not sep or method not in METHODS or method == "full" or not rank.isdigit() or int(rank) < 1:
        raise ValueError(f"methods: {name!r} is not a method; write 'full' or <method>-r<rank> with method one of "
                         f"{', '.join(m for m in METHODS if m != 'full')}, e.g. 'lora-r8'")
    return method, int(rank)


def nf4_kernel_check(model, ids: Sequence[int], scope: Sequence[str] = ("dec.", "flow.")) -> dict:
    """The voice with the 1x1 convolutions of `scope` in bitsandbytes NF4, run through bitsandbytes' own 4-bit
    kernel and through the float product of the same NF4 weights: mel L1 of each to the float voice (noise off).
    If the kernel's distance is far above the float product's, the kernel, not NF4, is what changes the voice."""
    from lib.techniques.compress import bnb_convert
    quantized, names = bnb_convert(model, "nf4", "cpu", scope=scope)
    floated = copy.deepcopy(quantized)
    for name in names:
        _use_float_kernel(floated.get_submodule(name).linear)
    from lib.training.loop import mel_l1 as mel
    x = torch.tensor([list(ids)])
    with torch.no_grad():
        run = lambda m: m.infer(x, torch.tensor([len(ids)]), noise_scale=0.0, noise_scale_w=0.0)[0]  # noqa: E731
        ref = run(model)
        return {"nf4_layers": len(names), "mel_l1_bnb_kernel": float(mel(run(quantized), ref)),
                "mel_l1_float_kernel": float(mel(run(floated), ref))}
