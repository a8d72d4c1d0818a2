"""Notebook 05's steps: the queries every engine speaks, the export for accelerators and its int8 window decoder,
every CPU engine and notebook 04's students through the harness's scenarios, cold start, the same audio on every
engine, the back-end table, the verdicts on the targets, and the values its closing findings state. The queries
live in lib.harness.queries, which the GPU run's bundle writes too (`tts-lab train bundle --queries PROFILE`)."""
from __future__ import annotations

import logging
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from lib.core import audio as lab_audio, machine, onnx_session
from lib.core.results import ResultWriter, gate_fidelity
from lib.core.subject import Technique
from lib.core.verdict import Verdict
from lib.core.text import Sentence
from lib.harness import bench, evaluate, metrics, scenarios
from lib.harness.queries import NOTEBOOK, QuerySet, query_set  # noqa: F401 (notebook 05 calls them here)
from lib.harness.judges import Judges, PendingJudgement
from lib.harness.trackers import Watched
from lib.runtimes import backends, bench_engines as eng
from lib.runtimes.engine_spec import EngineSpec
from lib.techniques import packs
from lib.techniques import distill, export
from lib.voices import artefacts, piper_torch

_LOGGER = logging.getLogger(__name__)

ABSENT_METRICS = ["latency_ms_p90", "ttfa_ms_p90", "throughput_xrt_offline"]  # what an engine that cannot run lacks
REFERENCE_ENGINE = EngineSpec("torch-cpu", "fp32")  # the engine every other engine's audio is compared with
REFERENCE = REFERENCE_ENGINE.label  # its label: the parent of the parity rows
TEACHER_FILE = "teacher (shipped)"  # the shipped voice's name among the cold-start files
CALIBRATION_ENGINE = EngineSpec("ort-cpu", "fp32")  # the engine whose latent windows calibrate the int8 window decoder
TABLE_METRICS = ["latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "rtf", "throughput_xrt_offline", "best_batch",
                 "ttfa_ms_p50", "ttfa_ms_p90", "ttfa_ms_p99", "chunk_snr_db", "chunk_pesq_wb", "peak_gpu_mb",
                 "util_pct", "gpu_util_pct_offline", "energy_j_per_audio_s"]
KOKORO_COLUMNS = ["rtf", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "size_mb", "pesq_wb", "mcd_db",
                  "f0_rmse_cents"]


# --- set-up, probes, export ------------------------------------------------------------------------------------



def record_probes(probes: Sequence, writer: ResultWriter) -> pd.DataFrame:
    """Absent rows (with the probe's status and reason) for every back-end that is not runnable here; the probe
    table."""
    for p in probes:
        if p.status != backends.RUNNABLE:
            writer.about(p.label, Technique.of_precision(p.precision), backend=p.backend, device=p.device).absent(
                ABSENT_METRICS, f"{p.status}: {p.reason}")
    return backends.probes_frame(probes)


def engine_settings(torch_model, sample_rate: int) -> dict:
    """The latent's channels, the decoder's hop and the sample rate an ONNX engine of this voice needs."""
    return dict(channels=torch_model.hparams["inter_channels"], hop=piper_torch.hop_length(torch_model),
                sample_rate=sample_rate)


def engine_technique(spec: EngineSpec) -> Technique:
    """The technique of an engine's rows, by the precision it computes in (its own or its window decoder's): what
    the report reads the CPU feature it relies on from."""
    return Technique.of_precision("bf16" if "bf16" in (spec.precision, spec.window_precision) else spec.precision)


def engine_specs(labels: Sequence[str]) -> list[EngineSpec]:
    """The engines a notebook parameter names by label, read once here; ValueError names a bad label and the forms."""
    return [EngineSpec.parse(label) for label in labels]


def make_engine(spec: EngineSpec, model, paths: dict, *, settings: dict, threads: int) -> eng.Engine:
    """The engine `spec` names: on torch-cpu the PyTorch module, else the noise-as-input ONNX files `paths` on ONNX
    Runtime or OpenVINO, with the window decoder compiled by OpenVINO at `spec.window_precision` where it has one."""
    if spec.backend == "torch-cpu":
        return eng.TorchEngine(model, "cpu", spec.precision, threads=threads)
    return eng.OnnxEngine(paths, spec.backend, spec.precision, threads=threads,
                          decoder_precision=spec.window_precision, **settings)


