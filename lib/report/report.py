"""What the report notebook shows, built only from files under outputs/: tables, plots, embedded clips, provenance."""
from __future__ import annotations

import base64
import html
import io
import json
import re
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


def relies_on(variant: str, backend: str = "") -> str:
    """Which CPU feature a variant's speed depends on, from its name and back-end (what a reader on another CPU
    must have for the verdict to carry over)."""
    name = f"{variant} {backend}".lower()
    if "bf16" in name:
        return "native bf16 (AVX-512 BF16 or AMX)"
    if "nf4" in name or "bnb" in name:
        return "bitsandbytes CPU kernels (AVX-512 where present)"
    if ("int8" in name or "qdq" in name) and "weight" not in name:
        return "int8 dot products (VNNI where present)"
    return "FP32 only (AVX2 or better)"


def cpu_findings(table: pd.DataFrame, env: dict, frame: pd.DataFrame, baseline: str) -> list[str]:
    """A notebook's CPU-specific findings computed from its own run (a `deltas` table, its env.json and its result
    rows): which CPU, the fastest variant within the quality bounds and the feature it relies on, how the
    precision-specific variants fared, what could not run on this CPU and why, and how many timings were taken
    on a busy machine. Nothing here is written for one machine by hand."""
    lines = [f"Measured on {cpu_line(env)}, at {env.get('threads', '?')} thread(s)."]
    timed = table.dropna(subset=["rtf_ratio"]) if "rtf_ratio" in table else table.iloc[:0]
    good = timed[timed["within_quality_bounds"] & (timed["variant"] != baseline)]
    if not good.empty:
        b = good.loc[good["rtf_ratio"].idxmin()]
        lines.append(f"Fastest within the quality bounds on this CPU: **{b['variant']}** ({b['backend']}) at "
                     f"{b['rtf_ratio']:.2f}x the baseline's RTF, same run; "
                     f"it relies on {relies_on(b['variant'], b['backend'])}.")
    elif not timed.empty:
        lines.append("No variant was timed faster within the quality bounds on this CPU.")
    for _, r in timed[timed["variant"].str.contains("bf16")].iterrows():
        lines.append(f"{r['variant']}: {r['rtf_ratio']:.2f}x the baseline's RTF, "
                     f"{'within' if r['within_quality_bounds'] else 'outside'} the quality bounds (native bf16 here).")
    absent = frame[(frame["status"] == "absent") & (frame["device"].fillna("cpu") == "cpu")].drop_duplicates("variant")
    for _, r in absent.iterrows():
        lines.append(f"{r['variant']}: absent on this CPU ({r['reason']}).")
    busy = frame[frame["status"] == "contended"]
    if len(busy):
        lines.append(f"{busy['variant'].nunique()} variant(s) were timed while other processes held the cores; their "
                     "timings are marked contended and left out of this verdict.")
    return lines


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


CLIP_RATE = 16000  # embedded clips: 16 kHz Ogg Opus, a tenth of 16-bit WAV, so the page stays within its size budget


def clip_data_url(wav: Path, max_s: float = 8.0, rate: int = CLIP_RATE) -> str:
    """The first `max_s` seconds of a clip as a data URL of 16 kHz Ogg Opus (libsndfile's encoder, which every
    current browser plays): embedded, so the page works when moved or offline."""
    import soundfile as sf
    from lib.core.audio import read_wav, resample
    audio, sr = read_wav(wav)
    audio = resample(audio[: int(max_s * sr)], sr, rate)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="OGG", subtype="OPUS")
    return "data:audio/ogg;codecs=opus;base64," + base64.b64encode(buf.getvalue()).decode()


