"""Every hub loader through its real from_pretrained / load_dataset code, on tiny random models and tiny datasets
saved to a temp folder (tests/tiny_hub.py). Nothing here claims quality."""
import sys

import numpy as np
import pytest

from lib.core import text
from lib.voices import hub

from tests import tiny_hub


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _speaks(voice, sample_rate):
    audio = voice.synthesize("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.")
    assert audio.sample_rate == sample_rate
    assert audio.samples.size > 0 and np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() <= 1.0
    return audio


def test_vits_mms_layout_loads_and_speaks(tmp_path):
    folder = tiny_hub.tiny_vits(tmp_path / "mms")
    voice = hub.load_hub_voice("mms-tts-eng", model=str(folder))
    a1 = _speaks(voice, 16000)
    a2 = voice.synthesize("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.")
    assert np.array_equal(a1.samples, a2.samples), "seeded sampling noise must repeat"
    assert voice.size_bytes == sum(p.numel() * 4 for p in voice.module.parameters())


def test_speecht5_loads_with_its_vocoder_and_an_xvector(tmp_path):
    model_dir, vocoder_dir = tiny_hub.tiny_speecht5(tmp_path)
    rng = np.random.default_rng(0)
    voice = hub.load_hub_voice("speecht5", model=str(model_dir), vocoder=str(vocoder_dir),
                               speaker=rng.normal(size=64))
    _speaks(voice, 16000)
    np.save(tmp_path / "x.npy", rng.normal(size=64))
    assert hub.speaker_xvector(str(tmp_path / "x.npy"), 64).shape == (64,)
    with pytest.raises(ValueError, match="64 values"):
        hub.load_hub_voice("speecht5", model=str(model_dir), vocoder=str(vocoder_dir), speaker=np.zeros(512))


def test_fastspeech2_conformer_loads_with_its_hifigan(tmp_path, monkeypatch):
    from transformers.utils import import_utils
    monkeypatch.setitem(sys.modules, "g2p_en", tiny_hub.fake_g2p_en())
    monkeypatch.setitem(import_utils.BACKENDS_MAPPING, "g2p_en",
                        (lambda: True, import_utils.BACKENDS_MAPPING["g2p_en"][1]))
    model_dir, vocoder_dir = tiny_hub.tiny_fastspeech2(tmp_path)
    voice = hub.load_hub_voice("fastspeech2-conformer", model=str(model_dir), vocoder=str(vocoder_dir))
    _speaks(voice, 22050)


def test_hf_whisper_transcribes_through_from_pretrained(tmp_path):
    folder = tiny_hub.tiny_whisper(tmp_path / "whisper")
    asr = hub.HfWhisperAsr(str(folder), max_new_tokens=5)
    out = asr.transcribe(np.zeros(16000, np.float32), 16000)
    assert isinstance(out, str)
    assert len(asr.processor.tokenizer("the birch canoe").input_ids) > 3


def test_absent_hub_model_fails_fast_with_the_reason(tmp_path):
    with pytest.raises(hub.HubUnavailable, match="facebook/mms-tts-eng.*unreachable"):
        hub.load_hub_voice("mms-tts-eng")
    with pytest.raises(hub.HubUnavailable, match="hub, which does not answer"):
        hub.reference_set("ljspeech", limit=2)
    with pytest.raises(ValueError, match="unknown hub model 'nope'"):
        hub.load_hub_voice("nope")


def test_tacotron2_without_speechbrain_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "speechbrain", None)
    with pytest.raises(hub.HubUnavailable, match="speechbrain is not installed.*torchaudio"):
        hub.load_hub_voice("tacotron2-hifigan")


@pytest.mark.parametrize("layout", ["ljspeech", "libritts"])
def test_reference_set_from_a_local_dataset(tmp_path, layout):
    folder = tiny_hub.tiny_speech_dataset(tmp_path / layout, layout, n=3, sr=22050)
    sentences, refs = hub.reference_set(layout, limit=2, source=str(folder), sample_rate=16000)
    assert [s.text for s in sentences] == ["the birch canoe slid on the smooth planks",
                                           "glue the sheet to the dark blue background"]
    assert all(isinstance(s, text.Sentence) for s in sentences)
    first = refs[sentences[0].id]
    assert first.sample_rate == 16000 and abs(first.duration - 0.5) < 0.01
    if layout == "libritts":
        only, _ = hub.reference_set(layout, limit=5, source=str(folder), speaker="20")
        assert len(only) == 1 and only[0].text.startswith("glue")


def test_script_datasets_fall_back_to_the_hub_parquet_export(monkeypatch):
    import datasets
    calls = []

    def fake_load(source, config=None, split=None, streaming=False, revision=None):
        calls.append(revision)
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found lj_speech.py")
        return ["rows"]

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout_s=3.0: True)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert hub.load_hub_dataset("keithito/lj_speech", split="train") == ["rows"]
    assert calls == [None, hub.PARQUET_REVISION]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("gone")))
    with pytest.raises(hub.HubUnavailable, match="scripts|gone"):
        hub.load_hub_dataset("keithito/lj_speech")
