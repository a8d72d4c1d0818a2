"""What the report notebook shows, built only from files under outputs/: which notebooks ran, the tables of their
rows by group, the CPU each ran on, provenance and headlines. The pick is report.recommend, clips and figures
report.media, plots report.plots."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lib.core.results import OUTPUTS, load_results

REPORT_NOTEBOOK = "90_report"
NOTEBOOK_TITLES = {
    "00_data_and_features": "Data and audio features",
    "01_baselines": "Baselines",
    "02_lora_qlora": "LoRA, QLoRA and full fine-tuning",
    "03_pruning_quantization": "Pruning and quantization",
    "04_distillation": "Distillation",
    "05_hardware_benchmark": "Hardware back-ends",
    "06_listening_test": "Listening test",
}


def notebook_status(profile: str, notebooks_dir: Path, outputs: Path | None = None) -> pd.DataFrame:
    """For every numbered notebook: whether run_all recorded it as ok or failed, and whether results exist."""
    root = Path(outputs or OUTPUTS) / profile
    status_file = root / "run_status.json"
    recorded = json.loads(status_file.read_text()) if status_file.exists() else {}
    rows = []
    for nb in sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb")):
        if nb.stem == REPORT_NOTEBOOK:
            continue
        res = root / nb.stem / "results.csv"
        st = recorded.get(nb.stem, {})
        rows.append({"notebook": nb.stem, "title": NOTEBOOK_TITLES.get(nb.stem, nb.stem),
                     "status": st.get("status", "ran" if res.exists() else "not run"),
                     "seconds": st.get("seconds"), "has_results": res.exists(),
                     "html": (f"notebooks/{nb.stem}.html" if (root / "notebooks" / f"{nb.stem}.html").exists()
                              else None)})
    return pd.DataFrame(rows)


def wide(df: pd.DataFrame, index=("model", "variant", "backend", "threads")) -> pd.DataFrame:
    """One row per variant/backend/threads, one column per metric (status 'ok' rows only)."""
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["threads"] = ok["threads"].fillna(-1).astype(int)
    table = ok.pivot_table(index=list(index), columns="metric", values="value", aggfunc="first")
    table.columns.name = None
    table = table.reset_index()
    table["threads"] = table["threads"].replace(-1, np.nan)
    return table


METRIC_GROUPS = {
    "quality": ["dnsmos_p808", "dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "wer", "cer", "pesq_wb", "stoi", "mcd_db",
                "f0_rmse_cents"],
    "speed": ["rtf", "rtf_ratio", "latency_ms_p50", "latency_ms_p90", "latency_ms_p99", "throughput_xrt",
              "throughput_xrt_offline", "best_batch", "peak_rss_mb"],
    "streaming": ["ttfa_ms_p50", "ttfa_ms_p90", "ttfa_ms_p99", "stream_rtf", "chunk_snr_db", "chunk_pesq_wb"],
    "utilisation and energy": ["util_pct", "gpu_util_pct", "gpu_util_pct_offline", "peak_gpu_mb",
                               "energy_j_per_audio_s"],
    "size": ["size_mb", "params", "nonzero_params", "trainable_params", "gflop_per_audio_s", "train_s_per_step"],
}


def grouped_tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """A notebook's rows as small tables (quality, speed, size, other): only the rows and columns that hold values."""
    w = wide(df)
    if w.empty:
        return {}
    keys = [c for c in ("model", "variant", "backend", "threads") if c in w]
    metrics = [c for c in w.columns if c not in keys]
    groups = dict(METRIC_GROUPS)
    groups["other"] = [m for m in metrics if not any(m in g for g in METRIC_GROUPS.values())]
    out = {}
    for name, cols in groups.items():
        cols = [c for c in cols if c in metrics]
        if not cols:
            continue
        t = w[keys + cols].dropna(subset=cols, how="all")
        if name != "speed":
            t = t.drop(columns=["threads"], errors="ignore")
        if not t.empty:
            out[name] = t.reset_index(drop=True)
    return out


def notebook_rows(df: pd.DataFrame, notebook: str) -> pd.DataFrame:
    """A notebook's rows from this profile and from the runs recorded on other machines (their device named in
    the back-end column, e.g. 'torch-cuda @ h100')."""
    nb = df["notebook"].astype(str)
    own = df[nb == notebook]
    rec = df[nb.str.match(rf"^recorded/[^/]+/{notebook}$")].copy()
    if not rec.empty:
        rec["backend"] = rec["backend"].astype(str) + " @ " + rec["notebook"].str.split("/").str[1]
    return pd.concat([own, rec], ignore_index=True)


def absent_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Everything recorded as absent or failed, with the reason."""
    cols = ["notebook", "model", "variant", "backend", "metric", "status", "reason"]
    bad = df[df["status"].isin(["absent", "failed"])]
    return bad[[c for c in cols if c in bad]].drop_duplicates(subset=["notebook", "variant", "backend", "reason"])


def contended_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Timings taken while other processes held the cores (status 'contended'): shown apart, never as results."""
    rows = df[df["status"] == "contended"]
    cols = ["notebook", "model", "variant", "backend", "threads", "metric", "value", "reason"]
    return rows[[c for c in cols if c in rows]].reset_index(drop=True)


