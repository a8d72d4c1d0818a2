"""CPU features and precisions: a variant whose precision this CPU lacks is an absent row, on any CPU. The
missing precision is faked here, so the path is checked on machines that do have bf16 too."""
import pandas as pd
import pytest

from lib.core import machine, results, text
from lib.core.audio import Audio
from lib.voices import synth as voices
from lib.harness import evaluate
from lib.harness.judges import Judges


NO_BF16 = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AMX = NO_BF16 | {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16"}


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(NO_BF16))
    monkeypatch.setattr(machine, "openvino_cpu_precisions", lambda: ["FP32", "INT8", "BIN", "EXPORT_IMPORT"])


def test_features_follow_the_flags(monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(AMX))
    assert machine.cpu_features() == {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True}
    assert machine.has_native_bf16()
    monkeypatch.setattr(machine, "cpu_flags", lambda: set(NO_BF16))
    assert machine.cpu_features()["bf16"] is False and not machine.has_native_bf16()
    assert machine.feature_line() == "AVX2; no AVX-512, no VNNI, no bf16, no AMX"


def test_missing_precision_is_refused_with_the_reason(cpu_without_bf16):
    machine.require_precision("openvino-cpu", "f32")
    machine.require_precision("torch-cpu", "fp32")
    with pytest.raises(machine.PrecisionUnavailable, match="no bf16"):
        voices.load_voice(backend="openvino-cpu", precision="bf16", threads=1)
    with pytest.raises(machine.PrecisionUnavailable, match="neither avx512_bf16 nor amx_bf16"):
        voices.load_voice(backend="torch-cpu", autocast_bf16=True, threads=1)


def test_harness_records_absent_rows_and_carries_on(cpu_without_bf16, tmp_path, monkeypatch):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    onnx, _ = voices.joe_paths()
    variants = [evaluate.onnx_variant("fp32", "baseline", onnx, parent=""),
                evaluate.onnx_variant("openvino-bf16", "bf16", onnx, backend="openvino-cpu", precision="bf16"),
                evaluate.onnx_variant("openvino-f32", "runtime", onnx, backend="openvino-cpu", precision="f32")]
    builds = []
    for v in variants:  # count the builds: each variant is built once, and speaks judged and timed from that build
        v.make = (lambda make, name: lambda **kw: (builds.append(name), make(**kw))[1])(v.make, v.name)
    writer = results.ResultWriter("t", "nb", "piper-joe")
    sentences = text.harvard_sentences([1])[:2]
    per_clip, speed = evaluate.evaluate_variants(
        variants, sentences, Judges(asr=None, dnsmos=False, workers=1), writer, baseline="fp32",
        settings=dict(noise_scale=0.667, noise_w=0.8, length_scale=1.0), threads=1,
        speed_sentences=1, warmup=0, memory=False, paired=True)
    assert sorted(builds) == ["fp32", "openvino-bf16", "openvino-f32"]
    df = writer.frame()
    results.validate_frame(df)
    bf16 = df[df["variant"] == "openvino-bf16"]
    assert set(bf16["status"]) == {"absent"} and set(bf16["metric"]) >= {"dnsmos_p808", "rtf"}
    assert bf16["reason"].str.contains("no bf16").all() and bf16["value"].isna().all()
    assert set(per_clip["variant"]) == {"fp32", "openvino-f32"}
    assert set(speed["name"]) == {"fp32", "openvino-f32"}
    f32 = df[(df["variant"] == "openvino-f32") & (df["metric"] == "rtf_ratio")]
    assert f32["status"].iloc[0] in ("ok", "contended") and 0 < f32["value"].iloc[0] < 100
    assert isinstance(per_clip, pd.DataFrame)


def test_a_timed_only_variant_is_timed_and_never_spoken_for_the_judges(tmp_path, monkeypatch):
    """An adapter left unmerged is its merged twin's audio: the harness times it and judges nothing of it."""
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    onnx, _ = voices.joe_paths()
    variants = [evaluate.onnx_variant("fp32", "baseline", onnx, parent=""),
                evaluate.onnx_variant("twin", "runtime", onnx, parent="fp32")]
    writer = results.ResultWriter("t", "nb", "piper-joe")
    per_clip, speed = evaluate.evaluate_variants(
        variants, text.harvard_sentences([1])[:2], Judges(asr=None, dnsmos=False, workers=1), writer,
        baseline="fp32", settings=dict(noise_scale=0.667, noise_w=0.8, length_scale=1.0), threads=1,
        speed_sentences=1, warmup=0, memory=False, paired=True, timed_only=["twin"])
    assert set(per_clip["variant"]) == {"fp32"} and set(speed["name"]) == {"fp32", "twin"}
    twin = writer.frame().query("variant == 'twin'")
    assert {"rtf", "rtf_ratio", "size_mb"} <= set(twin["metric"]) and not set(twin["metric"]) & {"pesq_wb", "mcd_db"}
    assert not (writer.dir / "audio" / evaluate.clip_dir_name("twin", "ort-cpu")).exists()


