"""The teacher voice where no voice package is installed (a lent GPU machine, which reaches no registry and takes
64 MiB from here): piper's PyTorch VITS weights as safetensors beside their architecture and sampling defaults, and
the phoneme ids of the sentences a run speaks (Harvard lists, a teacher corpus's text), written here by `write_bundle`.
`teacher()` and `sentence_ids()` read the bundle that
`TTS_LAB_TEACHER_BUNDLE` names, else the shipped en_US-joe-medium voice, so a long run's code is the same on both.

The weights travel as float16 (the fp32 voice, 63 MB, does not fit beside the repository): the bundle's teacher differs
from the voice by that rounding, so a run on it judges itself against a rounded teacher; the ledger row and every
notebook judge its packed student here, against the voice itself."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from lib.core import env
from lib.core.results import atomic_write_json
from lib.voices import synth as voices
from lib.voices.artefacts import file_identity
from lib.voices.piper_torch import inference_model, load_piper_torch

BUNDLE_ENV = env.TEACHER_BUNDLE.name
WEIGHTS, CONFIG = "teacher.safetensors", "teacher.json"
IDS = "ids.json.gz"  # {sentence id: phoneme ids}, compact and gzipped: a corpus's 10,000 sentences in 0.5 MB


class BundleError(FileNotFoundError):
    """A bundle that is missing a file, or lacks a sentence a run asks for; the message names which."""


def bundle_dir() -> Path | None:
    """The folder TTS_LAB_TEACHER_BUNDLE names (checked), or None where it is unset."""
    value = os.environ.get(BUNDLE_ENV, "").strip()
    if not value:
        return None
    folder = Path(value)
    for name in (WEIGHTS, CONFIG, IDS):
        if not (folder / name).is_file():
            raise BundleError(f"{BUNDLE_ENV}={value}: {folder / name} is missing (write it with "
                              f"`tts-lab train bundle --out {value}`)")
    return folder


def write_bundle(out: Path, sentences, dtype: str = "float16") -> Path:
    """The shipped voice's weights (cast to `dtype`) and architecture, its sampling defaults, and the phoneme ids
    of `sentences` (lib.core.text.Sentence), into `out`; returns it."""
    import torch
    from safetensors.torch import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model_path, config_path = voices.piper_paths()
    model = load_piper_torch(model_path)
    ids = voices.PiperFrontend(config_path).sentence_ids(sentences)
    state = {k: v.detach().to(getattr(torch, dtype)).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    atomic_write_json(out / CONFIG, {"source": Path(model_path).name, "voice_identity": file_identity(model_path),
                                     "dtype": dtype, "hparams": model.hparams,
                                     "sample_rate": model.sample_rate,
                                     "training_only_keys": list(model.training_only_keys),
                                     "inference": json.loads(Path(config_path).read_text()).get("inference", {})})
    tmp = out / (IDS + ".tmp")
    tmp.write_bytes(gzip.compress(json.dumps({s.id: i for s, i in zip(sentences, ids)},
                                             separators=(",", ":")).encode()))
    tmp.replace(out / IDS)
    return out


def teacher():
    """piper's SynthesizerTrn of the teacher voice (float32, eval mode): from the bundle where one is named, else
    rebuilt from the shipped voice's ONNX file."""
    folder = bundle_dir()
    if folder is None:
        return load_piper_torch(voices.piper_paths()[0])
    from safetensors.torch import load_file
    config = json.loads((folder / CONFIG).read_text())
    model = inference_model(config["hparams"])
    model.load_state_dict({k: v.float() for k, v in load_file(str(folder / WEIGHTS)).items()})
    model.eval()
    model.onnx_source = f"{WEIGHTS} ({config['dtype']} of {config['source']})"  # no local path: it is recorded
    model.training_only_keys, model.hparams = config["training_only_keys"], config["hparams"]
    model.sample_rate = config["sample_rate"]
    model.voice_identity = config.get("voice_identity")  # the voice the bundle's weights are a rounding of
    return model


def teacher_identity() -> dict:
    """Which voice the runs here learn from ({"voice", "sha256"}): the bundle's where one is named, else the shipped
    voice's ONNX file (what a pack records, and what refuses it in another voice)."""
    folder = bundle_dir()
    if folder is not None:
        known = json.loads((folder / CONFIG).read_text()).get("voice_identity")
        if known:
            return known
        raise BundleError(f"{folder / CONFIG} does not say which voice it holds (write it again with train bundle)")
    return file_identity(voices.piper_paths()[0])


def voice_inference() -> dict:
    """The voice's own sampling defaults (its .onnx.json `inference` section: noise_scale, noise_w, length_scale), the
    bundle's copy where one is named."""
    folder = bundle_dir()
    if folder is None:
        return json.loads(Path(voices.piper_paths()[1]).read_text()).get("inference", {})
    config = json.loads((folder / CONFIG).read_text())
    if "inference" not in config:
        raise BundleError(f"{folder / CONFIG} has no sampling defaults (write it again with train bundle)")
    return config["inference"]


def sentence_ids(sentences) -> list[list[int]]:
    """The phoneme ids of each sentence (lib.core.text.Sentence): the bundle's where one is named, else piper's
    phonemizer through the shipped voice's config."""
    folder = bundle_dir()
    if folder is None:
        return voices.PiperFrontend(voices.piper_paths()[1]).sentence_ids(sentences)
    table = json.loads(gzip.decompress((folder / IDS).read_bytes()))
    missing = [s.id for s in sentences if s.id not in table]
    if missing:
        raise BundleError(f"{folder / IDS} has no phoneme ids for {len(missing)} sentence(s), e.g. {missing[0]!r}: "
                          f"write the bundle with the lists this run speaks")
    return [table[s.id] for s in sentences]
