"""Trained parts of the voice as files others can load, never pickles:

    <dir>/model.safetensors  config.json      the trained part's weights + what rebuilds it (kind, widths, teacher)
    <dir>/model.onnx  model.onnx.json         the whole student voice, which piper's runtime (PiperVoice.load) opens
    <dir>/curve.csv  env.json  README.md      losses by step; device, commit, steps, wall time, command; model card

A large ONNX keeps its weights in external-data shards of at most SHARD_MB each, so every file stays small enough
to commit and to bring back from a GPU machine; ONNX Runtime reads them from beside the .onnx."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from lib.core.results import atomic_write_json, atomic_write_text

SHARD_MB = 15.0
KINDS = ("decoder", "flow", "istft_decoder", "frontend", "voice")
CONVERSIONS = ("bnb", "torch_dynamic_int8", "peft_adapter")


class ArtefactError(ValueError):
    """A recorded artefact that is missing a file or cannot be read; the message names the file."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_part(module, out_dir: Path, kind: str, build: dict, extra: dict | None = None) -> Path:
    """Write `module`'s weights (weight norm folded) to model.safetensors and config.json with `kind` (decoder,
    flow or voice) and `build`, the keyword arguments that rebuild it (see `build_part`)."""
    from safetensors.torch import save_file
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {KINDS}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = out_dir / ".model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"kind": kind})
    tmp.replace(out_dir / "model.safetensors")
    atomic_write_json(out_dir / "config.json", {"kind": kind, "build": build, **(extra or {})})
    return out_dir


def build_part(kind: str, build: dict):
    """An untrained module of `kind` from its config's `build` arguments (piper's own classes)."""
    from piper.train.vits.models import Generator, ResidualCouplingBlock
    if kind == "decoder":
        b = dict(build)
        return Generator(b["inter_channels"], b["resblock"], tuple(b["resblock_kernel_sizes"]),
                         [tuple(d) for d in b["resblock_dilation_sizes"]], tuple(b["upsample_rates"]),
                         b["upsample_initial_channel"], tuple(b["upsample_kernel_sizes"]))
    if kind == "istft_decoder":
        from lib.voices.istft_decoder import FrameRateDecoder
        return FrameRateDecoder(**build)
    if kind == "frontend":
        from lib.techniques.frontend_student import FrontEnd
        return FrontEnd(**build)
    if kind == "flow":
        return ResidualCouplingBlock(build["channels"], build["hidden_channels"], build["kernel_size"],
                                     build["dilation_rate"], build["n_layers"], n_flows=build["n_flows"])
    raise ValueError(f"cannot build a part of kind {kind!r}")


def _need(path: Path) -> Path:
    if not path.is_file():
        raise ArtefactError(f"recorded artefact incomplete: {path} is missing")
    if path.stat().st_size == 0:
        raise ArtefactError(f"recorded artefact incomplete: {path} is empty")
    return path


