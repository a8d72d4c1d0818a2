"""Adaptation to a speaker's own recordings (lib.training.vits_objective): on the inference path with the
recordings' own durations (the default: what the voice runs when it speaks), or piper's posterior path. Each method
as a spec that renders its name, the modules it trains, its preparation (PEFT LoRA, QLoRA on an NF4 base), and the
files it ships (a PEFT adapter folder, or the full voice's weights as sharded safetensors), with a model card."""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm
from huggingface_hub import ModelCard, load_torch_model, save_torch_state_dict
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from lib.core.results import atomic_write_json
from lib.data import ljspeech
from lib.techniques import finetune, lora_conv
from lib.voices.artefacts import check_teacher, voice_identity
from lib.voices.cards import adapter_card
from lib.training.vits_objective import NOISE_SCALE, InferencePath, TrainPath, forward_of

_LOGGER = logging.getLogger(__name__)

ACOUSTIC = ("dec.", "flow.")  # what the adapter methods adapt; the text path (enc_p) and durations (dp) stay frozen
# the weights each method without a rank trains, by name prefix: every weight; the flow and decoder (the text path
# frozen); the decoder alone, where the adapted voices' timbre lives (study adaptation-parts); the flow, the decoder and
# the text encoder's projection to the prior (its per-phoneme statistics read from the frozen encoder's states)
DECODER = ("dec.",)
FULL_SCOPES = {"full": ("",), "full-acoustic": ACOUSTIC, "full-decoder": DECODER,
               "full-prior": (*ACOUSTIC, "enc_p.proj.")}
LORA_SCOPES = {"lora": ACOUSTIC, "lora-decoder": DECODER, "qlora": ACOUSTIC}  # lora-attention: attention projections
PATHS = ("inference", "posterior")
TrainingPath = Literal["inference", "posterior"]  # what the acoustic loss goes through
OBJECTIVES = {"inference": "the inference path (text encoder, the recordings' own durations, flow reversed from the "
                           "prior with noise, decoder), mel L1 x45, the duration loss where the text path trains, "
                           "discriminators after a warm-up",
              "posterior": "piper's (posterior encoder, MAS, KL, duration, mel L1 x45, discriminators after a warm-up)"}
SHARD = "16MB"  # the full voice in float16 is ~32 MB: shards stay under the repository's 20 MiB bound per file


@dataclass(frozen=True)
class Method:
    """An adaptation method: one of FULL_SCOPES ('full', 'full-acoustic', ...), or 'lora' / 'lora-decoder' /
    'lora-attention' / 'qlora' with a LoRA rank."""
    kind: str
    rank: int | None = None

    def __post_init__(self):
        if self.kind not in finetune.METHODS:
            raise ValueError(f"method {self.kind!r}: use one of {', '.join(finetune.METHODS)}")
        if (self.kind in finetune.FULL) != (self.rank is None) or (self.rank is not None and self.rank < 1):
            need = "takes no rank" if self.kind in finetune.FULL else "needs a rank >= 1"
            raise ValueError(f"method {self.kind!r} with rank {self.rank!r}: {self.kind} {need}")

    @property
    def name(self) -> str:
        return self.kind if self.rank is None else f"{self.kind}-r{self.rank}"

    @classmethod
    def parse(cls, name: str) -> "Method":
        return cls(*finetune.parse_method(name))

    @property
    def trains(self) -> str:
        return {"full": "every weight: text encoder, duration predictor, flow, decoder",
                "full-acoustic": "every weight of the flow and decoder",
                "full-decoder": "every weight of the decoder",
                "full-prior": "every weight of the flow and decoder, and the text encoder's projection to the prior",
                "lora": "LoRA on the flow's and decoder's convolutions (dilated and transposed ones included)",
                "lora-decoder": "LoRA on the decoder's convolutions (dilated and transposed ones included)",
                "lora-attention": "LoRA on the text encoder's attention projections (q, k, v, o)",
                "qlora": "LoRA on the flow and decoder, their 1x1 convolutions frozen in NF4"}[self.kind]

    @property
    def frozen(self) -> str:
        return {"full": "nothing",
                "full-acoustic": "text encoder, duration predictor",
                "full-decoder": "text encoder, duration predictor, flow",
                "full-prior": "the text encoder but its projection, duration predictor",
                "lora": "text encoder, duration predictor, every base weight",
                "lora-decoder": "text encoder, duration predictor, flow, every base weight",
                "lora-attention": "duration predictor, flow, decoder, every base weight",
                "qlora": "text encoder, duration predictor, every base weight (NF4 where 1x1)"}[self.kind]