def engine_builder(model, paths: dict, *, settings: dict, threads: int) -> Callable[[EngineSpec], eng.Engine]:
    """`make_engine` for this voice, each spec built once: the engine that calibrates the int8 decoder is the one
    timed later, and the listening clip streams through the engine that ran."""
    built: dict[EngineSpec, eng.Engine] = {}

    def build(spec: EngineSpec) -> eng.Engine:
        if spec not in built:
            built[spec] = make_engine(spec, model, paths, settings=settings, threads=threads)
        return built[spec]
    return build


def int8_window_decoder(engine: eng.Engine, paths: dict, work: Path, queries: Sequence, writer: ResultWriter, *,
                        chunk_frames: int, context_frames: int, calibration_queries: int,
                        check_queries: int) -> tuple[pd.DataFrame, float, int]:
    """Static QDQ int8 of the window decoder, calibrated on the latent windows of the last `calibration_queries`
    queries (added to `paths` as 'decoder_int8'); its error energy relative to the f32 window decoder (median over
    the windows of the first `check_queries` queries) and its size as rows; the NPU readiness of every file.
    Returns (readiness table, error energy in dB, windows checked)."""
    calibration = eng.latent_windows(engine, queries[-calibration_queries:], chunk_frames, context_frames)
    dst = work / f"decoder_{chunk_frames + 2 * context_frames}_qdq.onnx"
    paths["decoder_int8"] = export.quantize_window_decoder(paths["decoder"], dst, calibration)
    readiness = pd.DataFrame([{**export.npu_readiness(p), "MB": bench.size_mb(p)} for p in paths.values()])
    check = eng.latent_windows(engine, queries[:check_queries], chunk_frames, context_frames)
    f32, i8 = (onnx_session.session(paths[k], what="window decoder") for k in ("decoder", "decoder_int8"))
    snr = float(np.median([lab_audio.snr_db(f32.run(None, {"z": z})[0].ravel(), i8.run(None, {"z": z})[0].ravel())
                           for z in check]))
    out = writer.about("decoder-window-qdq-int8", Technique.NPU_PREPARATION, backend="ort-cpu")
    out.add("rms_diff_db", -snr, n=len(check), reference="f32 window decoder")
    out.add("size_mb", bench.size_mb(paths["decoder_int8"]))
    return readiness, -snr, len(check)


# --- the engines through the scenarios ---------------------------------------------------------------------------

@dataclass
class Runs:
    """What the engines that ran left: throughput-by-batch rows, the back-end and precision each really ran on, its
    backend, and (the teacher's engines) its clips of the first streaming queries and its spec, by label."""
    throughput: list = field(default_factory=list)
    ran: dict = field(default_factory=dict)
    backend_of: dict = field(default_factory=dict)
    device_of: dict = field(default_factory=dict)
    clips: dict = field(default_factory=dict)
    specs: dict = field(default_factory=dict)

    def add(self, engine: eng.Engine, rows: list) -> None:
        self.throughput += rows
        self.ran[engine.label], self.backend_of[engine.label] = engine.effective, engine.backend
        self.device_of[engine.label] = engine.device
        _LOGGER.info("%s: ran on %s", engine.label, engine.effective)


def run_engines(specs: Sequence[EngineSpec], probes: Sequence, build: Callable[[EngineSpec], eng.Engine], qs: QuerySet,
                cfg: scenarios.SuiteConfig, writer: ResultWriter, *, threads: int) -> Runs:
    """Each engine of `specs` (built by `build`) through the whole suite on the same queries; its clips of the first
    `cfg.fidelity_queries` streaming queries kept for the parity check. An engine whose back-end and precision the
    probe found not runnable is skipped (its rows are the probe's), one whose precision this CPU lacks is an absent
    row, one that runs elsewhere than asked is a failed row."""
    by_engine, runs = {(p.backend, p.precision): p for p in probes}, Runs()
    for spec in specs:
        label, probe = spec.label, by_engine.get((spec.backend, spec.precision))
        out = writer.about(label, engine_technique(spec), backend=spec.backend)
        if probe is not None and probe.status != backends.RUNNABLE:
            _LOGGER.info("%s: skipped, %s: %s", label, probe.status, probe.reason)
            continue
        try:
            engine = build(spec)
        except machine.PrecisionUnavailable as exc:
            out.absent(ABSENT_METRICS, str(exc))
            _LOGGER.info("%s: absent, %s", label, exc)
            continue
        except backends.BackendMismatch as exc:
            out.but(backend="").add("latency_ms_p90", None, status="failed", reason=str(exc))
            _LOGGER.info("%s: refused, %s", label, exc)
            continue
        runs.add(engine, scenarios.run_suite(engine, qs.queries, qs.ttfa_queries, cfg, writer, threads=threads,
                                             technique=engine_technique(spec)))
        runs.clips[label] = [engine.synth([ids], seed=i)[0]
                             for i, ids in enumerate(qs.ttfa_queries[:cfg.fidelity_queries])]
        runs.specs[label] = spec
    return runs


