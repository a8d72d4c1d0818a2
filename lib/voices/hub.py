"""Hub-backed synthesizers, ASR and datasets for the `full` profile: the real `from_pretrained` / `load_dataset`
code paths. Each takes a hub id or a local directory; when neither the network nor a local copy has it, the loader
raises HubUnavailable with the reason, which a notebook records as an absent row before it carries on."""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.core import text as textmod
from lib.core.audio import Audio, read_audio, resample
from lib.voices.synth import NOISE_SCALE, NOISE_W, VOICE_NAMES, join_sentences, load_voice

HUB_HOST = "huggingface.co"


class HubUnavailable(RuntimeError):
    """A hub model or dataset that cannot be loaded here (no network, no local copy, a missing package)."""


@dataclass(frozen=True)
class HubModel:
    """A synthesizer on the hub: `kind` picks the loader, `model` and `vocoder` are hub ids (or local folders)."""
    kind: str
    model: str
    vocoder: str = ""
    licence: str = ""


HUB_MODELS = {
    "speecht5": HubModel("speecht5", "microsoft/speecht5_tts", "microsoft/speecht5_hifigan", "MIT"),
    "fastspeech2-conformer": HubModel("fastspeech2", "espnet/fastspeech2_conformer",
                                      "espnet/fastspeech2_conformer_hifigan", "Apache-2.0"),
    "mms-tts-eng": HubModel("vits", "facebook/mms-tts-eng", licence="CC-BY-NC-4.0"),
    "vits-ljs": HubModel("vits", "kakao-enterprise/vits-ljs", licence="MIT"),
    "tacotron2-hifigan": HubModel("speechbrain", "speechbrain/tts-tacotron2-ljspeech",
                                  "speechbrain/tts-hifigan-ljspeech", "Apache-2.0"),
}