@dataclass
class Prepared:
    """A copy of the voice ready to train with `method`: `path` is what the trainer trains (the voice with its
    adapters, on the inference path, or on the posterior path with the posterior encoder, a training-only part that
    every method trains in full and no voice ships), `peft` the PEFT handle of the adapters (None for full
    fine-tuning)."""
    method: Method
    voice: torch.nn.Module
    path: InferencePath | TrainPath
    peft: PeftModel | None
    targets: list
    quantized: list

    @property
    def forward(self):
        """The Trainer's forward for `path` (vits_objective.inference_forward or vits_forward)."""
        return forward_of(self.path)

    @property
    def objective(self) -> str:
        return "posterior" if isinstance(self.path, TrainPath) else "inference"

    @property
    def enc_q(self) -> torch.nn.Module | None:
        """The posterior encoder of the posterior path (None on the inference path)."""
        return getattr(self.path, "enc_q", None)

    def trainable_params(self) -> int:
        """Trainable parameters of the voice itself (the posterior encoder, discarded at export, not counted)."""
        return sum(p.numel() for p in self.voice.parameters() if p.requires_grad)

    def merged(self) -> torch.nn.Module:
        """The voice with its adapters folded in (same architecture, so the base voice's speed), in a copy; for
        QLoRA the NF4 bases are dequantized first, as a QLoRA model is deployed."""
        finetune._drop_graph_caches(self.voice)
        if self.peft is None:
            return copy.deepcopy(self.voice).eval()
        peft = copy.deepcopy(self.peft)
        if self.method.kind == "qlora":
            finetune._dequantize_bases(peft)
        return peft.merge_and_unload().eval()


def speaker_folder(voice, sentences, folder) -> "Path":
    """An LJSpeech folder (lib.data.ljspeech) of `voice` reading `sentences` (lib.core.text.Sentence) at its own
    timing and rate, no DTW and no WORLD: a real second speaker's recordings, made offline. A folder already
    holding these sentences is kept as it is; one holding others is refused (ljspeech.holds)."""
    folder = Path(folder)
    if ljspeech.holds(folder, [(s.id, s.text) for s in sentences]):
        return folder

    def spoken():
        for s in tqdm(sentences, desc=f"{getattr(voice, 'name', 'voice')} reads", leave=False):
            clip = voice.synthesize(s.text)
            yield s.id, s.text, clip.samples, clip.sample_rate
    return ljspeech.write_folder(folder, spoken())


def _base(model, method: Method, device: str = "cpu") -> tuple:
    """(a copy of `model` as `method` trains on it, the names of its NF4 layers): for QLoRA the acoustic 1x1
    convolutions in bitsandbytes NF4, computed through the float product of their weights on the CPU."""
    voice = copy.deepcopy(model).cpu().eval()
    quantized: list = []
    if method.kind == "qlora":
        from lib.techniques.compress import bitsandbytes_status, bnb_convert
        ok, why = bitsandbytes_status("nf4", device)
        if not ok:
            raise RuntimeError(f"QLoRA needs bitsandbytes NF4 layers: {why}")
        voice, quantized = bnb_convert(voice, "nf4", device, scope=ACOUSTIC)
        if device == "cpu":  # bitsandbytes' CPU 4-bit kernel is far off its own weights (finetune._use_float_kernel)
            for name in quantized:
                finetune._use_float_kernel(voice.get_submodule(name).linear)
    return voice, quantized