def student_parts(name: str) -> tuple[str, ...]:
    """The part folders a student's name in a notebook parameter lists, joined by '+' (read once here); ValueError
    names a name with an empty part, or with an '@' (a recorded voice's name, which no folder of notebook 04 has)."""
    parts = tuple(name.split("+"))
    if not all(parts) or any("@" in p for p in parts):
        raise ValueError(f"student {name!r}: its parts are folders of notebook 04's students joined by '+' "
                         f"(e.g. 'istft256x6+flow96+fe96'), none of them empty, or the name of a voice of `long_runs`")
    return parts


@dataclass(frozen=True)
class Student:
    """A student voice timed here: its name in the `students` parameter (the '<student>:' of its rows), the voice,
    and the folder of notebook 04's `artefacts/onnx` that holds it for piper's runtime (the cold start)."""
    name: str
    voice: object
    folder: str


def load_students(names: Sequence[str], teacher, student_dir: Path, long_runs: Sequence[str], writer: ResultWriter, *,
                  profile: str) -> list[Student]:
    """The student voices `names` names: a voice of the long runs' packs `long_runs` by the name notebook 04 judges
    it under (packs.long_run_voices, e.g. 'istft192x6-regress+flow96-long+fe96-long@cpu-long'), else the
    parts notebook 04 saved in `student_dir`, joined by '+' (student_parts). A student not saved there, or made of a
    pack that cannot be loaded, is an absent row that says why; ValueError names a student that is neither, with
    the names the long packs give."""
    long, broken, specs = packs.long_run_voices(teacher, long_runs)
    out = []
    for name in names:
        if name in long:
            out.append(Student(name, long[name], specs[name].folder))
            continue
        try:
            parts = student_parts(name)
        except ValueError as exc:
            if not broken:
                raise ValueError(f"{exc}; the packs of long_runs {list(long_runs)} give {sorted(long)}") from None
            _absent_student(writer, name, "; ".join(broken.values()))
            continue
        try:
            out.append(Student(name, distill.student_voice(teacher, student_dir, parts), name))
        except (artefacts.ArtefactError, ValueError) as exc:
            _absent_student(writer, name, f"{exc} (notebook 04 on profile {profile!r} saves it)")
    return out


def _absent_student(writer: ResultWriter, name: str, reason: str) -> None:
    writer.about(name, Technique.DISTILLATION, backend="ort-cpu").absent(ABSENT_METRICS, reason)
    _LOGGER.info("%s: absent, %s", name, reason)


def run_students(students: Sequence[Student], specs: Sequence[EngineSpec], work: Path, qs: QuerySet,
                 cfg: scenarios.SuiteConfig, writer: ResultWriter, runs: Runs, *, settings: dict,
                 threads: int) -> None:
    """Each student voice (load_students), exported with the noise as an input and `cfg.context_frames` of
    look-ahead, through the whole suite on each engine of `specs`, as '<student>:<engine>'."""
    for student in students:
        paths = export.export_noise_input(student.voice, work / "students" / student.folder, cfg.chunk_frames,
                                          cfg.context_frames)
        for spec in specs:
            engine = make_engine(spec, student.voice, paths, settings=settings, threads=threads)
            engine.label = f"{student.name}:{engine.label}"
            runs.add(engine, scenarios.run_suite(engine, qs.queries, qs.ttfa_queries, cfg, writer, threads=threads,
                                                 technique=Technique.DISTILLATION))


def cold_start_files(model_path: Path, onnx_dir: Path, students: Sequence[Student]) -> dict[str, Path]:
    """The shipped voice and every student voice notebook 04 exported for piper's runtime under `onnx_dir`."""
    return {TEACHER_FILE: model_path, **{s.name: onnx_dir / s.folder / "model.onnx" for s in students
                                                 if (onnx_dir / s.folder / "model.onnx").exists()}}


def cold_starts(files: dict[str, Path], sentence: str, writer: ResultWriter, *, runs: int) -> pd.DataFrame:
    """Each voice file from a fresh process to the first audio of `sentence` (median of `runs`), with the machine's
    load beside it (a contended run is marked so); one row per voice."""
    rows = []
    for name, path in files.items():
        with Watched(os.cpu_count() or 1).monitoring() as watch:
            r = scenarios.cold_start(path, sentence, repeats=runs)
        busy = watch.status()
        writer.about(name, Technique.BASELINE if name == TEACHER_FILE else Technique.DISTILLATION,
                     backend="ort-cpu").add("cold_start_ms", r["cold_start_ms"], n=r["n"], **busy)
        rows.append({"voice": name, "file MiB": bench.size_mb(path), **r, "status": busy.get("status", "ok")})
    return pd.DataFrame(rows)


