"""One results schema for every notebook: tidy rows in results.csv, scalars in metrics.json, env.json; atomic writes."""
from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib.core import env, verdict, worktime
from lib.core.pause import hold_for_process
from lib.core.subject import ADAPTATION_FACTS, Subject, Technique

OUTPUTS = Path(env.OUTPUTS.get() or Path(__file__).resolve().parents[2] / "outputs")
RECORDED = Path(env.RECORDED.get() or Path(__file__).resolve().parents[2] / "outputs" / "recorded")
LONG_RUN = "cpu-long"  # the device label of the long CPU runs' packs (outputs/recorded/training): `<run>@cpu-long`
UNMERGED = "-unmerged"  # the name suffix of an adapted voice timed with its adapter unmerged (its audio: merged's)

COLUMNS = ["model", "variant", "technique", "parent", "backend", "device", "threads", "method", "rank", "merged", "run",
           "metric", "value", "unit", "n", "status", "reason", "reference", "run_id"]
STATUSES = ("ok", "absent", "failed", "contended")


@dataclass(frozen=True)
class Metric:
    """One name of the metric vocabulary: its unit, which direction is better, and what it means."""
    name: str
    unit: str
    better: str  # "higher", "lower" or "" (neither: a count, a description)
    meaning: str


def _m(name, unit, better, meaning):
    return Metric(name, unit, better, meaning)


