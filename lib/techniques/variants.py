"""A whole voice saved by voices.artefacts.save_voice_module, loaded again: its saved weights, or, for a variant
that is a deterministic conversion of the ONNX weights, the conversion made again by the technique that made it."""
from __future__ import annotations

import json
from pathlib import Path

from lib.techniques.compress import bnb_convert, quantize_dynamic_torch
from lib.voices.artefacts import load_voice_module, need_file
from lib.voices.piper_torch import load_piper_torch


def load_variant(art_dir: Path):
    """The voice in `art_dir`: bitsandbytes ({"bnb": mode, "scope": [...]}), dynamic int8 ({"torch_dynamic_int8":
    true}) and an unmerged PEFT adapter ({"peft_adapter": folder}) are converted again from the ONNX voice the
    config names; any other voice is read from its weights (voices.artefacts.load_voice_module)."""
    art_dir = Path(art_dir)
    config = json.loads(need_file(art_dir / "config.json").read_text())
    convert = config.get("convert") or {}
    if not convert:
        return load_voice_module(art_dir)
    model = load_piper_torch(Path(config["onnx"]))
    if "bnb" in convert:
        return bnb_convert(model, convert["bnb"], scope=tuple(convert.get("scope") or ()) or None)[0].eval()
    if convert.get("torch_dynamic_int8"):
        return quantize_dynamic_torch(model)[0].eval()
    if "peft_adapter" in convert:
        from lib.techniques.speaker_adapt import load  # deferred: peft, for an adapter variant only (memory probe)
        return load(model, Path(convert["peft_adapter"]), merge=False)
    return load_voice_module(art_dir)  # a "scope" alone: the weights are saved (ArtefactError names it)