def load_part(art_dir: Path):
    """(module, config) from a folder written by `save_part`; ArtefactError naming the file when one is missing,
    empty, unreadable, or does not fit the architecture its config describes."""
    from safetensors.torch import load_file
    art_dir = Path(art_dir)
    cfg_path = _need(art_dir / "config.json")
    try:
        config = json.loads(cfg_path.read_text())
        kind, build = config["kind"], config["build"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArtefactError(f"{cfg_path} is not a valid artefact config ({type(exc).__name__}: {exc})") from None
    weights = _need(art_dir / "model.safetensors")
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own error types for a corrupt header
        raise ArtefactError(f"{weights} cannot be read ({type(exc).__name__}: {exc})") from None
    module = build_part(kind, build)
    _fold_weight_norm(module)
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
    {"torch_dynamic_int8": true} or {"peft_adapter": folder}, unmerged) is rebuilt by converting again."""
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


def student_parts(voice) -> dict:
    """{attribute: {kind, build}} for each part of a voice that a student replaced in a way a shape alone cannot
    say (a frame-rate decoder, a flow of other hidden width, the x_low front end with its deterministic duration
    predictor): what `load_voice_module` rebuilds before it loads the weights."""
    from lib.techniques.distill import flow_build
    from lib.techniques.frontend_student import voice_frontend_build
    from lib.voices.istft_decoder import FrameRateDecoder
    parts = {}
    if isinstance(voice.dec, FrameRateDecoder):
        parts["dec"] = {"kind": "istft_decoder", "build": dict(voice.dec.config)}
    hidden = voice.flow.flows[0].enc.hidden_channels
    if hidden != voice.hparams["hidden_channels"]:
        parts["flow"] = {"kind": "flow", "build": flow_build(voice, hidden)}
    if getattr(voice, "use_sdp", True) is False:
        parts["frontend"] = {"kind": "frontend", "build": voice_frontend_build(voice)}
    return parts


def _with_student_parts(model, parts: dict):
    """The rebuilt teacher with the parts `student_parts` recorded put in, untrained (the weights load next)."""
    for attr, part in parts.items():
        module = build_part(part["kind"], part["build"])
        _fold_weight_norm(module)
        if attr == "frontend":
            from lib.techniques.frontend_student import with_frontend
            model = with_frontend(model, module)
        else:
            setattr(model, attr, module)
    return model


def load_voice_module(art_dir: Path):
    """The voice saved by `save_voice_module`: piper's SynthesizerTrn rebuilt from the ONNX file the config names,
    refitted to the saved shapes and filled from model.safetensors (or converted again, see there)."""
    import torch
    from safetensors.torch import load_file
    from lib.voices.piper_torch import load_piper_torch
    art_dir = Path(art_dir)
    config = json.loads(_need(art_dir / "config.json").read_text())
    model = load_piper_torch(Path(config["onnx"]))
    convert = config.get("convert") or {}
    if "bnb" in convert:
        from lib.techniques.compress import bnb_convert
        return bnb_convert(model, convert["bnb"], scope=tuple(convert.get("scope") or ()) or None)[0].eval()
    if convert.get("torch_dynamic_int8"):
        from lib.techniques.compress import quantize_dynamic_torch
        return quantize_dynamic_torch(model)[0].eval()
    if "peft_adapter" in convert:
        from lib.techniques.finetune import load_adapter
        return load_adapter(model, Path(convert["peft_adapter"])).eval()
    model = _with_student_parts(model, config.get("parts") or {})
    state = load_file(str(_need(art_dir / "model.safetensors")))
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


def _fold_weight_norm(module):
    import torch
    for m in module.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    return module


def _shard_external_data(onnx_path: Path, shard_mb: float = SHARD_MB) -> list[Path]:
    """Move the initialisers of `onnx_path` into files `<name>.data<k>` of at most `shard_mb` each (ONNX external
    data, one location per tensor), when the file is larger than that. Written by hand because onnx's own
    `convert_model_to_external_data` writes either one file or one per tensor."""
    import onnx
    from onnx.external_data_helper import set_external_data
    if onnx_path.stat().st_size <= shard_mb * 2**20:
        return []
    model = onnx.load(str(onnx_path))
    limit = int(shard_mb * 2**20)
    shards: list[bytearray] = [bytearray()]
    for tensor in model.graph.initializer:
        raw = tensor.raw_data if tensor.HasField("raw_data") else onnx.numpy_helper.to_array(tensor).tobytes()
        if len(raw) < 1024:
            continue
        if shards[-1] and len(shards[-1]) + len(raw) > limit:
            shards.append(bytearray())
        k = len(shards) - 1
        offset = len(shards[-1])
        shards[-1].extend(raw)
        if not tensor.HasField("raw_data"):
            arr = onnx.numpy_helper.to_array(tensor)
            tensor.CopyFrom(onnx.numpy_helper.from_array(arr, tensor.name))
        set_external_data(tensor, location=f"{onnx_path.name}.data{k}", offset=offset, length=len(raw))
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
    paths = []
    for k, data in enumerate(shards):
        p = onnx_path.parent / f"{onnx_path.name}.data{k}"
        p.write_bytes(bytes(data))
        paths.append(p)
    tmp = onnx_path.with_suffix(".tmp.onnx")
    onnx.save(model, str(tmp))
    tmp.replace(onnx_path)
    return paths


def export_voice(voice_model, out_dir: Path, config_path: Path, speaker_id: int = 0) -> Path:
    """The whole (student) voice as `model.onnx` with piper's interface and `model.onnx.json` (the teacher's
    config), weights sharded when large; returns the .onnx path."""
    from lib.techniques.compress import export_onnx
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("model.onnx.data*"):
        old.unlink()
    onnx_path = export_onnx(voice_model, out_dir / "model.onnx")
    _shard_external_data(onnx_path)
    shutil.copyfile(config_path, out_dir / "model.onnx.json")
    return onnx_path


def piper_runtime_check(onnx_path: Path, text: str = "The birch canoe slid on the smooth planks.") -> dict:
    """Open the file with piper's own runtime (`piper.PiperVoice.load`) and speak `text`: the check that a user's
    `piper` command can use it. Returns samples and rate; raises ArtefactError naming the file otherwise."""
    import numpy as np
    from piper import PiperVoice
    onnx_path = _need(Path(onnx_path))
    _need(Path(str(onnx_path) + ".json"))
    try:
        voice = PiperVoice.load(str(onnx_path))
        audio = np.concatenate([chunk.audio_float_array for chunk in voice.synthesize(text)])
    except Exception as exc:
        raise ArtefactError(f"piper's runtime could not open or run {onnx_path}: {type(exc).__name__}: {exc}") from None
    return {"samples": int(audio.size), "sample_rate": int(voice.config.sample_rate),
            "rms": float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))}


def write_card(out_dir: Path, name: str, lines: list[str]) -> None:
    """A short model card (README.md) for an artefact folder."""
    atomic_write_text(Path(out_dir) / "README.md", f"# {name}\n\n" + "\n".join(lines) + "\n")