# --- the same audio everywhere --------------------------------------------------------------------------------------

def recorded_clips(recorded_dir: Path, device: str) -> dict[str, list[np.ndarray]]:
    """The recorded GPU run's clips (clips.npz: each engine's clips concatenated, with their lengths), as
    '<engine> (<device>)'; none when the run recorded none."""
    if not (recorded_dir / "clips.npz").exists():
        return {}
    npz, out = np.load(recorded_dir / "clips.npz"), {}
    for key in [k for k in npz.files if not k.endswith("__lengths")]:
        bounds = np.cumsum(np.r_[0, npz[f"{key}__lengths"]])
        out[f"{key} ({device})"] = [npz[key][a:b].astype(np.float32) for a, b in zip(bounds[:-1], bounds[1:])]
    return out


def reference_clips(runs: Runs, build: Callable[[EngineSpec], eng.Engine], qs: QuerySet,
                    queries: int) -> list[np.ndarray]:
    """The reference engine's clips of the first `queries` streaming queries: those its run kept, else spoken now."""
    if REFERENCE in runs.clips:
        return runs.clips[REFERENCE]
    engine = build(REFERENCE_ENGINE)
    return [engine.synth([ids], seed=i)[0] for i, ids in enumerate(qs.ttfa_queries[:queries])]


