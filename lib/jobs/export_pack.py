"""Packed long-run parts as one voice piper's own runtime opens: the teacher with each pack's decoder, flow,
frame-rate decoder or front end in its place (packs of `tts-lab train pack`; the 5x voice is three), or adapted by
a PEFT adapter or a fully fine-tuned voice (lib.techniques.speaker_adapt), written as piper names voices
(`en_US-joe_<name>-medium.onnx` + `.onnx.json`) with a card, and spoken once by `piper.PiperVoice` as the check.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from lib.techniques import distill, export as onnx_export
from lib.core.results import atomic_write_json, read_json_object
from lib.voices import cards, piper_torch, synth as voices
from lib.voices.artefacts import file_identity, load_part
from lib.voices.spec import ROLE_OF_KIND

_LOGGER = logging.getLogger(__name__)


def _config(pack: Path) -> dict:
    """A pack's config.json; ValueError naming the file where it is absent, cut short or no pack's."""
    return read_json_object(Path(pack) / "config.json", ValueError, "is missing: not a packed part or adapter",
                            "a pack's config (a JSON object)")


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


EXPORTED = "export.json"  # what an export wrote into its folder: the voice's file names, its packs, what piper spoke


def export(packs: Sequence[Path], out: Path, voice: str = "", name: str = "", sherpa: bool = False,
           streaming: bool = False) -> dict:
    """Export the voice of `packs` (one, or a decoder, flow and front end together) into `out` as a piper voice named
    from the base `voice` ('': the lab's) and `name` ('': the packs' run names), with its card; piper's runtime speaks
    one sentence before the files replace an earlier export's: {onnx, samples, ...}. `sherpa`: also the folder
    sherpa-onnx loads (SHERPA), which it speaks once; `streaming`: also the streaming pair (STREAMING,
    streaming_pair)."""
    packs, out = [Path(p) for p in packs], Path(out)
    voices.use_voice(voice)
    onnx_path, config = voices.piper_paths()
    model = voice_from_packs(piper_torch.load_piper_torch(onnx_path), packs)
    named = cards.piper_name(onnx_path, name or "+".join(p.name for p in packs))
    staged = onnx_export.export_voice(model, out / ".staged", config, name=named)
    spoke = onnx_export.piper_runtime_check(staged)  # ArtefactError: the folder keeps what it had
    for old in _exported(out):
        (out / old).unlink(missing_ok=True)
    for f in (out / ".staged").iterdir():  # the .onnx, its .onnx.json (and external data, were there any)
        f.replace(out / f.name)
    (out / ".staged").rmdir()
    made = [{"pack": p.name, **{k: v for k, v in _config(p).items() if k in CARD_FIELDS}} for p in packs]
    cards.export_card(name=named, teacher=file_identity(onnx_path), packs=made, spoke=spoke).save(out / "README.md")
    made = {"voice": f"{named}.onnx", "packs": [p.name for p in packs], "spoke": spoke}
    if sherpa:
        from lib.runtimes import sherpa as sherpa_onnx  # deferred: only an export that asks for it loads sherpa-onnx
        sherpa_model = sherpa_onnx.write(out / f"{named}.onnx", out / SHERPA)
        samples, rate = sherpa_onnx.speak(sherpa_model, onnx_export.CHECK_SENTENCE)
        made["sherpa_onnx"] = {"folder": SHERPA, "samples": int(samples.size), "sample_rate": rate}
    if streaming:
        made["streaming"] = streaming_pair(model, out / STREAMING, config)
    atomic_write_json(out / EXPORTED, made)
    return {"onnx": str(out / f"{named}.onnx"), **spoke,
            **{k: made[k] for k in ("sherpa_onnx", "streaming") if k in made}}


STREAMING = "streaming"  # the export's folder for the streaming pair (streaming_pair)
STREAMING_JSON = "streaming.json"


def streaming_pair(model, out: Path, config: Path) -> dict:
    """The streaming pair notebook 05 times, written into `out` (export.export_noise_input: text + noise -> latents,
    a fixed window of latents -> audio, and the whole voice with the same noise inputs), with STREAMING_JSON saying
    how to call them: the files, the window, the hop, the rate, the inputs and the loop that keeps each window's
    centre (lib.harness.scenarios.stream_latent is that loop)."""
    from lib.voices.scales import CHUNK_FRAMES, CONTEXT_FRAMES, SCALES
    paths = onnx_export.export_noise_input(model, out, CHUNK_FRAMES, CONTEXT_FRAMES)
    info = {"latent": paths["latent"].name, "decoder": paths["decoder"].name, "whole": paths["voice"].name,
            "sample_rate": int(model.sample_rate), "hop": piper_torch.hop_length(model),
            "channels": int(model.hparams["inter_channels"]), "chunk_frames": CHUNK_FRAMES,
            "context_frames": CONTEXT_FRAMES, "window_frames": CHUNK_FRAMES + 2 * CONTEXT_FRAMES,
            "config": Path(config).name,
            "inputs": {"input": "int64 [1, phonemes]: piper's phoneme ids (the .onnx.json's phoneme_id_map)",
                       "input_lengths": "int64 [1]", "scales": f"float32 [3]: noise, length, noise_w ({list(SCALES)})",
                       "dp_noise": "float32 [1, 2, phonemes]: standard normal (the duration predictor's draw)",
                       "z_noise": "float32 [1, channels, 20 * phonemes + 100]: standard normal (the prior's draw)"},
            "loop": ("z = latent(...)[0]; pad z's frames with context_frames zeros before and context_frames + "
                     "chunk_frames after; for start = 0, chunk_frames, ... below z's frames: audio = decoder(z=window "
                     "of window_frames from start); keep audio[context_frames * hop : (context_frames + chunk_frames)"
                     " * hop], the last window only up to z's end")}
    atomic_write_json(out / STREAMING_JSON, info)
    return {"folder": out.name, **{k: info[k] for k in ("latent", "decoder", "chunk_frames", "context_frames")}}


SHERPA = "sherpa-onnx"  # the export's folder for sherpa-onnx (lib.runtimes.sherpa)


CARD_FIELDS = ("kind", "steps", "hours", "judged", "heldout")  # what an export's card tells of each pack


def _exported(out: Path) -> list[str]:
    """The voice files an earlier export wrote into `out` (its EXPORTED file names them)."""
    try:
        voice = json.loads((out / EXPORTED).read_text()).get("voice")
    except (OSError, ValueError):
        return []
    return [voice, f"{voice}.json"] if voice else []
