import numpy as np
import pandas as pd
import pytest

from lib.core import results, text
from lib.core.audio import Audio
from lib.harness import evaluate, metrics
from lib.harness.judges import judge, JudgeCache, Judges


def test_corpus_wer_counts_words_not_sentences():
    r = metrics.corpus_wer(["a b c d", "e"], ["a b c d", "x"])
    assert r["wer"] == pytest.approx(1 / 5)


def test_judge_caches_by_audio(tmp_path, sample_clip):
    txt, a = sample_clip
    judges = Judges(asr="pocketsphinx", dnsmos=False, workers=1, cache_path=tmp_path / "cache.sqlite")
    clips = {"c1": a, "c2": Audio(a.samples.copy(), a.sample_rate)}
    df = judge(clips, {"c1": txt, "c2": txt}, judges, tmp_path)
    assert list(df["id"]) == ["c1", "c2"] and df["wer"].iloc[0] == df["wer"].iloc[1]
    cache = JudgeCache(tmp_path / "cache.sqlite")
    import sqlite3
    with sqlite3.connect(tmp_path / "cache.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM scores").fetchone()[0] == 1, "identical audio is judged once"
    key = next(iter(sqlite3.connect(tmp_path / "cache.sqlite").execute("SELECT key FROM scores")))[0]
    cache.put(key, {"asr_hyp": "planted"})
    again = judge({"c1": a}, {"c1": txt}, judges, tmp_path)
    assert again["asr_hyp"].iloc[0] == "planted", "a cached score must be reused, not recomputed"


def test_judging_runs_while_the_caller_goes_on_and_same_audio_in_flight_is_judged_once(tmp_path, sample_clip):
    """Clips handed to the judge processes return at once; a second set holding the same audio, started before the
    first finished, shares its job instead of judging it again; the scores equal one-process judging."""
    from lib.harness import judges as judges_mod
    txt, a = sample_clip
    two = Judges(asr="pocketsphinx", dnsmos=False, workers=2, cache_path=tmp_path / "two.sqlite")
    first = judges_mod.PendingJudgement({"c1": a}, {"c1": txt}, two, tmp_path)
    second = judges_mod.PendingJudgement({"c9": Audio(a.samples.copy(), a.sample_rate)}, {"c9": txt}, two, tmp_path)
    assert len(first._futures) == 1 and second._futures[0] is first._futures[0], "same audio in flight: one job"
    one = Judges(asr="pocketsphinx", dnsmos=False, workers=1, cache_path=None)
    alone = judge({"c1": a}, {"c1": txt}, one, tmp_path / "alone")
    for df in (first.result(), second.result()):
        assert df["asr_hyp"].iloc[0] == alone["asr_hyp"].iloc[0] and df["wer"].iloc[0] == alone["wer"].iloc[0]
    assert not judges_mod._IN_FLIGHT, "finished jobs leave the in-flight table"


def test_evaluate_quality_rows(tmp_path, monkeypatch, quiet_voices):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    ort_v, torch_v = quiet_voices
    sents = text.harvard_sentences([4])[:2]
    w = results.ResultWriter("t", "nb", "m")
    ref = evaluate.synthesize_set(ort_v, sents)
    judges = Judges(asr="pocketsphinx", dnsmos=True, workers=1, cache_path=tmp_path / "c.sqlite")  # pool: above
    df = evaluate.evaluate_quality(torch_v, sents, judges, w.about("torch", backend="torch-cpu", threads=2),
                                   reference=ref)
    assert len(df) == 2 and (df["pesq_wb"] > 4.4).all() and (df["mcd_db"] < 0.5).all()
    assert (tmp_path / "t" / "nb" / "audio" / "torch__torch-cpu" / f"{sents[0].id}.wav").exists()
    got = w.frame().set_index("metric")["value"]
    assert set(evaluate.QUALITY_METRICS + evaluate.REFERENCE_METRICS) <= set(got.index)
    assert 2.5 < got["dnsmos_p808"] < 4.6


def test_measure_speed_ratio(tmp_path, monkeypatch, ort_voice):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    w = results.ResultWriter("t", "nb", "m")
    sents = text.harvard_sentences([5])[:2]
    df = evaluate.measure_speed({"a": ort_voice, "b": ort_voice}, sents, w, baseline="a",
                                subjects={n: w.about(n, threads=1).subject for n in "ab"}, warmup=1,
                                specs={"a": {"name": "piper-joe", "backend": "ort-cpu", "threads": 1}})
    t = df.set_index("name")
    assert t.loc["a", "rtf_ratio"] == 1.0 and t.loc["b", "rtf"] > 0
    # the ratio is b's RTF over the baseline's from the same run (a bound on the value itself would time the machine)
    assert t.loc["b", "rtf_ratio"] == pytest.approx(t.loc["b", "rtf"] / t.loc["a", "rtf"])
    assert 100 < df.set_index("name").loc["a", "peak_rss_mb"] < 4000
    assert pd.isna(df.set_index("name").loc["b"].get("peak_rss_mb", np.nan))


