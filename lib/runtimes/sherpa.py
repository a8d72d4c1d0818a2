"""A piper voice for sherpa-onnx (issue 69 item 5), the runtime piper's voices take to Android, iOS, a Raspberry Pi
and a dozen languages' bindings: the same .onnx with the metadata its VITS loader reads (`model_type`, `comment:
piper`, language, espeak voice, speakers, rate), `tokens.txt` (the voice's phoneme id map, a symbol and its id per
line) and the espeak-ng data folder, taken from piper's own wheel. Written by hand: neither piper nor sherpa-onnx
ships this conversion as a library call (sherpa-onnx's is a script per model family)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from lib.voices.artefacts import ArtefactError

TOKENS = "tokens.txt"
ESPEAK_DATA = "espeak-ng-data"


def espeak_data() -> Path:
    """The espeak-ng data folder piper's wheel ships (the phonemizer piper's voices were trained with)."""
    import piper
    folder = Path(piper.__file__).parent / ESPEAK_DATA
    if not folder.is_dir():
        raise ArtefactError(f"piper's wheel at {folder.parent} has no {ESPEAK_DATA}: sherpa-onnx needs it to phonemize")
    return folder


def metadata(config: dict) -> dict[str, str]:
    """The metadata sherpa-onnx's VITS loader reads from a piper voice, from its .onnx.json."""
    language = config.get("language", {})
    return {"model_type": "vits", "comment": "piper", "language": language.get("name_english", "English"),
            "voice": config.get("espeak", {}).get("voice", "en-us"), "has_espeak": str(int("espeak" in config)),
            "n_speakers": str(config.get("num_speakers", 1)), "sample_rate": str(config["audio"]["sample_rate"])}


def write(onnx_path: Path, out: Path) -> Path:
    """`out` as sherpa-onnx's folder of the piper voice `onnx_path` (its .onnx.json beside it): the model with
    sherpa's metadata, tokens.txt and espeak-ng-data; returns the model's path there."""
    import onnx
    onnx_path, out = Path(onnx_path), Path(out)
    config = json.loads(Path(str(onnx_path) + ".json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(onnx_path))
    meta = metadata(config)
    kept = [p for p in model.metadata_props if p.key not in meta]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    tmp = out / f".{onnx_path.name}.tmp"
    onnx.save(model, str(tmp))
    tmp.replace(out / onnx_path.name)
    lines = [f"{symbol} {ids[0]}" for symbol, ids in config["phoneme_id_map"].items()]
    (out / TOKENS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if not (out / ESPEAK_DATA).is_dir():
        shutil.copytree(espeak_data(), out / ESPEAK_DATA)
    return out / onnx_path.name


def speak(model: Path, text: str, noise_scale: float = 0.0, noise_w: float = 0.0,
          threads: int = 1) -> tuple[np.ndarray, int]:
    """`text` spoken by sherpa-onnx's OfflineTts from the folder `write` made (noise off by default): (samples,
    rate); ArtefactError naming the file where sherpa-onnx cannot load or run it."""
    import sherpa_onnx
    model = Path(model)
    vits = sherpa_onnx.OfflineTtsVitsModelConfig(model=str(model), tokens=str(model.parent / TOKENS),
                                                 data_dir=str(model.parent / ESPEAK_DATA),
                                                 noise_scale=noise_scale, noise_scale_w=noise_w)
    config = sherpa_onnx.OfflineTtsConfig(model=sherpa_onnx.OfflineTtsModelConfig(vits=vits, num_threads=threads))
    if not config.validate():
        raise ArtefactError(f"sherpa-onnx refuses {model.parent} as a VITS voice (model, {TOKENS}, {ESPEAK_DATA})")
    audio = sherpa_onnx.OfflineTts(config).generate(text, sid=0, speed=1.0)
    samples = np.asarray(audio.samples, dtype=np.float32)
    if not samples.size:
        raise ArtefactError(f"sherpa-onnx spoke nothing from {model}")
    return samples, int(audio.sample_rate)