SPEECHT5_XVECTORS = "Matthijs/cmu-arctic-xvectors"


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the hub answers at all; without this check each offline from_pretrained retries for about a minute."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def pretrained(cls, source: str, **kwargs):
    """`cls.from_pretrained(source)`, offline-only when the hub does not answer; failures become HubUnavailable."""
    local = Path(source).is_dir()
    try:
        return cls.from_pretrained(source, local_files_only=local or not hub_reachable(), **kwargs)
    except Exception as exc:
        where = "local folder" if local else ("hub (unreachable from here)" if not hub_reachable() else "hub")
        raise HubUnavailable(f"{cls.__name__}.from_pretrained({source!r}) failed from the {where}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None


def _param_bytes(*modules) -> int:
    return int(sum(p.numel() * p.element_size() for m in modules for p in m.parameters()))


@dataclass
class HubVoice:
    """Common text handling for hub synthesizers: split into sentences, synthesize each, peak-normalise, join."""
    name: str
    threads: int = 1
    normalize: bool = True
    seed: int = 0
    sample_rate: int = field(init=False, default=16000)

    def synthesize_sentence(self, sentence: str) -> np.ndarray:
        raise NotImplementedError

    def synthesize(self, text: str) -> Audio:
        import torch
        torch.set_num_threads(int(self.threads))
        torch.manual_seed(self.seed)
        sentences = textmod.split_sentences(textmod.check_speakable(text))
        with torch.inference_mode():
            return join_sentences([self.synthesize_sentence(s) for s in sentences], self.sample_rate, self.normalize)


@dataclass
class SpeechT5Voice(HubVoice):
    """SpeechT5 TTS (encoder-decoder to mel) + its HiFi-GAN, voiced by one 512-d speaker x-vector; `module`, a
    SpeechT5ForTextToSpeech already in memory (a fine-tuned one), replaces the one `model` names."""
    model: str = "microsoft/speecht5_tts"
    vocoder: str = "microsoft/speecht5_hifigan"
    speaker: np.ndarray | str | int = 7306
    module: object = None

    def __post_init__(self):
        from transformers import SpeechT5ForTextToSpeech, SpeechT5HifiGan, SpeechT5Processor
        self.processor = pretrained(SpeechT5Processor, self.model)
        self.module = (self.module or pretrained(SpeechT5ForTextToSpeech, self.model)).eval()
        self.vocoder_module = pretrained(SpeechT5HifiGan, self.vocoder).eval()
        self.sample_rate = int(self.vocoder_module.config.sampling_rate)
        self.xvector = speaker_xvector(self.speaker, self.module.config.speaker_embedding_dim)

    def synthesize_sentence(self, sentence: str) -> np.ndarray:
        import torch
        ids = self.processor(text=sentence, return_tensors="pt")["input_ids"]
        speech = self.module.generate_speech(ids, torch.from_numpy(self.xvector)[None], vocoder=self.vocoder_module)
        return speech.numpy()

    @property
    def size_bytes(self) -> int:
        return _param_bytes(self.module, self.vocoder_module)


def speaker_xvector(speaker, dim: int = 512) -> np.ndarray:
    """A speaker x-vector: an array as given, a .npy file, or the row of that index in the CMU ARCTIC x-vectors
    dataset on the hub (7306 is the US female voice SpeechT5's own examples use)."""
    if isinstance(speaker, (str, Path)) and Path(speaker).suffix == ".npy":
        vec = np.load(speaker)
    elif isinstance(speaker, (int, np.integer)):
        rows = load_hub_dataset(SPEECHT5_XVECTORS, split="validation")
        vec = np.asarray(rows[int(speaker)]["xvector"])
    else:
        vec = np.asarray(speaker)
    vec = np.asarray(vec, dtype=np.float32).reshape(-1)
    if vec.shape != (dim,):
        raise ValueError(f"speaker x-vector must have {dim} values, got {vec.shape}")
    return vec



@dataclass
class FastSpeech2Voice(HubVoice):
    """FastSpeech2 Conformer (ESPnet, LJSpeech) to mel + its HiFi-GAN; text to ARPAbet through g2p_en."""
    model: str = "espnet/fastspeech2_conformer"
    vocoder: str = "espnet/fastspeech2_conformer_hifigan"

    def __post_init__(self):
        from transformers import (FastSpeech2ConformerHifiGan, FastSpeech2ConformerModel,
                                  FastSpeech2ConformerTokenizer)
        try:
            self.tokenizer = pretrained(FastSpeech2ConformerTokenizer, self.model)
        except HubUnavailable as exc:
            raise HubUnavailable(f"{exc} (its tokenizer needs g2p_en and NLTK data)") from None
        self.module = pretrained(FastSpeech2ConformerModel, self.model).eval()
        self.vocoder_module = pretrained(FastSpeech2ConformerHifiGan, self.vocoder).eval()
        self.sample_rate = int(self.vocoder_module.config.sampling_rate)

    def synthesize_sentence(self, sentence: str) -> np.ndarray:
        ids = self.tokenizer(sentence, return_tensors="pt")["input_ids"]
        mel = self.module(ids, return_dict=True).spectrogram
        return self.vocoder_module(mel).numpy()

    @property
    def size_bytes(self) -> int:
        return _param_bytes(self.module, self.vocoder_module)


@dataclass
class VitsHubVoice(HubVoice):
    """A VITS voice in transformers (MMS-TTS, vits-ljs): text to waveform in one model, seeded sampling noise."""
    model: str = "facebook/mms-tts-eng"
    noise_scale: float = NOISE_SCALE  # VITS's defaults, the same as piper's
    noise_w: float = NOISE_W

    def __post_init__(self):
        from transformers import AutoTokenizer, VitsModel
        self.tokenizer = pretrained(AutoTokenizer, self.model)
        if getattr(self.tokenizer, "phonemize", False):
            from transformers.utils import is_phonemizer_available
            if not is_phonemizer_available():
                raise HubUnavailable(f"{self.model}'s tokenizer phonemizes with the `phonemizer` package and "
                                     "espeak, and `phonemizer` is not installed")
        self.module = pretrained(VitsModel, self.model).eval()
        self.module.noise_scale = self.noise_scale
        self.module.noise_scale_duration = self.noise_w
        self.sample_rate = int(self.module.config.sampling_rate)

    def synthesize_sentence(self, sentence: str) -> np.ndarray:
        inputs = self.tokenizer(sentence, return_tensors="pt")
        if inputs["input_ids"].shape[-1] == 0:
            raise textmod.TextError(f"{self.model}'s tokenizer kept no characters of {sentence[:60]!r}")
        return self.module(**inputs).waveform.numpy()

    @property
    def size_bytes(self) -> int:
        return _param_bytes(self.module)


@dataclass
class Tacotron2Voice(HubVoice):
    """Tacotron2 + HiFi-GAN trained on LJSpeech, through speechbrain's inference interfaces."""
    model: str = "speechbrain/tts-tacotron2-ljspeech"
    vocoder: str = "speechbrain/tts-hifigan-ljspeech"
    savedir: str = "outputs/hub_cache"

    def __post_init__(self):
        try:
            from speechbrain.inference.TTS import Tacotron2
            from speechbrain.inference.vocoders import HIFIGAN
        except ImportError as exc:
            raise HubUnavailable(f"speechbrain is not installed ({exc}); it needs torchaudio, which has no CPU "
                                 "build for torch 2.13 on PyPI: install both on a machine that has them") from None
        try:
            self.module = Tacotron2.from_hparams(source=self.model, savedir=f"{self.savedir}/tacotron2")
            self.vocoder_module = HIFIGAN.from_hparams(source=self.vocoder, savedir=f"{self.savedir}/hifigan")
        except Exception as exc:
            raise HubUnavailable(f"speechbrain could not load {self.model}: {type(exc).__name__}: {exc}") from None
        self.sample_rate = 22050  # LJSpeech's, which both models were trained on

    def synthesize_sentence(self, sentence: str) -> np.ndarray:
        mel, _, _ = self.module.encode_text(sentence)
        return self.vocoder_module.decode_batch(mel).squeeze().numpy()

    @property
    def size_bytes(self) -> int:
        return _param_bytes(self.module.mods, self.vocoder_module.mods)


def load_hub_voice(name: str, threads: int = 1, **overrides) -> HubVoice:
    """A hub synthesizer by its name in HUB_MODELS; `overrides` replace its `model`/`vocoder` ids (a local folder
    works) or pass settings (speaker, noise_scale, ...)."""
    if name not in HUB_MODELS:
        raise ValueError(f"unknown hub model {name!r}: use one of {', '.join(HUB_MODELS)}")
    spec = HUB_MODELS[name]
    kwargs = dict(model=spec.model, **({"vocoder": spec.vocoder} if spec.vocoder else {}))
    kwargs.update(overrides)
    cls = {"speecht5": SpeechT5Voice, "fastspeech2": FastSpeech2Voice, "vits": VitsHubVoice,
           "speechbrain": Tacotron2Voice}[spec.kind]
    return cls(name=name, threads=threads, **kwargs)


def any_voice(name: str, threads: int = 1, **settings):
    """A voice by name, local or hub: 'piper-joe' and 'kokoro-82m' ship on PyPI (ONNX Runtime), the names in
    HUB_MODELS load through transformers or speechbrain (PyTorch)."""
    if name in VOICE_NAMES:
        return load_voice(name, backend="ort-cpu", threads=threads, **settings)
    return load_hub_voice(name, threads=threads, **settings)


def voice_backend(name: str) -> str:
    return "ort-cpu" if name in VOICE_NAMES else "torch-cpu"


class HfWhisperAsr:
    """Whisper through transformers (any size on the hub, or a local folder), greedy, English, for WER/CER."""

    def __init__(self, model: str = "openai/whisper-small", threads: int = 1, max_new_tokens: int = 128):
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor
        torch.set_num_threads(int(threads))
        self.processor = pretrained(WhisperProcessor, model)
        self.model = pretrained(WhisperForConditionalGeneration, model).eval()
        self.max_new_tokens = max_new_tokens

    def transcribe(self, audio: np.ndarray, sr: int) -> str:
        import torch
        x = resample(np.asarray(audio, dtype=np.float32), sr, 16000)
        feats = self.processor(x, sampling_rate=16000, return_tensors="pt").input_features
        with torch.inference_mode():
            ids = self.model.generate(feats, language="en", task="transcribe", max_new_tokens=self.max_new_tokens)
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()


@dataclass(frozen=True)
class HubDataset:
    """A speech corpus on the hub and the columns that hold its text, audio and speaker."""
    source: str
    config: str | None
    split: str
    text: str
    audio: str = "audio"
    speaker: str | None = None
    licence: str = ""


HUB_DATASETS = {
    "ljspeech": HubDataset("keithito/lj_speech", None, "train", "normalized_text", licence="public domain"),
    "libritts": HubDataset("mythicinfinity/libritts", "clean", "test.clean", "text_normalized",
                           speaker="speaker_id", licence="CC-BY-4.0"),
}


PARQUET_REVISION = "refs/convert/parquet"


def load_hub_dataset(source: str, config: str | None = None, split: str = "train", streaming: bool = False):
    """`datasets.load_dataset` on a hub id or a local folder of data files; a hub dataset that only has a loading
    script (LJSpeech, the CMU ARCTIC x-vectors; `datasets` no longer runs scripts) is read from the parquet export
    the hub keeps of it. Failures become HubUnavailable."""
    import datasets
    local = Path(source).is_dir()
    if not local and not hub_reachable():
        raise HubUnavailable(f"dataset {source!r} is on the hub, which does not answer from here "
                             "(and no local folder of that name exists)")
    try:
        return datasets.load_dataset(source, config, split=split, streaming=streaming)
    except Exception as exc:
        first = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    if not local:
        try:
            return datasets.load_dataset(source, config, split=split, streaming=streaming, revision=PARQUET_REVISION)
        except Exception as exc:
            first += f"; its parquet export too: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    raise HubUnavailable(f"load_dataset({source!r}, {config!r}, split={split!r}) failed: {first}")


def decode_audio(cell, sample_rate: int | None = None) -> Audio:
    """An undecoded `datasets` audio cell ({bytes, path}) read with soundfile (no torchcodec needed), resampled."""
    data = cell.get("bytes")
    x, sr = read_audio(data if data else cell["path"], "dataset audio")
    if sample_rate and sr != sample_rate:
        x, sr = resample(x, sr, sample_rate), sample_rate
    return Audio(x.astype(np.float32), int(sr))


def reference_set(name: str, limit: int, source: str | None = None, sample_rate: int | None = None,
                  speaker=None) -> tuple[list[textmod.Sentence], dict[str, Audio]]:
    """The first `limit` utterances of a HUB_DATASETS corpus (of one speaker, when given) as evaluation sentences
    and their recordings, so MCD, F0 and PESQ are measured against ground truth."""
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(HUB_DATASETS)}")
    spec = HUB_DATASETS[name]
    import datasets
    rows = load_hub_dataset(source or spec.source, None if source else spec.config,
                            split=spec.split if not source else "train", streaming=not source)
    rows = rows.cast_column(spec.audio, datasets.Audio(decode=False))
    sentences, refs = [], {}
    for i, row in enumerate(rows):
        if len(sentences) >= limit:
            break
        if speaker is not None and spec.speaker and str(row[spec.speaker]) != str(speaker):
            continue
        missing = [c for c in (spec.text, spec.audio) if c not in row]
        if missing:
            raise HubUnavailable(f"dataset {name}: row {i} lacks column(s) {missing}; it has {sorted(row)}")
        sid = f"{name}_{row.get('id', i)}"
        sentences.append(textmod.Sentence(id=sid, text=str(row[spec.text]).strip()))
        refs[sid] = decode_audio(row[spec.audio], sample_rate)
    if not sentences:
        raise HubUnavailable(f"dataset {name} gave no utterances" + (f" of speaker {speaker}" if speaker else ""))
    return sentences, refs