def prepare(model, method: Method, enc_q: torch.nn.Module | None = None, device: str = "cpu",
            duration: dict | None = None, train_posterior: bool = True, prior_mel: float = 0.0,
            path: TrainingPath = "inference", noise_scale: float = NOISE_SCALE) -> Prepared:
    """A copy of `model` (the inference SynthesizerTrn) set up for `method`, on `path`:
    - 'inference' (vits_objective.InferencePath): the path the voice speaks with, on the recordings' own durations
      (which the batches carry), the prior's noise at `noise_scale`; no posterior encoder;
    - 'posterior' (vits_objective.TrainPath): piper's training forward with a copy of the posterior `enc_q` (needed);
      `train_posterior` off keeps it as bootstrapped (its latent space stays the teacher's); `prior_mel` weighs a mel
      loss of the aligned prior's mean through flow and decoder (vits_objective.vits_forward).
    `duration`: the duration predictor's fitted training-only parts (lib.training.posterior.fit_duration_parts),
    where fitted. 'full' trains every weight, 'full-acoustic' every weight but the text encoder's and the duration
    predictor's (FULL_SCOPES); the adapter methods train adapters only, the text path frozen (LoRA-attention aside)."""
    if path not in PATHS:
        raise ValueError(f"path {path!r}: use one of {PATHS}")
    if path == "posterior" and enc_q is None:
        raise ValueError("the posterior path needs the posterior encoder (enc_q)")
    if path == "inference" and prior_mel:
        raise ValueError("prior_mel is a term of the posterior path; the inference path's mel is its whole loss")
    voice, quantized = _base(model, method, device)
    if duration:
        bad = voice.dp.load_state_dict(duration, strict=False).unexpected_keys
        if bad:
            raise ValueError(f"duration parts {bad[:3]} are not the duration predictor's")
    for name, p in voice.named_parameters():
        p.requires_grad_(method.kind in FULL_SCOPES and name.startswith(FULL_SCOPES[method.kind]))
    peft, targets = None, [n for n, p in voice.named_parameters() if p.requires_grad]
    if method.kind not in finetune.FULL:
        targets = (finetune.attention_targets(voice) if method.kind == "lora-attention"
                   else finetune.lora_targets(voice, LORA_SCOPES[method.kind]))
        peft = get_peft_model(voice, lora_conv.register(LoraConfig(r=method.rank, lora_alpha=method.rank,
                                                                   lora_dropout=0.0, target_modules=targets,
                                                                   init_lora_weights=True)))
    sample_rate = int(getattr(model, "sample_rate", None) or 22050)
    if path == "inference":
        return Prepared(method, voice, InferencePath(voice, noise_scale, sample_rate), peft, targets, quantized)
    enc_q = copy.deepcopy(enc_q).train()
    for p in enc_q.parameters():
        p.requires_grad_(train_posterior)
    return Prepared(method, voice, TrainPath(voice, enc_q, prior_mel, sample_rate), peft, targets, quantized)


POSTERIOR = "posterior_encoder.safetensors"  # the run's posterior encoder beside its pack: a resume goes on with it


def save(prepared: Prepared, out: Path, *, base: str, card: dict, with_posterior: bool = False) -> Path:
    """What the method adds to the base voice: a PEFT adapter folder (`base_model_name_or_path` = `base`) or the
    full voice's weights (float16, sharded safetensors + index), each with config.json and a model card; with
    `with_posterior`, the trained posterior encoder too where the method has one (float16; training-only, for a run
    resumed from the pack)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if with_posterior and prepared.enc_q is not None:
        save_file({k: v.detach().to(torch.float16).contiguous() for k, v in prepared.enc_q.state_dict().items()},
                  str(out / POSTERIOR))
    if prepared.peft is not None:
        for cfg in prepared.peft.peft_config.values():
            cfg.base_model_name_or_path = base
        prepared.peft.save_pretrained(str(out), save_embedding_layers=False)
    else:
        finetune._drop_graph_caches(prepared.voice)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in prepared.voice.state_dict().items()}
        save_torch_state_dict(state, str(out), max_shard_size=SHARD)
    info = {"kind": "peft_adapter" if prepared.peft is not None else "adapted_voice", "method": prepared.method.name,
            "rank": prepared.method.rank, "base_model_name_or_path": base, "trains": prepared.method.trains,
            "frozen": prepared.method.frozen, "trainable_params": prepared.trainable_params(),
            "lora_layers": len(prepared.targets) if prepared.peft is not None else 0,
            "nf4_layers": len(prepared.quantized),
            "objective": OBJECTIVES[prepared.objective], **card}
    teacher = voice_identity(prepared.voice)  # the voice it adapts: loading it into another is refused
    if teacher:
        info["teacher"] = teacher
    atomic_write_json(out / "config.json", info)
    model_card(info).save(str(out / "README.md"))
    return out


def model_card(info: dict) -> ModelCard:
    """The model card (lib.voices.cards.adapter_card): base voice, data, method, steps, machine-hours, judged
    numbers."""
    return adapter_card(method=info["method"], kind=info["kind"],
                        voice=info.get("voice") or _voice_file(info["base_model_name_or_path"]),
                        trains=info["trains"], frozen=info["frozen"], trainable_params=info["trainable_params"],
                        data=info.get("data", "unknown"), objective=info.get("objective", OBJECTIVES["posterior"]),
                        steps=info.get("steps", "unknown"), hours=info.get("hours", "unknown"),
                        device=info.get("device", "unknown"), judged=info.get("judged") or {},
                        teacher=info.get("teacher"))


def _voice_file(base: str) -> str:
    """The piper voice file a base id names ('piper:en_US-joe-medium' -> 'en_US-joe-medium.onnx')."""
    return base.removeprefix("piper:") + ".onnx"


def shipped_weights(folder: Path) -> list[Path]:
    """The weight files a user takes from a saved folder: the adapter's, or the full voice's shards and index (not
    the training-only posterior encoder)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.name != POSTERIOR and (p.suffix == ".safetensors" or p.name.endswith(".safetensors.index.json")))


