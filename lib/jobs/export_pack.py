"""Packed long-run parts as one voice piper's own runtime opens: the teacher with each pack's decoder, flow,
frame-rate decoder or front end in its place (packs of `tts-lab train pack`; the 5x voice is three), or adapted by
a PEFT adapter or a fully fine-tuned voice (lib.techniques.speaker_adapt), written as `model.onnx` +
`model.onnx.json` and spoken once by `piper.PiperVoice` as the check.

    tts-lab voice export --pack outputs/recorded/training/istft/istft192x6-regress \
        --pack outputs/recorded/training/flow96/flow96 --pack outputs/recorded/training/fe96/fe96 --out /tmp/5x
    piper -m /tmp/5x/model.onnx -f out.wav <<< "The birch canoe slid on the smooth planks."
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from lib.techniques import distill, export as onnx_export
from lib.voices import piper_torch, synth as voices
from lib.voices.artefacts import load_part
from lib.voices.spec import ROLE_OF_KIND

_LOGGER = logging.getLogger(__name__)


def _config(pack: Path) -> dict:
    """A pack's config.json; ValueError naming the folder where it has none or it is cut short."""
    config_file = Path(pack) / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{pack} holds no config.json: not a packed part or adapter")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}): the pack is damaged or cut short") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} is not a pack's config (a JSON object)")
    return config


def voice_from_packs(teacher, packs: Sequence[Path]):
    """The teacher with the part of each pack put in its place (one pack per role: decoder, flow, front end), or
    adapted by one adaptation pack; ValueError naming the folder that holds neither, a role given twice, or an
    adaptation mixed with parts. A part trained from another voice is refused (artefacts.check_teacher)."""
    if not packs:
        raise ValueError("no pack given: name at least one with --pack")
    kinds = {Path(p): _config(p).get("kind") for p in packs}
    adapters = [p for p, k in kinds.items() if k in ("peft_adapter", "adapted_voice")]
    if adapters:
        if len(packs) > 1:
            raise ValueError(f"{adapters[0]} is an adaptation: it exports alone, "
                             f"not with {len(packs) - 1} other pack(s)")
        from lib.techniques import speaker_adapt  # deferred: it imports peft; adaptation packs only
        return speaker_adapt.load(teacher, adapters[0])
    roles: dict[str, object] = {}
    for pack, kind in kinds.items():
        if kind not in ROLE_OF_KIND:
            raise ValueError(f"{pack / 'config.json'}: kind {kind!r} is not a decoder, flow, front end or adaptation "
                             f"this can export")
        role = ROLE_OF_KIND[kind]
        if role in roles:
            raise ValueError(f"{pack}: a second {role} (one pack per part of the voice)")
        roles[role] = load_part(pack, teacher)[0]
    return distill.with_parts(teacher, **roles)


def export(packs: Sequence[Path], out: Path) -> dict:
    """Export the voice of `packs` (one, or a decoder, flow and front end together) as a piper voice into `out` and
    speak one sentence with piper's runtime: {onnx, samples, ...}."""
    onnx_path, config = voices.piper_paths()
    voice = voice_from_packs(piper_torch.load_piper_torch(onnx_path), [Path(p) for p in packs])
    path = onnx_export.export_voice(voice, Path(out), config)
    return {"onnx": str(path), **onnx_export.piper_runtime_check(path)}