def start_judges(judges: Judges, sample_rate: int) -> PendingJudgement:
    """Start the judge processes now, each on its own half second of silence (loading Whisper and DNSMOS takes
    seconds, and a pool starts a process per waiting clip): call it where nothing is timed (the export), so that
    they are ready, and idle, when the clips come. The silences go to a temporary folder of their own, removed when
    the process ends, so no artefact folder ever holds them; they are cached nowhere."""
    folder = tempfile.TemporaryDirectory(prefix="tts-lab-judge-warmup-")
    _WARMUP_FOLDERS.append(folder)  # kept until the process ends: the judge processes read the files later
    silences = {f"silence{k}": lab_audio.Audio(np.zeros(sample_rate // 2 + k, dtype=np.float32), sample_rate)
                for k in range(judges.workers)}
    return PendingJudgement(silences, {k: "silence" for k in silences}, dataclasses.replace(judges, cache_path=None),
                            Path(folder.name))


_WARMUP_FOLDERS: list[tempfile.TemporaryDirectory] = []


def parity(clips: dict[str, list], recorded: dict[str, list], reference: list, sentences: Sequence[Sentence],
           judges: Judges, writer: ResultWriter, *, backend_of: dict, device_of: dict, sample_rate: int, queries: int,
           judge_recorded: bool = True) -> pd.DataFrame:
    """Each engine's clips of the first `queries` streaming sentences, this CPU's (`clips`) and the recorded GPU
    run's (`recorded`), against the `reference` engine's, same query and noise: worst SNR and PESQ-WB, whether
    lengths agree; and each engine's clips judged on their own (DNSMOS P.808, WER), peak-normalised, all in one batch
    for the judge processes (the recorded run's only with `judge_recorded`). Rows for every engine but the reference
    (an engine not timed here is on CUDA: the recorded run). The recorded clips must be of the same streaming
    queries: the GPU run reads the lists `tts-lab train bundle --queries` writes. Returns one row per engine."""
    def about(label):
        # an engine not timed here ran on CUDA: the recorded GPU run
        return writer.about(label, Technique.HARDWARE_PARITY, parent=REFERENCE,
                            backend=backend_of.get(label, "torch-cuda"), device=device_of.get(label, "cuda"))
    texts, heard, rows = {}, {}, []
    judged = {**clips, **(recorded if judge_recorded else {})}
    clips = {**clips, **recorded}
    for e, (label, outs) in enumerate(clips.items()):
        for s, o in zip(sentences, outs[:queries] if label in judged else []):
            texts[f"{e}-{s.id}"] = s.text
            heard[f"{e}-{s.id}"] = lab_audio.Audio(np.clip(o, -1, 1) / max(np.abs(o).max(), 1e-8), sample_rate)
    with tempfile.TemporaryDirectory() as tmp:
        pending = PendingJudgement(heard, texts, judges, Path(tmp))  # the judges work while the PESQ is computed
        for label, outs in clips.items():
            pairs = list(zip(reference, outs[:queries]))
            snr = [lab_audio.snr_db(r, o) for r, o in pairs]
            pesq = [metrics.pesq_wb(r, o, sample_rate) for r, o in pairs]
            rows.append({"engine": label, "queries": len(pairs), "snr_db_min": min(snr), "pesq_wb_min": min(pesq),
                         "length_equal": all(r.size == o.size for r, o in pairs)})
            if label != REFERENCE:
                worst = dict(reference=f"worst query vs {REFERENCE}", n=len(pairs))
                about(label).add("pesq_wb", min(pesq), **worst)
                about(label).add("rms_diff_db", -min(snr), **worst)
        per = pending.result()
    for e, label in [(e, label) for e, label in enumerate(clips) if label in judged]:
        mine = per[per["id"].str.startswith(f"{e}-")]
        agg = evaluate.aggregate(mine, texts)
        rows[e].update({k: agg.get(k) for k in ("dnsmos_p808", "wer")})
        about(label).add_many({k: agg[k] for k in ("dnsmos_p808", "wer") if k in agg}, n=len(mine))
    return pd.DataFrame(rows)


# --- the back-end table, the plot's data, the verdicts -------------------------------------------------------------

def backend_table(here: pd.DataFrame, recorded_dir: Path, device: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """This run's rows and the recorded GPU run's side by side: (the ok rows of TABLE_METRICS by (source, variant),
    one row per (source, variant) that is absent or failed, with the reason)."""
    here = here.assign(source="cpu (this machine)")
    path = recorded_dir / "results.csv"
    rec = gate_fidelity(pd.read_csv(path)).assign(source=device) if path.exists() else here.iloc[:0]
    both = pd.concat([here, rec], ignore_index=True)
    ok = both[(both["status"] == "ok") & both["metric"].isin(TABLE_METRICS)]
    table = ok.pivot_table(index=["source", "variant"], columns="metric", values="value").reindex(columns=TABLE_METRICS)
    absent = (both[both["status"] != "ok"].drop_duplicates(["source", "variant"])
              [["source", "variant", "status", "reason"]])
    return table.dropna(how="all", axis=1), absent


def throughput_curves(throughput: pd.DataFrame, recorded_dir: Path, device: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Offline throughput by batch size, per (variant, source): this CPU's ('cpu') and the recorded GPU run's."""
    path = recorded_dir / "throughput_by_batch.csv"
    frames = [(throughput, "cpu"), (pd.read_csv(path) if path.exists() else None, device)]
    return {(label, source): g for df, source in frames if df is not None and not df.empty
            for label, g in df[df["status"] == "ok"].groupby("variant")}


def ttfa_frame(table: pd.DataFrame) -> pd.DataFrame:
    """TTFA p50/p90/p99 of every engine in the back-end table, indexed '<variant> (<source>)'."""
    tt = table[[c for c in ("ttfa_ms_p50", "ttfa_ms_p90", "ttfa_ms_p99") if c in table]].copy()
    tt.index = [f"{v} ({s.split(' ')[0]})" for s, v in tt.index]
    return tt


# --- record and findings ---------------------------------------------------------------------------------------------

def record(writer: ResultWriter, env: dict, *, qs: QuerySet, runs: Runs, verdicts: list[Verdict], tables: dict,
           **scalars) -> Path:
    """metrics.json (query counts, the engines that ran and where, the verdicts' sentences as targets and headline,
    `scalars`), verdicts.json, results.csv, env.json and `tables` (with the throughput by batch) beside them."""
    said = [v.sentence for v in verdicts]
    writer.verdicts = list(verdicts)
    writer.scalars.update(queries=len(qs.queries), ttfa_queries=len(qs.ttfa_queries), **scalars, engines_ran=runs.ran,
                          targets=said, headline=said)
    return writer.write(env, extra_tables={"throughput_by_batch": pd.DataFrame(runs.throughput), **tables})


def findings_facts(probe_table: pd.DataFrame, parity_table: pd.DataFrame, cold: pd.DataFrame,
                   kokoro: pd.DataFrame) -> dict:
    """What the closing findings state: back-ends runnable of the registry, the engine farthest from the reference
    (worst PESQ, as a dict; None when only the reference ran), the cold starts that ran unhindered, Kokoro's RTF by
    engine."""
    others = parity_table[parity_table["engine"] != REFERENCE].sort_values("pesq_wb_min")
    return {"runnable": int((probe_table["status"] == backends.RUNNABLE).sum()), "registry": len(probe_table),
            "farthest": others.iloc[0].to_dict() if len(others) else None,
            "cold": cold[cold["status"] == "ok"].to_dict("records"),
            "kokoro_rtf": dict(zip(kokoro["engine"], kokoro["rtf"])) if len(kokoro) else {}}