METRICS = {m.name: m for m in [
    # speed and memory (bench, measured in the harness)
    _m("rtf", "s/s", "lower", "synthesis seconds per audio second (median over sentences)"),
    _m("rtf_ratio", "x", "lower", "rtf over the rtf of the row's parent, timed in the same run"),
    _m("latency_ms_p50", "ms", "lower", "median latency per sentence"),
    _m("latency_ms_p90", "ms", "lower", "90th-percentile latency per sentence"),
    _m("latency_ms_p99", "ms", "lower", "99th-percentile latency per sentence"),
    _m("ttfa_ms_p50", "ms", "lower", "median time to first audio when streaming"),
    _m("ttfa_ms_p90", "ms", "lower", "90th-percentile time to first audio when streaming"),
    _m("ttfa_ms_p99", "ms", "lower", "99th-percentile time to first audio when streaming"),
    _m("cold_start_ms", "ms", "lower", "fresh process start to the first audio chunk of a sentence through piper's "
       "runtime (median of runs)"),
    _m("stream_rtf", "s/s", "lower", "whole-stream synthesis time per audio second when streaming"),
    _m("throughput_xrt", "x", "higher", "audio seconds per wall second, single stream"),
    _m("throughput_xrt_offline", "x", "higher", "audio seconds per wall second at the best offline batch size"),
    _m("best_batch", "count", "", "offline batch size with the highest throughput"),
    _m("peak_rss_mb", "MiB", "lower", "peak resident memory of a fresh process that loads and runs the variant"),
    _m("peak_gpu_mb", "MiB", "lower", "peak GPU memory allocated"),
    _m("train_peak_rss_mb", "MiB", "lower", "peak resident memory of the training process"),
    _m("util_pct", "%", "", "CPU utilisation during single-stream synthesis"),
    _m("gpu_util_pct", "%", "", "GPU utilisation during single-stream synthesis"),
    _m("gpu_util_pct_offline", "%", "", "GPU utilisation at the best offline batch"),
    _m("energy_j_per_audio_s", "J/s", "lower", "measured energy per second of audio (counter; absent where none)"),
    _m("train_s_per_step", "s", "lower", "wall seconds per training step"),
    # size and compute
    _m("size_mb", "MiB", "lower", "size on disk of the variant's files"),
    _m("size_mb_zip", "MiB", "lower", "size on disk once zip-compressed"),
    _m("adapter_size_mb", "MiB", "lower", "size on disk of what a method trained (PEFT adapter, or the full weights)"),
    _m("params", "count", "lower", "parameters"),
    _m("nonzero_params", "count", "lower", "non-zero parameters"),
    _m("trainable_params", "count", "lower", "parameters a method trains"),
    _m("trainable_pct_of_full", "%", "lower", "trainable parameters as a share of full fine-tuning's"),
    _m("sparsity", "fraction", "", "share of zero weights"),
    _m("quantized_layers", "count", "", "layers a quantizer converted"),
    _m("gflop_per_audio_s", "GFLOP/s", "lower", "floating-point operations per second of audio, whole voice"),
    _m("dec_gflop_per_audio_s", "GFLOP/s", "lower", "floating-point operations per second of audio, decoder"),
    _m("flow_gflop_per_audio_s", "GFLOP/s", "lower", "floating-point operations per second of audio, flow"),
    _m("enc_p_gflop_per_audio_s", "GFLOP/s", "lower", "floating-point operations per second of audio, text encoder"),
    _m("dp_gflop_per_audio_s", "GFLOP/s", "lower", "floating-point operations per second of audio, duration predictor"),
    # quality (metrics, judged on waveforms)
    _m("dnsmos_p808", "MOS", "higher", "DNSMOS P.808 predicted MOS"),
    _m("dnsmos_sig", "MOS", "higher", "DNSMOS P.835 speech signal quality"),
    _m("dnsmos_bak", "MOS", "higher", "DNSMOS P.835 background quality"),
    _m("dnsmos_ovrl", "MOS", "higher", "DNSMOS P.835 overall quality"),
    _m("distillmos", "MOS", "higher", "Distill-MOS predicted MOS, a second no-reference judge beside DNSMOS"),
    _m("wer", "fraction", "lower", "word error rate of the ASR transcript (Whisper's English normaliser)"),
    _m("cer", "fraction", "lower", "character error rate of the ASR transcript"),
    # the same judges on the varied judged set (a held-out family of lib.data.varied_text, notebook 04's varied_family)
    _m("wer_varied", "fraction", "lower", "word error rate on the varied judged set"),
    _m("dnsmos_p808_varied", "MOS", "higher", "DNSMOS P.808 on the varied judged set"),
    _m("dnsmos_sig_varied", "MOS", "higher", "DNSMOS P.835 signal quality on the varied judged set"),
    _m("distillmos_varied", "MOS", "higher", "Distill-MOS on the varied judged set"),
    _m("wer_confirm", "fraction", "lower", "word error rate on the confirmation set"),
    _m("dnsmos_p808_confirm", "MOS", "higher", "DNSMOS P.808 on the confirmation set"),
    _m("dnsmos_sig_confirm", "MOS", "higher", "DNSMOS P.835 signal quality on the confirmation set"),
    _m("distillmos_confirm", "MOS", "higher", "Distill-MOS on the confirmation set"),
    _m("pesq_wb", "MOS-LQO", "higher", "wide-band PESQ against the reference named in `reference`"),
    _m("chunk_pesq_wb", "MOS-LQO", "higher", "worst wide-band PESQ of streamed (chunked) against whole synthesis"),
    _m("stoi", "fraction", "higher", "short-time objective intelligibility against the reference"),
    _m("mcd_db", "dB", "lower",
       "mel-cepstral distortion against the reference as VERSA computes it (sp2mc mel-cepstra, DTW, c0 left out)"),
    _m("f0_rmse_cents", "cents", "lower", "log-F0 RMSE against the reference on voiced frames"),
    _m("f0_shift_semitones", "semitones", "", "mean F0 change against the reference (pYIN, frames voiced in both)"),
    _m("secs", "cosine", "higher", "speaker-embedding cosine similarity (resemblyzer GE2E) to the reference speaker's "
       "held-out clips, mean over clip pairs"),
    _m("secs_self", "cosine", "higher", "the reference speaker's own SECS across different sentences (the ceiling)"),
    _m("rms_diff_db", "dB", "lower", "error energy relative to the reference signal"),
    _m("chunk_snr_db", "dB", "higher", "worst SNR of streamed (chunked) against whole synthesis"),
    _m("max_abs_diff", "amplitude", "lower", "largest sample difference against the reference"),
    _m("length_diff_samples", "samples", "lower", "length difference against the reference"),
    _m("duration_mae_frames", "frames", "lower", "mean absolute difference of latent frames per phoneme against the "
       "reference voice, sampling noise off"),
    _m("length_change_pct", "%", "", "mean change of a sentence's length against the reference voice, noise off"),
    _m("human_mos", "MOS", "higher", "mean opinion score of screened raters (ACR 1-5)"),
    _m("human_mos_ci95", "MOS", "lower", "half-width of the 95 % confidence interval of human_mos"),
    # data and features
    _m("clips", "count", "", "clips in a corpus"),
    _m("audio_s", "s", "", "seconds of audio"),
    _m("words_per_s", "words/s", "", "speaking rate"),
    _m("f0_mean_hz", "Hz", "", "mean F0 of voiced frames"),
    _m("f0_std_semitones", "semitones", "", "F0 spread of voiced frames"),
    _m("energy_db_mean", "dB", "", "mean frame energy"),
    _m("phoneme_ms_mean", "ms", "", "mean phoneme duration"),
]}
UNITS = {name: m.unit for name, m in METRICS.items()}