def grey(table: pd.DataFrame):
    """A table styled grey: numbers shown for the record, not as results."""
    return table.style.hide(axis="index").format(precision=3, na_rep="–").set_properties(
        **{"color": "#999", "background-color": "#f4f4f4"})


def cpu_line(env: dict) -> str:
    """'AMD EPYC 9R14, 2 cores: AVX2, AVX-512, VNNI, bf16; no AMX' from an env.json (features from its flags)."""
    from lib.core.machine import feature_line, features_from_flags
    feats = env.get("cpu_features") or features_from_flags(env.get("cpu_flags", []))
    return f"{env.get('cpu_model', 'unknown CPU')}, {env.get('cpu_count', '?')} cores: {feature_line(feats)}"


def envs(profile: str, outputs: Path | None = None) -> dict[str, dict]:
    root = Path(outputs or OUTPUTS) / profile
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(root.glob("*/env.json"))}


def provenance_table(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    """Where each notebook's numbers come from, this profile's runs and the recorded runs of other machines."""
    from lib.core.results import RECORDED
    rows = []
    recorded = {f"recorded/{p.parent.parent.name}/{p.parent.name} ({p.stem})": json.loads(p.read_text())
                for p in sorted(RECORDED.glob("*/*/env*.json"))}
    for nb, env in {**envs(profile, outputs), **recorded}.items():
        v = env.get("versions", {})
        rows.append({"notebook": nb, "date (UTC)": env.get("date_utc"), "git": env.get("git"),
                     "cpu": env.get("cpu_model"), "cores": env.get("cpu_count"), "threads": env.get("threads"),
                     "device": env.get("gpu") or env.get("device"),
                     "torch": v.get("torch"), "onnxruntime": v.get("onnxruntime"), "python": env.get("python")})
    return pd.DataFrame(rows)


def load(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    return load_results(profile, outputs)


def headlines(profile: str, outputs: Path | None = None) -> dict[str, list[str]]:
    """Each notebook's verdict lines on its targets (`headline` in its metrics.json), for the summary."""
    root = Path(outputs or OUTPUTS) / profile
    out = {}
    for p in sorted(root.glob("*/metrics.json")):
        lines = json.loads(p.read_text()).get("headline")
        if lines:
            out[p.parent.name] = list(lines)
    return out


def metric_by_variant(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One value of `metric` per (notebook, variant, backend) across all notebooks and recorded runs, sorted."""
    rows = df[(df["status"] == "ok") & (df["metric"] == metric)].copy()
    if rows.empty:
        return pd.DataFrame(columns=["label", "value"])
    where = rows["notebook"].astype(str).str.replace(r"^recorded/([^/]+)/.*$", r"\1", regex=True)
    rows["label"] = rows["variant"].astype(str) + " (" + rows["backend"].astype(str) + ", " + where + ")"
    return rows.groupby("label", as_index=False)["value"].first().sort_values("value")


def latency_spread(df: pd.DataFrame, prefix: str = "latency_ms") -> pd.DataFrame:
    """p50/p90/p99 of `prefix` per (notebook, variant, backend, threads): the shape of the latency distribution."""
    cols = [f"{prefix}_p50", f"{prefix}_p90", f"{prefix}_p99"]
    rows = df[(df["status"] == "ok") & df["metric"].isin(cols)].copy()
    if rows.empty:
        return pd.DataFrame(columns=["label"] + cols)
    where = rows["notebook"].astype(str).str.replace(r"^recorded/([^/]+)/.*$", r"\1", regex=True)
    threads = rows["threads"].map(lambda t: "" if pd.isna(t) else f", {int(t)} thr")
    rows["label"] = rows["variant"].astype(str) + " (" + rows["backend"].astype(str) + threads + ", " + where + ")"
    t = rows.pivot_table(index="label", columns="metric", values="value", aggfunc="first").reindex(columns=cols)
    return t.dropna(subset=[cols[0]]).sort_values(cols[0]).reset_index()


def per_clip(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    """Every notebook's per-clip scores (per_clip.csv) with the notebook named: what the confidence intervals of the
    quality means come from."""
    root = (outputs or OUTPUTS) / profile
    frames = [pd.read_csv(p).assign(notebook=p.parent.name) for p in sorted(root.glob("*/per_clip.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def styled(table: pd.DataFrame):
    """A results table for reading: metric columns headed with their unit from the registry, counts as integers,
    other numbers to three significant places, missing values as a dash."""
    from lib.core.results import METRICS
    renamed = {c: f"{c} [{METRICS[c].unit}]" for c in table.columns if c in METRICS}
    counts = [renamed[c] for c in renamed if METRICS[c].unit == "count"]
    out = table.rename(columns=renamed)
    fmt = {c: ("{:,.0f}" if c in counts else "{:.3g}") for c in out.columns
           if c in renamed.values() and pd.api.types.is_numeric_dtype(out[c])}
    return out.style.hide(axis="index").format(fmt, na_rep="–")
