import numpy as np
import pytest

from lib.data import features
from lib.voices import synth as voices


def test_f0_of_a_pure_tone():
    sr = 16000
    t = np.arange(sr) / sr
    tone = 0.5 * np.sin(2 * np.pi * 150 * t)
    _, f0 = features.f0_contour(tone, sr)
    assert np.median(f0[f0 > 0]) == pytest.approx(150, rel=0.02)


def test_utterance_features(sample_clip):
    text, a = sample_clip
    f = features.utterance_features(a.samples, a.sample_rate, text)
    assert f["audio_s"] == pytest.approx(a.duration)
    assert 80 < f["f0_mean_hz"] < 250 and 0.2 < f["voiced_fraction"] < 0.95
    assert f["words_per_s"] == pytest.approx(8 / a.duration)
    mel = features.log_mel(a.samples, a.sample_rate)
    assert mel.shape[0] == 80 and mel.max() == pytest.approx(0.0)


def test_phoneme_durations_add_up():
    al = features.PhonemeAligner(*voices.joe_paths())
    d = al.durations("The birch canoe slid on the smooth planks.")
    frame = 256 / 22050
    assert len(d) > 30 and all(x >= 0 for _, x in d)
    assert all(abs(x / frame - round(x / frame)) < 1e-6 for _, x in d), "durations are whole 256-sample frames"
    assert 1.5 < sum(x for _, x in d) < 4.0