def _load(others, steal=0.0, cores=2, threads=1):
    return machine.Load(seconds=1.0, cores=cores, threads=threads, others_cores=others, steal_frac=steal,
                        loadavg_1m=1.0, runnable=1, mhz=None)


def test_contention_threshold():
    assert not _load(0.1).contended and not _load(1.2, threads=1).contended
    assert _load(1.3, threads=1).contended and _load(0.3, threads=2).contended
    assert _load(0.0, steal=0.2).contended and _load(0.0, steal=0.06).contended  # 0.12 s stolen of 2 s
    # a tenth of a second: 3 stolen ticks of 10 ms read as 15 %, under the resolution the counter has
    short = machine.Load(seconds=0.1, cores=2, threads=1, others_cores=0.0, steal_frac=0.154, loadavg_1m=1.0,
                         runnable=1, mhz=None)
    assert not short.contended and machine.Load(**{**short.__dict__, "seconds": 1.1, "steal_frac": 0.086}).contended
    assert "0.30 of 2 cores" in _load(0.3, threads=2).reason()


@pytest.fixture
def busy_neighbour():
    """Another process spinning on one core for the length of a test."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<60: pass"])
    import time
    time.sleep(0.3)
    yield proc
    proc.kill()
    proc.wait()


def test_busy_neighbour_marks_timing_rows_contended(busy_neighbour, tmp_path, monkeypatch):
    """A 2-thread timing while another process spins on a core is contended; its rows say so, with the figures."""
    import time

    from lib.harness import bench
    monkeypatch.delenv("TTS_LAB_REQUIRE_QUIET", raising=False)

    class Slow:
        def synthesize(self, t):
            time.sleep(0.3)
            return Audio(samples=__import__("numpy").zeros(22050, dtype="float32"), sample_rate=22050)

    writer = results.ResultWriter("t", "nb", "m")
    sents = [text.Sentence(str(i), "x") for i in range(3)]
    evaluate.measure_speed({"a": Slow(), "b": Slow()}, sents, writer, baseline="a",
                           subjects={n: writer.about(n, threads=2).subject for n in "ab"}, warmup=0)
    df = writer.frame()
    results.validate_frame(df)
    assert set(df["status"]) == {"contended"}, df[["metric", "status", "reason"]]
    assert df["reason"].str.contains("other processes used").all()
    assert writer.scalars["timing_load"][0]["contended"] is True
    monkeypatch.setenv("TTS_LAB_REQUIRE_QUIET", "1")
    with pytest.raises(machine.MachineBusy, match="stayed busy for 1 s"):
        bench.time_calls(Slow().synthesize, ["x"], lambda a: a.duration, warmup=0, threads=2)


def test_report_keeps_contended_apart_and_names_the_cpu():
    from lib.report import recommend, report
    df = pd.DataFrame([
        dict(notebook="03", model="m", variant="a", backend="ort-cpu", threads=1, metric="rtf", value=0.1,
             status="contended", reason="contended: ..."),
        dict(notebook="03", model="m", variant="b", backend="ort-cpu", threads=1, metric="rtf", value=None,
             status="absent", reason="no bf16"),
        dict(notebook="03", model="m", variant="c", backend="ort-cpu", threads=1, metric="rtf", value=0.2,
             status="ok", reason="")])
    assert report.contended_rows(df)["variant"].tolist() == ["a"]
    assert report.absent_rows(df)["variant"].tolist() == ["b"]
    assert report.wide(df)["variant"].tolist() == ["c"]
    old_env = {"cpu_model": "Intel Xeon", "cpu_count": 2, "cpu_flags": ["avx2", "avx512f", "amx_bf16", "amx_tile"]}
    assert report.cpu_line(old_env) == "Intel Xeon, 2 cores: AVX2, AVX-512, bf16, AMX; no VNNI"
    assert recommend.relies_on("static-shape decoder + bf16").startswith("native bf16")
    assert recommend.relies_on("ort static int8").startswith("int8 dot products")
    assert recommend.relies_on("baseline").startswith("FP32")
    assert recommend.relies_on("a label of an older run").startswith("FP32")


def test_work_done_in_a_waited_for_child_is_not_contention():
    """A timed block whose work runs in a child process it waits for (a cold start) is not contended by that child.
    The block takes the measuring turn as the harness's timed blocks do (bench.Watched), so the other lane (the smoke
    notebooks, which have priority over the unit tests) is stopped and the child gets its core."""
    import subprocess
    import sys
    import os
    from lib.core import lanes
    before = os.times()
    with lanes.turn(), machine.LoadMonitor(threads=1) as mon:
        subprocess.run([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.0: pass"],
                       check=True)
    after = os.times()
    child_cores = ((after.children_user + after.children_system - before.children_user - before.children_system)
                   / mon.load.seconds)
    assert child_cores > 0.5, "the child did not spin"
    # Compared with what this test itself caused, not with the neighbours: of all the busy cores the machine saw,
    # at least the child's work is counted as this block's own, whatever else ran meanwhile.
    assert mon.load.busy_cores is not None and mon.load.others_cores is not None
    assert mon.load.busy_cores - mon.load.others_cores >= 0.8 * child_cores, mon.load


def test_a_timing_that_just_ended_quiet_counts_as_the_quiet_sample(monkeypatch):
    """Back-to-back timings skip the quiet sample only when the last watched block was long, recent and quiet
    enough for the threads asked for; otherwise the machine is sampled again."""
    import time
    samples = []
    monkeypatch.setattr(machine, "sample_load",
                        lambda threads, s: samples.append(threads) or _load(0.0, threads=threads))
    monkeypatch.setattr(machine, "_LAST_SEEN", (time.monotonic(), _load(0.9)))
    assert machine.wait_for_quiet(1, 5, 0.5).others_cores == 0.9 and samples == [], "recent and quiet: no sample"
    assert machine.wait_for_quiet(2, 5, 0.5).others_cores == 0.0 and samples == [2], \
        "0.9 cores busy: too many for 2 threads"
    monkeypatch.setattr(machine, "_LAST_SEEN", (time.monotonic() - 2.0, _load(0.0)))
    machine.wait_for_quiet(1, 5, 0.5)
    assert samples == [2, 1], "an old observation is sampled again"
    short = machine.Load(seconds=0.1, cores=2, threads=1, others_cores=0.0, steal_frac=0.0, loadavg_1m=1.0, runnable=1,
                         mhz=None)
    monkeypatch.setattr(machine, "_LAST_SEEN", (time.monotonic(), short))
    machine.wait_for_quiet(1, 5, 0.5)
    assert samples == [2, 1, 1], "a block shorter than the sample is not enough"
    with machine.LoadMonitor(1):
        pass
    assert machine._LAST_SEEN[1].seconds < 0.5, "every watched block is remembered"


def test_the_avx2_switch_makes_the_lab_act_as_an_avx2_only_cpu(monkeypatch):
    """TTS_LAB_CPU_AS=avx2 (what the unit suite runs under by default): however new the CPU, the lab sees no
    AVX-512, VNNI, bf16 or AMX, OpenVINO offers no bf16, bf16 variants are refused by name; 'native' is the CPU as
    it is; anything else fails naming the variable. The hardware's own flags are still what env.json records."""
    monkeypatch.setattr(machine, "real_cpu_flags", lambda: set(AMX) | {"avx512_fp16", "avx_vnni"})
    monkeypatch.setattr(machine, "_ov_capabilities", lambda: ["FP32", "BF16", "FP16", "INT8"])
    monkeypatch.setenv("TTS_LAB_CPU_AS", "native")
    assert machine.cpu_features() == {"avx2": True, "avx512": True, "vnni": True, "bf16": True, "amx": True}
    assert "BF16" in machine.openvino_cpu_precisions()
    monkeypatch.setenv("TTS_LAB_CPU_AS", "avx2")
    assert machine.cpu_features() == {"avx2": True, "avx512": False, "vnni": False, "bf16": False, "amx": False}
    assert machine.openvino_cpu_precisions() == ["FP32", "INT8"]
    with pytest.raises(machine.PrecisionUnavailable, match="no bf16"):
        machine.require_precision("openvino-cpu", "bf16")
    with pytest.raises(machine.PrecisionUnavailable, match="neither avx512_bf16 nor amx_bf16"):
        machine.require_precision("torch-cpu", "bf16")
    assert "amx_tile" in machine.recorded_flags(), "env.json keeps what the hardware has"
    monkeypatch.setenv("TTS_LAB_CPU_AS", "avx1")
    with pytest.raises(ValueError, match="TTS_LAB_CPU_AS='avx1'"):
        machine.cpu_features()


