"""Trained parts of the voice as files others can load, never pickles:

    <dir>/model.safetensors  config.json      the trained part's weights + what rebuilds it (kind, widths, teacher)
    <dir>/model.onnx  model.onnx.json         the whole student voice for piper's runtime (techniques.export)
    <dir>/curve.csv  env.json  README.md      losses by step; device, commit, steps, wall time, command; model card

The parts a config's `kind` names are in voices.parts. A whole voice saved as a conversion of its ONNX weights
(bnb, dynamic int8, an unmerged adapter) is remade by the technique that made it: techniques.variants."""
from __future__ import annotations

import json
from pathlib import Path

from lib.core.results import atomic_write_json, file_sha256
from lib.voices.cards import voice_licence
from lib.voices.parts import PARTS, build_part, fold_weight_norm, student_parts, with_student_parts
from lib.voices.piper_torch import load_piper_torch

KINDS = (*PARTS, "voice")
CONVERSIONS = ("bnb", "torch_dynamic_int8", "peft_adapter")


class ArtefactError(ValueError):
    """A recorded artefact that is missing a file or cannot be read; the message names the file."""


_IDENTITIES: dict[tuple, dict] = {}  # (path, size, mtime) -> identity: a voice file is hashed once per process


def file_identity(path: Path) -> dict:
    """{"voice": the file's name, "sha256": its bytes' hash, "licence": what the voice's own card states of it}: which
    voice a part was trained from, and under what licence its artefacts come."""
    path = Path(path)
    key = (str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns)
    if key not in _IDENTITIES:
        _IDENTITIES[key] = {"voice": path.name, "sha256": file_sha256(path), "licence": voice_licence(path)}
    return _IDENTITIES[key]


def voice_identity(model) -> dict | None:
    """The identity of the voice a PyTorch teacher was rebuilt from: its ONNX file's (load_piper_torch), or the one a
    teacher bundle recorded (teacher_bundle); None where it says neither."""
    known = getattr(model, "voice_identity", None)
    if known:
        return dict(known)
    source = Path(str(getattr(model, "onnx_source", "") or ""))
    return file_identity(source) if source.is_file() else None


def gpu_of_hours(config: dict) -> str:
    """The GPU a pack's device-hours were spent on: its `gpu`, else its `device` where that is not the CPU ('' where
    it has no device-hours). A CPU run that goes on from a GPU pack keeps it."""
    if not float(config.get("device_hours") or 0.0):
        return ""
    return str(config.get("gpu") or (config.get("device") if config.get("device") not in (None, "", "cpu") else "GPU"))


def check_teacher(config: dict, where: Path, teacher) -> None:
    """ArtefactError naming both voices where the part in `where` was trained from another voice than `teacher`'s;
    a part packed before parts recorded their teacher, or a teacher of unknown identity, passes."""
    mine, theirs = config.get("teacher"), voice_identity(teacher) if teacher is not None else None
    if mine and theirs and mine.get("sha256") != theirs["sha256"]:
        raise ArtefactError(f"{where} was trained from {mine.get('voice')} (sha256 {mine.get('sha256', '')[:12]}), "
                            f"not from this voice, {theirs['voice']} (sha256 {theirs['sha256'][:12]}): a part fits "
                            f"only the voice it learned from")


def save_part(module, out_dir: Path, kind: str, build: dict, extra: dict | None = None, teacher=None) -> Path:
    """Write `module`'s weights (weight norm folded) to model.safetensors and config.json with `kind` (decoder,
    flow or voice), `build`, the keyword arguments that rebuild it (see `build_part`), and the identity of the voice
    it was trained from (`teacher`, a model or an identity dict; check_teacher refuses it in another voice)."""
    from safetensors.torch import save_file
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {KINDS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"kind": kind})
    tmp.replace(out_dir / "model.safetensors")
    identity = teacher if isinstance(teacher, dict) or teacher is None else voice_identity(teacher)
    atomic_write_json(out_dir / "config.json", {"kind": kind, "build": build, **(extra or {}),
                                                **({"teacher": identity} if identity else {})})
    return out_dir


def need_file(path: Path) -> Path:
    """`path` when it is a non-empty file; ArtefactError naming it otherwise."""
    if not path.is_file():
        raise ArtefactError(f"recorded artefact incomplete: {path} is missing")
    if path.stat().st_size == 0:
        raise ArtefactError(f"recorded artefact incomplete: {path} is empty")
    return path