def load_into(prepared: Prepared, folder: Path) -> dict:
    """Start `prepared` from a folder `save` wrote for the same method (a run going on from its committed pack on a
    machine without its state); returns the folder's config. A ValueError names a folder of another method."""
    folder = Path(folder)
    info = json.loads((folder / "config.json").read_text())
    check_teacher(info, folder, prepared.voice)
    if info.get("method") != prepared.method.name:
        raise ValueError(f"{folder} holds a {info.get('method')!r} adaptation, not {prepared.method.name!r}")
    if prepared.peft is not None:
        result = set_peft_model_state_dict(prepared.peft, load_file(str(folder / "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise ValueError(f"{folder}: adapter weights {result.unexpected_keys[:3]} fit no layer of this method")
    else:
        load_torch_model(prepared.voice, str(folder), strict=True)
    if (folder / POSTERIOR).exists() and prepared.enc_q is not None:
        prepared.enc_q.load_state_dict(load_file(str(folder / POSTERIOR)))
    return info


def load(model, folder: Path, merge: bool = True) -> torch.nn.Module:
    """A copy of `model` adapted by a folder from `save` (an adapter merged in, or left as PEFT layers with `merge`
    off, to time it unmerged); a ValueError names the folder and what is wrong (an ArtefactError both voices, where
    the folder was trained from another voice than `model`'s)."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder / 'config.json'}: cannot be read ({type(exc).__name__}: {exc})") from None
    check_teacher(info, folder, model)  # an adapter attaches to any voice of its shape: only its own is accepted
    if info.get("kind") == "peft_adapter":
        method = Method.parse(info.get("method", ""))
        voice, _ = _base(model, method)  # QLoRA's adapter onto its NF4 base, then merged as merged() does
        peft = PeftModel.from_pretrained(voice, str(folder),
                                         config=lora_conv.register(LoraConfig.from_pretrained(str(folder))))
        saved = set(load_file(str(folder / "adapter_model.safetensors")))
        loaded = {k for k, _ in peft.named_parameters() if "lora_" in k}
        if len(loaded) != len(saved):
            raise ValueError(f"{folder}: {len(saved)} adapter tensors saved, {len(loaded)} attached to the voice")
        if not merge:
            return voice.eval()
        if method.kind == "qlora":
            finetune._dequantize_bases(peft)
        return peft.merge_and_unload().eval()
    voice = copy.deepcopy(model).cpu().eval()
    if info.get("kind") == "adapted_voice":
        try:
            load_torch_model(voice, str(folder), strict=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{folder}: the adapted weights cannot be loaded "
                             f"({type(exc).__name__}: {str(exc)[:200]})") from None
        return voice.float().eval()
    raise ValueError(f"{folder / 'config.json'}: kind {info.get('kind')!r} "
                     f"is neither 'peft_adapter' nor 'adapted_voice'")