def test_env_records_the_kernel_caps_in_force(monkeypatch):
    """A cap on a library's vector kernels changes its timings, whoever set it: env.json says which were set."""
    from lib.harness import bench
    for key in machine.KERNEL_CAP_VARS:
        monkeypatch.delenv(key, raising=False)
    assert machine.kernel_caps() == {}
    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX2")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert bench.environment()["kernel_caps"] == {"ATEN_CPU_CAPABILITY": "avx2", "CT2_FORCE_CPU_ISA": "AVX2"}


def test_the_avx2_switch_caps_torchs_kernels_in_a_fresh_process():
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
    code = "import lib, torch; print(torch.backends.cpu.get_cpu_capability())"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "TTS_LAB_CPU_AS": "avx2"}, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out in ("AVX2", "DEFAULT"), out  # DEFAULT: a CPU without AVX2 at all


def test_a_contended_block_runs_again_under_require_quiet(monkeypatch):
    """Under require_quiet a watched block that a burst of stolen time contended runs again (the offline and
    streaming scenarios failed a whole notebook on one such burst); one that stays contended fails, naming the tries;
    without require_quiet it runs once and is only recorded."""
    from lib.harness import trackers
    loads = iter([_load(0.0, steal=0.2), _load(0.0, steal=0.2), _load(0.1)])

    class Fake:
        def __init__(self, threads):
            self.load = None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.load = next(loads)
    monkeypatch.setattr(machine, "LoadMonitor", Fake)
    monkeypatch.setattr(machine, "wait_for_quiet", lambda threads, timeout_s: None)
    monkeypatch.setenv("TTS_LAB_REQUIRE_QUIET", "5")
    calls = []
    watch = trackers.Watched(1)
    assert watch.run(lambda: calls.append(1) or len(calls)) == 3 and not watch.load.contended
    loads = iter([_load(0.0, steal=0.2)] * (trackers.QUIET_RETRIES + 1))
    with pytest.raises(machine.MachineBusy, match=f"{trackers.QUIET_RETRIES + 1} tries"):
        trackers.Watched(1).run(lambda: None)
    monkeypatch.delenv("TTS_LAB_REQUIRE_QUIET")
    loads = iter([_load(0.0, steal=0.2)])
    calls.clear()
    watch = trackers.Watched(1)
    watch.run(lambda: calls.append(1))
    assert calls == [1] and watch.load.contended


