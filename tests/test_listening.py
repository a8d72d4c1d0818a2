"""The listening-test kit: blinding, anchors, ratings analysis, and the page itself in headless Chromium."""
import json
import time

import numpy as np
import pytest
import soundfile as sf

from lib.report import listening

NAMES = ["fp32__ort-cpu", "split-bf16__split", "ort-qdq-int8-all__ort-cpu"]


@pytest.fixture
def kit(tmp_path):
    rng = np.random.default_rng(0)
    folders = {}
    for k, name in enumerate(NAMES):
        d = tmp_path / "clips" / name
        d.mkdir(parents=True)
        for sid in ("h01_01", "h01_02", "h01_03"):
            t = np.arange(8000) / 16000
            sf.write(d / f"{sid}.wav",
                     0.3 * np.sin(2 * np.pi * (150 + 40 * k) * t) + 0.01 * rng.standard_normal(t.size), 16000)
        folders[name] = d
    clips = listening.common_clips(folders, 2)
    out = listening.build_kit(clips, NAMES[0], {"h01_01": "one", "h01_02": "two"}, tmp_path / "kit",
                              tmp_path / "key.json", anchors=1, seed=3)
    return out, json.loads((tmp_path / "key.json").read_text()), tmp_path


def test_kit_is_blinded_and_has_its_anchors(kit, tmp_path):
    out, key, _ = kit
    page = out["page"].read_text()
    assert out["stimuli"] == 3 * 2 + 2 and len(key["stimuli"]) == 8
    assert listening.blinded(page, NAMES) == []
    assert listening.blinded("<p>split-bf16</p>", NAMES) == ["bf16", "split"], "the check can fail"
    anchors = [v["anchor"] for v in key["stimuli"].values()]
    assert anchors.count(listening.REFERENCE) == 1 and anchors.count(listening.DEGRADED) == 1
    assert "https://" not in page and page.count("data:audio/wav;base64,") == 8
    with pytest.raises(ValueError, match="must not be inside"):
        listening.build_kit(listening.common_clips({NAMES[0]: tmp_path / "clips" / NAMES[0]}, 1), NAMES[0], {},
                            tmp_path / "kit2", tmp_path / "kit2" / "key.json")