def load_part(art_dir: Path, teacher=None):
    """(module, config) from a folder written by `save_part`; ArtefactError naming the file when one is missing,
    empty, unreadable, or does not fit the architecture its config describes, and (with the `teacher` it is meant
    for) naming both voices when it was trained from another."""
    from safetensors.torch import load_file
    art_dir = Path(art_dir)
    cfg_path = need_file(art_dir / "config.json")
    try:
        config = json.loads(cfg_path.read_text())
        kind, build = config["kind"], config["build"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtefactError(f"{cfg_path} is not a valid artefact config ({type(exc).__name__}: {exc})") from None
    check_teacher(config, art_dir, teacher)
    weights = need_file(art_dir / "model.safetensors")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ArtefactError(f"{weights} cannot be read ({type(exc).__name__}: {exc})") from None
    module = fold_weight_norm(build_part(kind, build))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtefactError(f"{weights} does not fit the {kind} described in {cfg_path}: {str(exc)[:300]}") from None
    return module.eval(), config


def save_voice_module(module, out_dir: Path, convert: dict | None = None) -> Path:
    """A whole PyTorch voice (a SynthesizerTrn rebuilt from an ONNX file, then pruned, merged or distilled) as
    model.safetensors + config.json naming that ONNX file; `load_voice_module` rebuilds it. Layers whose shape a
    technique changed (pruned channels, narrower students) are refitted from the saved shapes. A variant made by a
    deterministic conversion of the ONNX weights (`convert`: {"bnb": "int8"|"nf4", "scope": [...]},
    {"torch_dynamic_int8": true} or {"peft_adapter": folder}, unmerged) is remade by converting again
    (techniques.variants.load_variant)."""
    from safetensors.torch import save_file
    onnx = getattr(module, "onnx_source", None)
    if onnx is None:
        raise ArtefactError("this module does not say which ONNX voice it was rebuilt from (no onnx_source)")
    bad = [k for k in (convert or {}) if k not in CONVERSIONS + ("scope",)]
    if bad:
        raise ValueError(f"convert keys {bad}: use {CONVERSIONS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items() if hasattr(v, "detach")}
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"kind": "voice_module"})
    tmp.replace(out_dir / "model.safetensors")
    atomic_write_json(out_dir / "config.json", {"kind": "voice_module", "onnx": str(onnx), "convert": convert or {},
                                                "parts": student_parts(module)})
    return out_dir


def load_voice_module(art_dir: Path):
    """The voice saved by `save_voice_module`: piper's SynthesizerTrn rebuilt from the ONNX file the config names,
    refitted to the saved shapes and filled from model.safetensors. A saved conversion is remade by
    techniques.variants.load_variant (ArtefactError here)."""
    import torch
    from safetensors.torch import load_file
    art_dir = Path(art_dir)
    config = json.loads(need_file(art_dir / "config.json").read_text())
    if any(k in CONVERSIONS for k in config.get("convert") or {}):
        raise ArtefactError(f"{art_dir} is a conversion of {config['onnx']} ({', '.join(config['convert'])}), not "
                            f"saved weights: lib.techniques.variants.load_variant remakes it")
    model = load_piper_torch(Path(config["onnx"]))
    model = with_student_parts(model, config.get("parts") or {})
    state = load_file(str(need_file(art_dir / "model.safetensors")))
    own = model.state_dict()
    for key in [k for k in state if ".linear." in k and k not in own]:  # a 1x1 conv kept as nn.Linear (merged QLoRA)
        conv_key = key.replace(".linear.", ".")
        if conv_key in own:
            state[conv_key] = state.pop(key).reshape(own[conv_key].shape)
    for key, t in state.items():
        if key in own and tuple(own[key].shape) != tuple(t.shape):  # a pruned or narrower layer: take the saved shape
            owner, leaf = key.rsplit(".", 1)
            m = model.get_submodule(owner)
            if isinstance(getattr(m, leaf), torch.nn.Parameter):
                setattr(m, leaf, torch.nn.Parameter(torch.empty_like(t), requires_grad=False))
            else:
                m.register_buffer(leaf, torch.empty_like(t))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArtefactError(f"{art_dir / 'model.safetensors'} does not fit the voice of {config['onnx']}: "
                            f"{str(exc)[:300]}") from None
    return model.eval()