RATIO_OR_REFERENCE = {"rtf_ratio", "pesq_wb", "stoi", "mcd_db", "f0_rmse_cents", "rms_diff_db", "max_abs_diff",
                      "length_diff_samples", "f0_shift_semitones", "secs", "secs_self",
                      "duration_mae_frames", "length_change_pct"}


class UnknownMetric(ValueError):
    """A result row names a metric the registry does not hold."""


def to_jsonable(obj: Any) -> Any:
    """numpy scalars/arrays, paths and NaN made JSON-safe (NaN becomes null)."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (voices, shards and packs are tens of MB to GB)."""
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_env(path: Path, env: dict) -> Path:
    """A run's environment (bench.environment and what the run adds) as JSON at `path`, its paths portable."""
    atomic_write_text(Path(path), portable(json.dumps(env, indent=1, default=str)))
    return Path(path)


def local(text: str) -> str:
    """A path `portable` wrote, as this machine reads it (`~` the home folder, `$TMPDIR` the temporary folder)."""
    import os
    import tempfile
    return os.path.expanduser(text.replace("$TMPDIR", tempfile.gettempdir(), 1) if text.startswith("$TMPDIR")
                              else text)


def portable_fields(fields: dict) -> dict:
    """`fields` (a run's config, say) with every path in its strings written as `portable` writes it."""
    return json.loads(portable(json.dumps(fields, default=str)))


