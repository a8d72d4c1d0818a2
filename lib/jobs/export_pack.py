"""A packed long-run part as a voice piper's own runtime opens: the teacher with that decoder, flow, frame-rate
decoder or front end (a pack of `train_job pack`), or adapted by a PEFT adapter or a fully fine-tuned voice (lib.techniques.speaker_adapt), written as
`model.onnx` + `model.onnx.json` and spoken once by `piper.PiperVoice` as the check.

    python -m lib.jobs.export_pack outputs/recorded/training/reg128/dec128-regress /tmp/dec128-voice
    piper -m /tmp/dec128-voice/model.onnx -f out.wav <<< "The birch canoe slid on the smooth planks."
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import tyro

from lib.techniques import distill, export as onnx_export
from lib.voices import piper_torch, synth as voices
from lib.voices.artefacts import load_part
from lib.voices.spec import ROLE_OF_KIND

_LOGGER = logging.getLogger(__name__)
PACK_HELP = "a packed part or adapter folder, e.g. outputs/recorded/training/reg128/dec128-regress"


def voice_from_pack(teacher, pack: Path):
    """The teacher with the part in `pack` put in its place, or adapted by it; ValueError naming the folder when it
    holds neither a part (config.json with a `kind`) nor an adaptation."""
    pack = Path(pack)
    config_file = pack / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{pack} holds no config.json: not a packed part or adapter")
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc}): the pack is damaged or cut short") from None
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind in ("peft_adapter", "adapted_voice"):
        from lib.techniques import speaker_adapt  # deferred: it imports peft; adaptation packs only
        return speaker_adapt.load(teacher, pack)
    if kind in ROLE_OF_KIND:
        module, _ = load_part(pack, teacher)  # refused where it learned from another voice
        return distill.with_parts(teacher, **{ROLE_OF_KIND[kind]: module})
    raise ValueError(f"{config_file}: kind {kind!r} is not a decoder, flow, front end or adaptation this can export")


def export(pack: Path, out: Path) -> dict:
    """Export `pack` as a piper voice into `out` and speak one sentence with piper's runtime: {onnx, samples, ...}."""
    onnx_path, config = voices.piper_paths()
    voice = voice_from_pack(piper_torch.load_piper_torch(onnx_path), pack)
    path = onnx_export.export_voice(voice, Path(out), config)
    return {"onnx": str(path), **onnx_export.piper_runtime_check(path)}


def main(argv=None) -> None:
    """`python -m lib.jobs.export_pack PACK OUT`: export, then say what piper's runtime spoke."""
    logging.basicConfig(level=logging.INFO)

    def command(pack: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(help=PACK_HELP)],
                out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(help="folder for model.onnx and model.onnx.json")]
                ) -> dict:
        try:
            return export(pack, out)
        except (ValueError, OSError) as exc:
            raise SystemExit(f"export_pack: {exc}") from None

    result = tyro.cli(command, args=argv, prog="python -m lib.jobs.export_pack", description=__doc__.split("\n\n")[0])
    _LOGGER.info("wrote %s (+ .json); piper's runtime spoke %d samples at %d Hz", result["onnx"], result["samples"],
                 result["sample_rate"])


if __name__ == "__main__":
    main()