def test_degraded_anchor_is_clearly_worse():
    sr = 16000
    t = np.arange(sr) / sr
    x = (0.5 * np.sin(2 * np.pi * 200 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    y = listening.degrade(x, sr)
    spec = np.abs(np.fft.rfft(y))
    before = np.abs(np.fft.rfft(x))
    drop_db = 20 * np.log10((before[5000] / before[200]) / (spec[5000] / spec[200]))
    assert drop_db > 15, f"the telephone band should cut 5 kHz against 200 Hz; cut only {drop_db:.1f} dB"
    assert np.corrcoef(x, y)[0, 1] < 0.9


def _ratings(key, folder, rater, score_of, seed=1):
    ratings = [{"stimulus": s, "position": i, "score": score_of(v), "played": True}
               for i, (s, v) in enumerate(key["stimuli"].items())]
    (folder / f"ratings_{rater}.json").write_text(json.dumps({"kit_id": key["kit_id"], "rater": rater, "seed": seed,
                                                              "ratings": ratings}))


def test_analysis_screens_raters_and_computes_mos(kit):
    _, key, tmp = kit
    folder = tmp / "kit" / "ratings"
    good = {"fp32__ort-cpu": 5, "split-bf16__split": 4, "ort-qdq-int8-all__ort-cpu": 2}

    def attentive(v):
        if v["anchor"] == listening.DEGRADED:
            return 1
        return good[v["variant"]]

    _ratings(key, folder, "ann", attentive)
    _ratings(key, folder, "bob", lambda v: 4 if v["anchor"] != listening.DEGRADED else 5)
    _ratings(key, folder, "cy", lambda v: max(1, attentive(v) - (v["sentence"] == "h01_02")))
    ratings = listening.load_ratings(folder, key)
    screen = listening.screen_raters(ratings).set_index("rater")
    assert screen.loc["ann", "passed"] and screen.loc["cy", "passed"] and not screen.loc["bob", "passed"]
    mos = listening.mos_table(ratings, ["ann", "cy"]).set_index("variant")
    assert mos.loc["fp32__ort-cpu", "n"] == 4, "anchors are not counted as the variant's ratings"
    assert mos.loc["fp32__ort-cpu", "mos"] == pytest.approx((5 + 5 + 5 + 4) / 4)
    sd = np.std([5, 5, 5, 4], ddof=1)
    assert mos.loc["fp32__ort-cpu", "ci95"] == pytest.approx(3.182446 * sd / 2, rel=1e-4)
    agree = listening.agreement(mos.reset_index(), {"fp32__ort-cpu": 3.9, "split-bf16__split": 3.8,
                                                    "ort-qdq-int8-all__ort-cpu": 3.1})
    assert agree["variants"] == 3 and agree["spearman"] == pytest.approx(1.0)


def test_bad_ratings_files_are_named(kit):
    _, key, tmp = kit
    folder = tmp / "bad"
    folder.mkdir()
    (folder / "x.json").write_text("{not json")
    with pytest.raises(listening.RatingsError, match="x.json: not valid JSON"):
        listening.load_ratings(folder, key)
    (folder / "x.json").write_text(json.dumps({"kit_id": "other", "rater": "a", "seed": 1, "ratings": []}))
    with pytest.raises(listening.RatingsError, match="not of this kit"):
        listening.load_ratings(folder, key)
    stim = next(iter(key["stimuli"]))
    (folder / "x.json").write_text(json.dumps({"kit_id": key["kit_id"], "rater": "a", "seed": 1,
                                               "ratings": [{"stimulus": stim, "score": 7}]}))
    with pytest.raises(listening.RatingsError, match="not on the 1-5 scale"):
        listening.load_ratings(folder, key)


def test_page_in_a_real_browser(kit, tmp_path):
    """Open the page, rate every clip without playing anything, export, and check the download parses, covers
    every stimulus once in the recorded seed's order, and names no variant."""
    from chromium import Chromium, chromium_binary
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (the README's test command installs Debian's chromium)")
    out, key, _ = kit
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Chromium() as browser:
        browser.allow_downloads(downloads)
        browser.open(out["page"].as_uri() + "?seed=42")
        browser.eval("document.getElementById('rater').value = 'tester 1'; document.getElementById('start').click()")
        n = len(key["stimuli"])
        for i in range(n):
            browser.eval(f"document.querySelector(\"input[name=score][value='{1 + i % 5}']\").click();"
                         "document.getElementById('next').click()")
        assert browser.eval("!document.getElementById('done').classList.contains('hidden')")
        browser.eval("document.getElementById('export').click()")
        deadline = time.time() + 20
        while time.time() < deadline and not list(downloads.glob("*.json")):
            time.sleep(0.2)
        errors = browser.console_errors()
        browser.screenshot(tmp_path / "listening_test.png", full_page=False)
    files = list(downloads.glob("*.json"))
    assert len(files) == 1 and files[0].name == f"ratings_{key['kit_id']}_tester_1.json"
    data = json.loads(files[0].read_text())
    assert data["seed"] == 42 and data["kit_id"] == key["kit_id"] and data["rater"] == "tester 1"
    assert sorted(r["stimulus"] for r in data["ratings"]) == sorted(key["stimuli"])
    assert [r["score"] for r in data["ratings"]] == [1 + i % 5 for i in range(n)]
    assert not any(r["played"] for r in data["ratings"]), "nothing was played"
    assert listening.blinded(files[0].read_text() + files[0].name, NAMES) == []
    assert not errors, errors
    ratings = listening.load_ratings(downloads, key)
    assert len(ratings) == n and set(ratings["rater"]) == {"tester 1"}