def portable(text: str) -> str:
    """`text` with this machine's paths written as a reader's would be: the checkout as `.`, the home folder as `~`,
    the temporary folder as `$TMPDIR` (what is committed names no machine)."""
    import tempfile
    for path, name in ((Path.cwd(), "."), (Path.home(), "~"), (Path(tempfile.gettempdir()), "$TMPDIR")):
        text = text.replace(str(path) + "/", name + "/").replace(str(path), name)
    return text


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def read_json_object(path: Path, error: type[Exception] = ValueError, missing: str = "is missing",
                     what: str = "a JSON object") -> dict:
    """The JSON object in `path`; `error` naming the file where it is absent (`missing` says what that means), not
    valid JSON (cut short) or not `what`."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} {missing}")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise error(f"{path} is not valid JSON ({exc}): damaged or cut short") from None
    if not isinstance(raw, dict):
        raise error(f"{path} is not {what}")
    return raw


def notebook_dir(profile: str, notebook: str) -> Path:
    return OUTPUTS / profile / notebook


@dataclass
class ResultWriter:
    """Collects result rows for one notebook run and writes them atomically under outputs/<profile>/<notebook>/;
    `model` is the voice the notebook studies, what its subjects are about unless they name another."""
    profile: str
    notebook: str
    model: str = ""
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-")
                        + uuid.uuid4().hex[:6])
    rows: list[dict] = field(default_factory=list)
    scalars: dict = field(default_factory=dict)
    verdicts: list[verdict.Verdict] = field(default_factory=list)  # the targets it judged: verdicts.json

    def __post_init__(self):
        hold_for_process(f"notebook {self.notebook}")  # a notebook measures: long training runs wait while it lives

    @property
    def dir(self) -> Path:
        return notebook_dir(self.profile, self.notebook)

    def add(self, subject: Subject, metric: str, value: float | None, *, n: int = 1, unit: str | None = None,
            status: str = "ok", reason: str = "", reference: str = "") -> None:
        """One row about `subject`. The unit comes from the registry (METRICS); `unit`, if given, must agree with it,
        and any context (worst case, against what) belongs in `reference`."""
        if metric not in METRICS:
            raise UnknownMetric(f"metric {metric!r} is not in the registry (lib/core/results.py METRICS): "
                                f"add it there with its unit, direction and meaning, or use an existing name")
        if unit is not None and unit != METRICS[metric].unit:
            raise UnknownMetric(f"metric {metric!r} is in {METRICS[metric].unit!r}, not {unit!r}: "
                                f"put context in `reference`")
        if status not in STATUSES:
            raise ValueError(f"status {status!r}: use one of {STATUSES}")
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                status, reason, value = "failed", reason or "non-finite value", None
        s = subject
        self.rows.append(dict(**s.fields(), metric=metric, value=value,
                              unit=METRICS[metric].unit, n=int(n), status=status, reason=reason,
                              reference=reference or (s.parent if metric in RATIO_OR_REFERENCE else ""),
                              run_id=self.run_id))

    def add_many(self, subject: Subject, metrics: dict[str, float], **kw) -> None:
        for metric, value in metrics.items():
            self.add(subject, metric, value, **kw)

    def absent(self, subject: Subject, metrics: list[str], reason: str, **kw) -> None:
        """Rows for something that could not run here: no value, status 'absent', and why."""
        for metric in metrics:
            self.add(subject, metric, None, status="absent", reason=reason, **kw)

    def scoped(self, subject: Subject) -> "Scoped":
        """A writer of rows about `subject` alone."""
        return Scoped(self, subject)

    def about(self, variant: str, technique: Technique | str = Technique.BASELINE, **fields) -> "Scoped":
        """A writer of rows about `variant` of the notebook's model (`fields`: Subject's others, `model` included)."""
        return Scoped(self, Subject(fields.pop("model", self.model), variant, technique, **fields))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def run_record(self) -> dict:
        """How this run was made: the exact command (run_all.sh exports it; a notebook run by hand has none) and the
        parameters resolved from the notebook's defaults and the profile's file."""
        from lib.core import params  # deferred: pydantic and yaml, which the long runs (train_job) never load
        try:
            values = params.resolved(self.profile, self.notebook)
        except Exception as exc:  # a notebook outside lib's notebooks folder: say why, do not lose the results
            values = {"unresolved": f"{type(exc).__name__}: {exc}"}
        return {"command": env.COMMAND.get("(run by hand, not through run_all.sh)"),
                "parameters": values}

    def write(self, env: dict | None = None, extra_tables: dict[str, pd.DataFrame] | None = None) -> Path:
        """Write results.csv, metrics.json (scalars), verdicts.json and env.json; extra tables go to <name>.csv."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "results.csv", self.frame().to_csv(index=False))
        atomic_write_text(self.dir / verdict.FILE, verdict.to_json(self.verdicts))
        atomic_write_json(self.dir / "metrics.json", {"run_id": self.run_id, "profile": self.profile,
                                                      "notebook": self.notebook, **self.run_record(), **self.scalars,
                                                      # where this process's time went so far, for the estimate
                                                      "work_seconds": worktime.snapshot()})
        if env is not None:
            write_env(self.dir / "env.json", {**env, "run_id": self.run_id, "profile": self.profile})
        for name, table in (extra_tables or {}).items():
            atomic_write_text(self.dir / f"{name}.csv", table.to_csv(index=False))
        return self.dir


@dataclass(frozen=True)
class Scoped:
    """A ResultWriter bound to one subject: `add(metric, value)` writes a row about it (ResultWriter.scoped)."""
    writer: ResultWriter
    subject: Subject

    def add(self, metric: str, value: float | None, **kw) -> None:
        self.writer.add(self.subject, metric, value, **kw)

    def add_many(self, metrics: dict[str, float], **kw) -> None:
        self.writer.add_many(self.subject, metrics, **kw)

    def absent(self, metrics: list[str], reason: str, **kw) -> None:
        self.writer.absent(self.subject, metrics, reason, **kw)

    def but(self, **changes) -> "Scoped":
        """The same writer about a changed subject (Subject.but)."""
        return Scoped(self.writer, self.subject.but(**changes))