def test_compare_outputs_identical(quiet_voices):
    ort_v, _ = quiet_voices
    df = evaluate.compare_outputs(ort_v, ort_v, text.harvard_sentences([6])[:1])
    assert df["length_diff_samples"].iloc[0] == 0 and df["max_abs_diff"].iloc[0] == 0.0


def test_other_models_share_the_harness(tmp_path, monkeypatch, ort_voice):
    from tests import tiny_hub
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    w = results.ResultWriter("t", "nb", "piper-joe")
    sents = text.harvard_sentences([6])[:2]  # Kokoro's WER on list 6's first sentence alone is 0.57: two, averaged
    gt = tiny_hub.tiny_speech_dataset(tmp_path / "lj", "ljspeech", n=1)
    judges = Judges(asr="whisper-base", dnsmos=True, workers=1, cache_path=tmp_path / "c.sqlite")
    per_clip, speed, absent = evaluate.other_models(
        ["kokoro-82m", "mms-tts-eng"], sents, judges, w, reference_voice=ort_voice, speed_sentences=sents[:1],
        warmup=0, ground_truth="ljspeech", ground_truth_limit=1, ground_truth_source=str(gt))
    assert list(absent) == ["mms-tts-eng"] and "unreachable" in absent["mms-tts-eng"]
    rows = w.frame()
    assert (rows[(rows["model"] == "mms-tts-eng")]["status"] == "absent").all()
    kok = rows[(rows["model"] == "kokoro-82m") & (rows["variant"] == "pretrained")].set_index("metric")["value"]
    assert kok["wer"] < 0.5 and kok["rtf_ratio"] > 2 and 80 < kok["size_mb"] < 100
    assert 3.0 <= kok["dnsmos_p808"] <= 4.5, "an accented speaker, but clean speech"
    assert speed.set_index("model").loc["kokoro-82m", "rtf_ratio"] == kok["rtf_ratio"]
    truth = rows[rows["variant"] == "vs-ljspeech"].pivot_table(index="model", columns="metric", values="value")
    assert set(truth.index) == {"piper-joe", "kokoro-82m"} and (truth["mcd_db"] > 0).all()
    assert (tmp_path / "t" / "nb" / "audio" / "kokoro-82m__ort-cpu" / f"{sents[0].id}.wav").exists()
    assert len(per_clip) == 2 + 2 * 1  # Kokoro's two sentences, and both voices on the one ground-truth clip


def test_judge_processes_end_when_the_process_that_started_them_is_killed(tmp_path):
    """A kernel killed at shutdown never stops its judge pool; the pool's idle workers must end by themselves, or they
    hold the run's output pipe open and whoever waits on that output hangs (the test command did on a loaded Zen 4)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "from lib.harness import judges\n"
        "pool = judges._judge_pool(None, False, 2)\n"
        "print(' '.join(str(p) for p in {pool.submit(os.getpid).result() for _ in range(8)} | "
        "{f.result() for f in [pool.submit(os.getpid) for _ in range(8)]}), flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    workers = [int(p) for p in parent.stdout.readline().split()]
    assert workers and parent.pid not in workers
    alive = lambda pid: (os.path.exists(f"/proc/{pid}")
                         and "Z" not in open(f"/proc/{pid}/stat").read().split()[2])
    assert all(alive(w) for w in workers), "the workers run while their parent does"
    parent.send_signal(signal.SIGKILL)  # no atexit, no pool shutdown: as a killed kernel
    parent.wait()
    deadline = time.monotonic() + 20
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [w for w in workers if alive(w)]
    for w in left:  # leave no process behind when the test fails
        os.kill(w, signal.SIGKILL)
    assert not left, f"judge workers {left} outlived their killed parent"


def test_a_judge_process_whose_parent_died_before_it_started_ends_at_once():
    """A judge process watches the parent spawn recorded, not getppid(): where that parent is gone before the
    initializer ran (getppid() is then 1 or a subreaper's pid), the process ends at once instead of waiting for ever.
    Here spawn's record names a pid no process holds, while this test (its real parent) lives on."""
    import subprocess
    import sys
    gone = 2 ** 22 + 7  # above Linux's largest pid: no live process holds it
    code = ("import multiprocessing, time\n"
            "from lib.harness import judges\n"
            f"multiprocessing.parent_process = lambda: type('Gone', (), {{'pid': {gone}}})()\n"
            "judges._init_worker(None, False)\n"
            "time.sleep(10)\n"
            "raise SystemExit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == 0, "the worker must end itself (os._exit(0)) once the parent spawn named is gone"