def test_a_machines_identity_tells_apart_what_one_model_name_covers(monkeypatch):
    """Issue 51 item 6: the estimate takes a run's time as it was only on the same kind of machine. /proc/cpuinfo's
    family/model tell a Zen 4 from a Zen 5 VM (both 'AMD EPYC', the same flags); acting as another class or capping
    kernels makes another machine; a record from before family/model were kept matches on the rest."""
    info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\n"
    monkeypatch.setattr(machine, "_cpuinfo", lambda: info + "\n" + info.replace(": 0", ": 1").replace("26", "99"))
    monkeypatch.setattr(machine, "real_cpu_flags", lambda: set(AMX))
    monkeypatch.setenv("TTS_LAB_CPU_AS", "native")
    for key in machine.KERNEL_CAP_VARS:
        monkeypatch.delenv(key, raising=False)
    assert machine.cpu_family_model() == "26/2", "the first processor's"
    here = machine.identity()
    assert here["cpu_model"] == "AMD EPYC" and here["kernel_caps"] == {}
    from lib.harness import bench
    assert machine.identity_of(bench.environment()) == here, "env.json keeps all of it"
    zen4 = {**here, "cpu_family_model": "25/17"}
    assert machine.same_machine(here, dict(here)) and not machine.same_machine(here, zen4)
    assert machine.same_machine(here, {**here, "cpu_family_model": None}), "an older record: the rest decides"
    assert not machine.same_machine(here, None) and not machine.same_machine(None, None)
    monkeypatch.setenv("TTS_LAB_CPU_AS", "avx2")
    assert not machine.same_machine(here, machine.identity()), "acting as an AVX2-only CPU is another machine"
    monkeypatch.setenv("TTS_LAB_CPU_AS", "native")
    monkeypatch.setenv("CT2_FORCE_CPU_ISA", "AVX2")
    assert not machine.same_machine(here, machine.identity()), "so is a kernel cap"
    monkeypatch.setattr(machine, "_cpuinfo", lambda: "processor\t: 0\nmodel name\t: Some CPU\n")
    assert machine.cpu_family_model() is None