def validate_frame(df: pd.DataFrame) -> None:
    """Raise ValueError if a results table breaks the schema."""
    if "reference" not in df.columns:  # files written before the column existed
        df["reference"] = ""
    for c in ADAPTATION_FACTS:  # likewise before an adapted voice's rows said how it was made (issue 70)
        if c not in df.columns:
            df[c] = np.nan
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}")
    ok = df["status"] == "ok"
    if df.loc[ok, "value"].isna().any():
        raise ValueError("rows with status 'ok' must have a value")
    if df.loc[~ok, "reason"].fillna("").eq("").any():
        raise ValueError("rows that are not 'ok' must say why in 'reason'")
    unknown = sorted(set(df["metric"]) - set(METRICS))
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the registry (lib/core/results.py METRICS)")
    for label in set(df["technique"].dropna()):
        Technique.of(label)  # a ValueError names a label the enum does not hold


# A streamed utterance's worst chunk against its whole synthesis: faithful engines hold 45-52 dB, an int8 one whose
# chunks quantise their own activations 27 dB; below 20 dB the chunks are wrong (the H100's fp16 latent graphs: 1.2)
MIN_CHUNK_SNR_DB = 20.0
STREAMING_TIMINGS = ("ttfa_ms_p50", "ttfa_ms_p90", "ttfa_ms_p99", "stream_rtf")


def fidelity_failure(chunk_snr_db: float | None) -> str:
    """The reason a streaming timing stands for nothing ('' where the chunks are faithful): MLPerf's rule, a
    performance figure counts only where the accuracy check passed."""
    if chunk_snr_db is None or not math.isfinite(chunk_snr_db) or chunk_snr_db >= MIN_CHUNK_SNR_DB:
        return ""
    return (f"failed fidelity: its worst streamed chunk is {chunk_snr_db:.1f} dB SNR against its whole synthesis "
            f"(bound {MIN_CHUNK_SNR_DB:.0f} dB)")


def gate_fidelity(df: pd.DataFrame) -> pd.DataFrame:
    """Result rows with every streaming timing of an engine whose chunk fidelity failed (chunk_snr_db below the
    bound, same notebook, variant and back-end) turned into a 'failed' row saying why: for runs recorded before the
    harness gated them as it writes."""
    if df.empty or "chunk_snr_db" not in set(df["metric"]):
        return df
    keys = [k for k in ("notebook", "model", "variant", "backend", "device") if k in df]
    snr = df[(df["metric"] == "chunk_snr_db") & (df["status"] == "ok")].groupby(keys)["value"].min()
    bad = {k: fidelity_failure(v) for k, v in snr.items() if fidelity_failure(v)}
    if not bad:
        return df
    df = df.copy()
    df["reason"] = df["reason"].astype(object)
    row_keys = list(zip(*(df[k] for k in keys))) if len(keys) > 1 else list(df[keys[0]])
    hit = [k in bad and m in STREAMING_TIMINGS and st == "ok"
           for k, m, st in zip(row_keys, df["metric"], df["status"])]
    hit = pd.Series(hit, index=df.index)
    df.loc[hit, "reason"] = [bad[k] for k, h in zip(row_keys, hit) if h]
    df.loc[hit, "status"], df.loc[hit, "value"] = "failed", np.nan
    return df


def load_results(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    """All notebooks' results.csv for a profile, and the committed runs of other machines (outputs/recorded/**,
    whatever TTS_LAB_OUTPUTS is), one frame with a 'notebook' column."""
    root = Path(outputs or OUTPUTS)
    frames = []
    for csv in sorted((root / profile).glob("*/results.csv")):
        df = pd.read_csv(csv)
        df["notebook"] = csv.parent.name
        frames.append(df)
    for rec in dict.fromkeys([root / "recorded", RECORDED]):
        for csv in sorted(rec.glob("**/results.csv")):
            df = pd.read_csv(csv)
            df["notebook"] = "recorded/" + str(csv.parent.relative_to(rec))
            frames.append(df)
    if not frames:
        return pd.DataFrame(columns=COLUMNS + ["notebook"])
    return gate_fidelity(pd.concat(frames, ignore_index=True))