def audio_tag(wav: Path, max_s: float = 4.0, label: str = "", link: str | None = None) -> str:
    """An <audio> element with the first `max_s` seconds embedded (`clip_data_url`); `link`, a relative path to
    the whole file, for the longer audio."""
    cap = f"<div style='font-size:90%'>{html.escape(label)}</div>" if label else ""
    if link:
        cap += f"<div style='font-size:80%'><a href='{html.escape(link)}'>whole clip (WAV)</a></div>"
    return (f"<figure style='display:inline-block;margin:4px 12px'>{cap}"
            f"<audio controls preload='metadata' src='{clip_data_url(wav, max_s)}'></audio></figure>")


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows not beaten on both lower `x` and higher `y`."""
    pts = points.dropna(subset=[x, y]).sort_values([x, y], ascending=[True, False])
    front, best = [], -np.inf
    for _, r in pts.iterrows():
        if r[y] > best:
            front.append(r)
            best = r[y]
    return pd.DataFrame(front)


SPOT_CHECK_TECHNIQUES = {"hardware parity"}


def quality_speed(df: pd.DataFrame) -> pd.DataFrame:
    """Per (notebook, model, variant, backend): DNSMOS, WER and the RTF at one thread, for the trade-off chart.
    Quality spot checks on a handful of sentences (`SPOT_CHECK_TECHNIQUES`) are left out: not comparable with
    the evaluation set."""
    if "technique" in df:
        df = df[~df["technique"].isin(SPOT_CHECK_TECHNIQUES)]
    w = wide(df, index=("notebook", "model", "variant", "backend", "threads"))
    if w.empty or "rtf" not in w:
        return pd.DataFrame()
    keep = ["notebook", "model", "variant", "backend", "rtf"] + (["rtf_ratio"] if "rtf_ratio" in w else [])
    speed = w[w["threads"].fillna(1) == 1].dropna(subset=["rtf"])[keep]
    qcols = [c for c in ["dnsmos_p808", "wer", "size_mb"] if c in w]
    qual = w.groupby(["notebook", "model", "variant", "backend"])[qcols].first().reset_index()
    out = speed.merge(qual, on=["notebook", "model", "variant", "backend"], how="left")
    if "technique" in df:
        tech = df.groupby(["notebook", "model", "variant", "backend"])["technique"].first().reset_index()
        out = out.merge(tech, on=["notebook", "model", "variant", "backend"], how="left")
    return out


NOT_RECOMMENDED = ("baseline", "target", "finetune")


def load(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    return load_results(profile, outputs)


def baseline(df: pd.DataFrame) -> pd.Series | None:
    """The reference row: FP32 on ONNX Runtime at one thread, from the baselines notebook."""
    w = wide(df[df["notebook"] == "01_baselines"], index=("model", "variant", "backend", "threads"))
    if w.empty:
        return None
    q = w[(w["variant"] == "fp32") & (w["backend"] == "ort-cpu")]
    if q.empty:
        return None
    merged = q.drop(columns=["threads"]).groupby(["model", "variant", "backend"]).first().reset_index()
    return merged.iloc[0]


def recommend(df: pd.DataFrame, max_dnsmos_drop: float = 0.10, max_wer_increase: float = 0.02,
              env: dict[str, dict] | None = None) -> pd.DataFrame:
    """For each goal (fastest, smallest, best quality per ms) the variant that wins it while staying within the
    quality bounds of its own notebook's baseline (the parent judged on the same sentences in the same run; the
    baselines notebook's FP32 where a notebook has none), with a one-line reason. Speed is ranked by `rtf_ratio`
    (against the parent timed in the same run) where a notebook wrote one, since absolute RTFs of different runs are not
    comparable; baselines and adapted voices (`NOT_RECOMMENDED` techniques: another voice, not a cheaper one) are left
    out. With `env` (notebook -> env.json), each row says which CPU it was measured on and which feature it relies on.
    Timings marked contended are not results and take no part."""
    base = baseline(df)
    qs = quality_speed(df)
    if not qs.empty:  # runs recorded on other machines are shown in their own tables, never ranked with this one
        qs = qs[~qs["notebook"].astype(str).str.startswith("recorded/")]
    if base is None or qs.empty or "dnsmos_p808" not in qs:
        return pd.DataFrame(columns=["goal", "variant", "reason"])
    qs = qs.copy()
    qs["ref_dnsmos"], qs["ref_wer"] = base["dnsmos_p808"], base.get("wer", 0)
    if "technique" in qs:
        for nb, g in qs.groupby("notebook"):
            ref = g[g["technique"] == "baseline"]
            if "rtf_ratio" in g:
                same_run = ref[(ref["rtf_ratio"] - 1).abs() < 1e-9]
                ref = same_run if len(same_run) else ref
            ref = ref.dropna(subset=["dnsmos_p808"])
            if len(ref):
                qs.loc[g.index, "ref_dnsmos"] = ref["dnsmos_p808"].iloc[0]
                qs.loc[g.index, "ref_wer"] = ref["wer"].iloc[0] if "wer" in ref else 0
        qs = qs[~qs["technique"].isin(NOT_RECOMMENDED)]
    base_rtf = base.get("rtf", np.nan)  # NaN where the baseline's timings were contended or absent: ratios only
    qs["speed"] = qs["rtf_ratio"].fillna(qs["rtf"] / base_rtf) if "rtf_ratio" in qs else qs["rtf"] / base_rtf
    qs["label"] = qs["model"] + " " + qs["variant"] + " (" + qs["backend"] + ", " + qs["notebook"] + ")"
    cpus = {nb: cpu_line(e) for nb, e in (env or {}).items()}
    ok = qs[(qs["dnsmos_p808"] >= qs["ref_dnsmos"] - max_dnsmos_drop) &
            (qs.get("wer", 0) <= qs["ref_wer"] + max_wer_increase)]
    rows = []
    if not ok.empty and ok["speed"].isna().all():
        rows.append({"goal": "fastest", "variant": "none ranked",
                     "reason": "no uncontended timing against a parent in the same run: the baseline's timings were "
                               "contended or absent, and no notebook kept an rtf_ratio (see the contended rows)"})
        ok = ok.iloc[0:0]
    if not ok.empty:
        ok = ok.dropna(subset=["speed"])
        f = ok.loc[ok["speed"].idxmin()]
        rows.append({"goal": "fastest", "variant": f["label"],
                     "reason": f"lowest RTF relative to its parent in the same run ({f['speed']:.3f}; "
                               f"RTF {f['rtf']:.3f}) with DNSMOS {f['dnsmos_p808']:.2f} and WER {f['wer']:.3f} "
                               "within bounds"})
        if "size_mb" in ok and ok["size_mb"].notna().any():
            s = ok.loc[ok["size_mb"].idxmin()]
            rows.append({"goal": "smallest", "variant": s["label"],
                         "reason": f"{s['size_mb']:.1f} MB on disk with quality within bounds"})
        ok = ok.assign(q_per_ms=ok["dnsmos_p808"] / ok["speed"])
        b = ok.loc[ok["q_per_ms"].idxmax()]
        rows.append({"goal": "best quality per ms", "variant": b["label"],
                     "reason": f"DNSMOS {b['dnsmos_p808']:.2f} at {b['speed']:.3f} of its parent's RTF"})
    out = pd.DataFrame(rows)
    if ok.empty and not out.empty:
        return out.assign(**{"measured on": "", "relies on": ""})
    if not out.empty:
        picked = [ok.loc[ok["label"] == r["variant"]].iloc[0] for r in rows]
        out["measured on"] = [cpus.get(p["notebook"], "see provenance") for p in picked]
        out["relies on"] = [relies_on(p["variant"], p["backend"]) for p in picked]
    return out


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


def figures(profile: str, notebook: str, outputs: Path | None = None) -> list[Path]:
    return sorted((Path(outputs or OUTPUTS) / profile / notebook / "figures").glob("*.png"))


def clips(profile: str, notebook: str, per_variant: int = 1, outputs: Path | None = None) -> list[tuple[str, Path]]:
    """The first `per_variant` clips of each variant folder under <notebook>/audio/, the same sentence for all."""
    root = Path(outputs or OUTPUTS) / profile / notebook / "audio"
    folders = sorted(p for p in root.glob("*") if p.is_dir())
    if not folders:
        return []
    common = sorted(set.intersection(*[{w.name for w in f.glob("*.wav")} for f in folders]))[:per_variant]
    return [(f"{f.name.replace('__', ' on ')}: {name[:-4]}", f / name) for f in folders for name in common]


REMOTE_TAG = re.compile(r"""<(script|link)\b[^>]*(?:src|href)=["']https?://[^"']*["'][^>]*>(?:\s*</script>)?""", re.I)


def make_offline(html_path: Path) -> int:
    """Remove the tags nbconvert's template loads from a CDN (require.js, MathJax): the report uses neither, and
    offline they only fail. Returns how many were removed."""
    path = Path(html_path)
    text, n = REMOTE_TAG.subn("", path.read_text(encoding="utf-8"))
    if n:
        from lib.core.results import atomic_write_text
        atomic_write_text(path, text)
    return n


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "offline":
        sys.exit("usage: python -m lib.report.report offline FILE.html [...]")
    for f in sys.argv[2:]:
        make_offline(Path(f))


CURVE_PANELS = (("loss_mel", "mel L1"), ("loss_adv", "generator (LSGAN)"), ("loss_d", "discriminator (LSGAN)"),
                ("loss_fm", "feature matching"), ("loss_kl", "KL (posterior to prior)"),
                ("loss_dur", "duration"), ("heldout_mel", "held-out mel L1"), ("heldout_pesq", "held-out PESQ-WB"),
                ("loss_g", "generator total"))


def plot_curves(curves: dict, path: Path | None = None, smooth: int = 5):
    """The training curves of several runs (name -> a DataFrame or a training.Curve), one panel per loss that any
    run logged; the steps where discriminators were on are where their curves start."""
    import matplotlib.pyplot as plt
    frames = {n: getattr(c, "frame", c) for n, c in curves.items()}
    panels = [(k, t) for k, t in CURVE_PANELS if any(k in f and f[k].notna().any() for f in frames.values())]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels):
        for name, f in frames.items():
            if key in f and f[key].notna().any():
                g = f.dropna(subset=[key])
                y = g[key].rolling(smooth, min_periods=1).mean() if not key.startswith("heldout") else g[key]
                ax.plot(g["step"], y, label=name, marker="o" if key.startswith("heldout") else None, ms=3)
        ax.set_title(title, fontsize=9); ax.set_xlabel("step", fontsize=8); ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def per_clip(profile: str, outputs: Path | None = None) -> pd.DataFrame:
    """Every notebook's per-clip scores (per_clip.csv) with the notebook named: what the confidence intervals of the
    quality means come from."""
    root = (outputs or OUTPUTS) / profile
    frames = [pd.read_csv(p).assign(notebook=p.parent.name) for p in sorted(root.glob("*/per_clip.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_quality_ci(clips: pd.DataFrame, metric: str = "dnsmos_p808", path: Path | None = None):
    """Mean `metric` per variant with its 95 % bootstrap confidence interval over clips (seaborn), one panel per
    notebook: how much of a difference between two means the number of sentences can carry."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    data = clips.dropna(subset=[metric]) if metric in clips else pd.DataFrame()
    if data.empty:
        return None
    books = list(dict.fromkeys(data["notebook"]))
    fig, axes = plt.subplots(1, len(books), figsize=(4.6 * len(books), 0.26 * data["variant"].nunique() + 2.2),
                             squeeze=False)
    for ax, nb in zip(axes.flat, books):
        d = data[data["notebook"] == nb]
        order = d.groupby("variant")[metric].mean().sort_values(ascending=False).index
        sns.pointplot(data=d, y="variant", x=metric, order=order, errorbar=("ci", 95), linestyle="none",
                      markersize=3, ax=ax)
        ax.set_title(NOTEBOOK_TITLES.get(nb, nb), fontsize=9); ax.set_ylabel(""); ax.tick_params(labelsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
    return fig


def label_points(ax, x, y, labels, fontsize: int = 7) -> None:
    """Annotate scatter points, nudging labels apart vertically where they would overlap (no extra dependency:
    adjustText is not installed here, and a greedy pass is enough for tens of points)."""
    pts = sorted(zip(list(x), list(y), list(labels)), key=lambda t: (t[1], t[0]))
    placed: list[tuple[float, float]] = []
    x_span = (max(x) - min(x)) or 1.0 if len(pts) else 1.0
    y_span = (max(y) - min(y)) or 1.0 if len(pts) else 1.0
    for px, py, lab in pts:
        if not (np.isfinite(px) and np.isfinite(py)):
            continue
        offset = 3
        while any(abs(px - qx) < 0.12 * x_span and abs(py + offset * y_span / 300 - qy) < 0.04 * y_span
                  for qx, qy in placed):
            offset += 9
        placed.append((px, py + offset * y_span / 300))
        ax.annotate(str(lab), (px, py), fontsize=fontsize, xytext=(4, offset), textcoords="offset points")


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
