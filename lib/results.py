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

OUTPUTS = Path(os.environ.get("TTS_LAB_OUTPUTS", Path(__file__).resolve().parent.parent / "outputs"))
RECORDED = Path(os.environ.get("TTS_LAB_RECORDED", Path(__file__).resolve().parent.parent / "outputs" / "recorded"))

COLUMNS = ["model", "variant", "technique", "parent", "backend", "device", "threads", "metric", "value", "unit",
           "n", "status", "reason", "run_id"]

UNITS = {
    "rtf": "s/s", "rtf_ratio": "x", "latency_ms_p50": "ms", "latency_ms_p90": "ms", "latency_ms_p99": "ms",
    "ttfa_ms_p50": "ms", "ttfa_ms_p90": "ms", "throughput_xrt": "x", "peak_rss_mb": "MB", "peak_gpu_mb": "MB",
    "size_mb": "MB", "params": "count", "nonzero_params": "count", "trainable_params": "count",
    "dnsmos_p808": "MOS", "dnsmos_ovrl": "MOS", "dnsmos_sig": "MOS", "dnsmos_bak": "MOS", "wer": "fraction",
    "cer": "fraction", "pesq_wb": "MOS-LQO", "stoi": "fraction", "mcd_db": "dB", "f0_rmse_cents": "cents",
    "energy_j_per_audio_s": "J/s", "util_pct": "%", "train_s_per_step": "s", "gflop_per_audio_s": "GFLOP/s",
    "audio_s": "s", "size_mb_zip": "MB", "sparsity": "fraction", "quantized_layers": "count", "max_abs_diff": "amplitude", "human_mos": "MOS", "human_mos_ci95": "MOS", "length_diff_samples": "samples", "rms_diff_db": "dB",
}


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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n")


def notebook_dir(profile: str, notebook: str) -> Path:
    return OUTPUTS / profile / notebook


@dataclass
class ResultWriter:
    """Collects result rows for one notebook run and writes them atomically under outputs/<profile>/<notebook>/."""
    profile: str
    notebook: str
    run_id: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6])
    rows: list[dict] = field(default_factory=list)
    scalars: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return notebook_dir(self.profile, self.notebook)

    def add(self, *, model: str, variant: str, metric: str, value: float | None, technique: str = "baseline",
            parent: str = "", backend: str = "", device: str = "cpu", threads: int | None = None, n: int = 1,
            unit: str | None = None, status: str = "ok", reason: str = "") -> None:
        if value is not None:
            value = float(value)
            if not math.isfinite(value):
                status, reason, value = "failed", reason or "non-finite value", None
        self.rows.append(dict(model=model, variant=variant, technique=technique, parent=parent, backend=backend,
                              device=device, threads=threads, metric=metric, value=value,
                              unit=unit if unit is not None else UNITS.get(metric, ""), n=int(n),
                              status=status, reason=reason, run_id=self.run_id))

    def add_many(self, metrics: dict[str, float], *, n: int = 1, **keys) -> None:
        for metric, value in metrics.items():
            self.add(metric=metric, value=value, n=n, **keys)

    def absent(self, *, model: str, variant: str, metrics: list[str], reason: str, **keys) -> None:
        """Rows for something that could not run here: no value, status 'absent', and why."""
        for metric in metrics:
            self.add(model=model, variant=variant, metric=metric, value=None, status="absent", reason=reason, **keys)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)

    def write(self, env: dict | None = None, extra_tables: dict[str, pd.DataFrame] | None = None) -> Path:
        """Write results.csv, metrics.json (scalars) and env.json; extra tables go to <name>.csv."""
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "results.csv", self.frame().to_csv(index=False))
        atomic_write_json(self.dir / "metrics.json", {"run_id": self.run_id, "profile": self.profile,
                                                      "notebook": self.notebook, **self.scalars})
        if env is not None:
            atomic_write_json(self.dir / "env.json", {**env, "run_id": self.run_id, "profile": self.profile})
        for name, table in (extra_tables or {}).items():
            atomic_write_text(self.dir / f"{name}.csv", table.to_csv(index=False))
        return self.dir


def validate_frame(df: pd.DataFrame) -> None:
    """Raise ValueError if a results table breaks the schema."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks columns {missing}")
    ok = df["status"] == "ok"
    if df.loc[ok, "value"].isna().any():
        raise ValueError("rows with status 'ok' must have a value")
    if df.loc[~ok, "reason"].fillna("").eq("").any():
        raise ValueError("rows that are not 'ok' must say why in 'reason'")


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
    return pd.concat(frames, ignore_index=True)
