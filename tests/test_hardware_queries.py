"""The query lists the GPU run reads (`tts-lab train bundle --queries PROFILE` writes them into the bundle, issue 27):
the two keys `lib.jobs.device_run` reads, phoneme ids of the voice's own vocabulary (each list opens with BOS and
closes with EOS), as many lists as the profile's parameters of notebook 05 give, and the very lists notebook 05 speaks.
And the engines and students it runs: specs and part names read once from its parameters (issue 38), rows as labelled
before."""
import json
from pathlib import Path

import pytest

from lib.core import machine, params, text
from lib.core.results import ResultWriter
from lib.harness import queries
from lib.runtimes import backends
from lib.studies import hardware
from lib.voices import synth as voices

ROOT = Path(__file__).resolve().parent.parent


def test_queries_file_follows_the_profile(tmp_path):
    out = tmp_path / "queries.json"
    queries.write_queries(out, "smoke")
    q = json.loads(out.read_text(encoding="utf-8"))
    assert set(q) == {"queries", "ttfa_queries"}
    p = params.resolved("smoke", hardware.NOTEBOOK)
    assert len(q["queries"]) == len(text.harvard_sentences(p["eval_lists"])) > 0
    streaming = [s for s in text.harvard_sentences() if len(s.text.split()) == p["ttfa_words"]]
    assert len(q["ttfa_queries"]) == len(streaming[: p["ttfa_limit"] or None]) > 0
    frontend = voices.PiperFrontend(voices.piper_paths()[1])
    ids_of = frontend.config.phoneme_id_map
    vocab = {i for ids in ids_of.values() for i in ids}
    for ids in q["queries"] + q["ttfa_queries"]:
        assert len(ids) > 2 and all(type(i) is int and i in vocab for i in ids)
        assert ids[0] == ids_of["^"][0] and ids[-1] == ids_of["$"][0]
    built = hardware.query_set(frontend, p["eval_lists"], p["ttfa_words"], p["ttfa_limit"]).as_json()
    assert q == built, "the command writes other lists than notebook 05 speaks on this profile"


def test_the_gpu_run_takes_a_profiles_suite_when_asked_and_keeps_its_own_otherwise():
    """`device_run --params PROFILE` times the suite that profile's notebook-05 parameters give (issue 27: the GPU
    run read none of them); without it, the GPU suite. Keys of the notebook that are no suite field are ignored."""
    from lib.harness.scenarios import SuiteConfig
    from lib.jobs import device_run
    p = params.resolved("smoke", hardware.NOTEBOOK)
    cfg = SuiteConfig.from_params(p)
    assert cfg.batch_sizes == tuple(p["batch_sizes"]) and cfg.min_queries == p["min_queries"]
    assert (cfg.warmup, cfg.offline_seconds, cfg.fidelity_queries) == (p["warmup"], p["offline_seconds"],
                                                                        p["fidelity_queries"])
    assert cfg != device_run.GPU_SUITE and max(device_run.GPU_SUITE.batch_sizes) > max(cfg.batch_sizes)


def test_engines_that_cannot_run_leave_the_rows_their_labels_did():
    """An engine whose probe is not runnable is skipped (the probe's rows are its), one whose precision this CPU
    lacks is an absent row with its back-end, one that runs elsewhere a failed row: each row's variant and backend
    the strings the labels gave before engines were specs; nothing is built twice and nothing ran."""
    labels = ["torch-cpu-bf16", "ort-cpu-fp32+openvino-bf16-window", "openvino-npu-f16", "ort-cpu-fp32"]
    specs = hardware.engine_specs(labels)
    assert [s.label for s in specs] == labels
    probes = [backends.Probe("openvino-npu", "f16", "npu", backends.PREPARE_ONLY, "no NPU here"),
              backends.Probe("ort-cpu", "fp32", "cpu", backends.RUNNABLE)]
    asked = []

    def build(spec):
        asked.append(spec)
        if "bf16" in (spec.precision, spec.window_precision):
            raise machine.PrecisionUnavailable(f"no bf16 for {spec.label}")
        raise backends.BackendMismatch(f"{spec.label} ran elsewhere")
    writer = ResultWriter("p", hardware.NOTEBOOK, "m")
    runs = hardware.run_engines(specs, probes, build, None, None, writer, threads=1)
    assert asked == [specs[0], specs[1], specs[3]] and not runs.ran and not runs.specs
    rows = writer.frame().drop_duplicates("variant").set_index("variant")
    assert list(rows.index) == ["torch-cpu-bf16", "ort-cpu-fp32+openvino-bf16-window", "ort-cpu-fp32"]
    assert list(rows["status"]) == ["absent", "absent", "failed"]
    assert list(rows["backend"]) == ["torch-cpu", "ort-cpu", ""]
    assert hardware.REFERENCE == hardware.REFERENCE_ENGINE.label == "torch-cpu-fp32"


def test_a_bad_engine_or_student_parameter_is_named():
    with pytest.raises(ValueError, match="'ort-cpu-fp32\\+openvino-bf16'.*the forms are"):
        hardware.engine_specs(["ort-cpu-fp32", "ort-cpu-fp32+openvino-bf16"])
    assert hardware.student_parts("istft256x6+flow96+fe96") == ("istft256x6", "flow96", "fe96")
    assert hardware.student_parts("dec64-chain") == ("dec64-chain",)
    with pytest.raises(ValueError, match="'dec64\\+\\+fe96'"):
        hardware.student_parts("dec64++fe96")
    with pytest.raises(ValueError, match="'istft192x6-regress@cpu-long'.*long_runs"):  # a long pack's voice, no folder
        hardware.student_parts("istft192x6-regress@cpu-long")
