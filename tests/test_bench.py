import time

import numpy as np
import pytest
import torch

from lib.harness import bench


def test_timing_summary_math():
    t = bench.Timing(latencies_s=np.array([0.1, 0.2, 0.3, 0.4]), audio_s=np.array([1.0, 1.0, 2.0, 2.0]))
    s = t.summary()
    assert s["rtf"] == pytest.approx(np.median([0.1, 0.2, 0.15, 0.2]))
    assert s["latency_ms_p50"] == pytest.approx(250.0)
    assert s["throughput_xrt"] == pytest.approx(6.0 / 1.0)


def test_time_interleaved_counts_and_orders():
    calls = []

    def make(name, delay):
        def fn(text):
            calls.append(name)
            time.sleep(delay)
            return len(text)
        return fn
    out = bench.time_interleaved({"fast": make("fast", 0.001), "slow": make("slow", 0.02)}, ["ab", "cd", "ef"],
                                 duration_of=lambda n: 1.0, warmup=1, repeats=2)
    assert len(out["fast"].latencies_s) == len(out["slow"].latencies_s) == 6
    assert calls[:2] == ["fast", "slow"]
    assert out["slow"].summary()["rtf"] > 5 * out["fast"].summary()["rtf"]
    with pytest.raises(ValueError, match="no texts"):
        bench.time_calls(lambda t: t, [], len)


def test_sizes_and_counts(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 2**20)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "b").write_bytes(b"x" * 2**19)
    assert bench.size_mb(tmp_path / "a") == pytest.approx(1.0)
    assert bench.size_mb(tmp_path) == pytest.approx(1.5)
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "model.onnx").write_bytes(b"x" * 2**19)
    for k in range(2):  # external-data shards hold an ONNX file's weights: they count
        (tmp_path / "v" / f"model.onnx.data{k}").write_bytes(b"x" * 2**20)
    assert bench.size_mb(tmp_path / "v" / "model.onnx") == pytest.approx(2.5)
    m = torch.nn.Sequential(torch.nn.Conv1d(4, 8, 3), torch.nn.Conv1d(8, 2, 1))
    with torch.no_grad():
        m[0].weight[:4] = 0
    m[1].weight.requires_grad_(False)
    c = bench.param_counts(m)
    assert c["params"] == 4 * 8 * 3 + 8 + 8 * 2 + 2
    assert c["nonzero_params"] == c["params"] - 4 * 4 * 3
    assert c["trainable_params"] == c["params"] - 16
    assert bench.params_by_module(m) == {"0": 104, "1": 18}


def test_flops_by_module():
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv1d(4, 8, 3, padding=1, bias=False)
            self.b = torch.nn.Conv1d(8, 2, 1, bias=False)

        def infer(self, x):
            return self.b(self.a(x))
    net = Net()
    f = bench.flops_by_module(lambda: net.infer(torch.zeros(1, 4, 10)), net)
    assert f["a"] == 2 * 4 * 8 * 3 * 10 and f["b"] == 2 * 8 * 2 * 10
    assert f["total"] == f["a"] + f["b"]


def test_peak_rss_in_subprocess_sees_an_allocation():
    ballast = np.ones(600 * 2**20 // 8)
    small = bench.peak_rss_in_subprocess(_alloc, 1)
    big = bench.peak_rss_in_subprocess(_alloc, 300)
    assert big - small > 200
    assert small < 500, "the child's peak must not include the parent's 600 MB"
    del ballast


def test_memory_probes_each_run_in_a_fresh_process():
    """Probes run `workers` at a time, never one after another in the same process: a small job after a big one in a
    single worker keeps its own, small peak."""
    peaks = bench.peak_rss_in_subprocesses(_alloc, {"big": (300,), "small": (1,)}, workers=1)
    assert peaks["big"] - peaks["small"] > 200 and peaks["small"] < 500


def _alloc(mb):
    buf = np.ones(mb * 2**20 // 8)
    return float(buf.sum())


def test_environment_has_what_a_number_needs():
    env = bench.environment(threads=2)
    for key in ("cpu_model", "cpu_count", "threads", "versions", "git", "date_utc", "python"):
        assert key in env
    assert env["versions"]["torch"].startswith("2.") and env["threads"] == 2


def test_a_code_snapshot_without_git_names_the_commit_its_file_says(tmp_path, monkeypatch):
    """A long run's code snapshot (git archive, no .git) records the commit its COMMIT file names, not 'unknown'."""
    monkeypatch.setattr(bench, "ROOT", tmp_path)
    assert bench.git_hash() == "unknown"
    (tmp_path / bench.SNAPSHOT_COMMIT).write_text("d81c181\n")
    assert bench.git_hash() == "d81c181-snapshot"
