"""A blinded listening test after ITU-T P.808 (absolute category rating of naturalness, 1 to 5) built from the
clips the notebooks recorded, and its analysis: MOS per variant with 95 % confidence intervals, rater screening by
hidden anchors, and agreement between human MOS and DNSMOS."""
from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core.audio import read_wav, resample
from lib.core.results import atomic_write_json, atomic_write_text
from lib.core.subject import Technique

REFERENCE, DEGRADED = "anchor:reference", "anchor:degraded"
ACR = {5: "Excellent", 4: "Good", 3: "Fair", 2: "Poor", 1: "Bad"}


class RatingsError(ValueError):
    """A ratings file that cannot be used; the message names the file and the problem."""


def degrade(samples: np.ndarray, sr: int, seed: int = 0) -> np.ndarray:
    """The low anchor: telephone band (300-3400 Hz), white noise at 5 dB SNR and hard clipping; clearly worse
    than any real variant, so a rater who scores it like the reference is not listening."""
    from scipy.signal import butter, sosfilt
    sos = butter(8, [300, 3400], btype="bandpass", fs=sr, output="sos")
    x = sosfilt(sos, samples.astype(np.float64))
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.size)
    noise *= np.sqrt(np.mean(x ** 2) / (10 ** (5 / 10)) / max(np.mean(noise ** 2), 1e-12))
    y = x + noise
    y = np.clip(y / max(np.abs(y).max(), 1e-9) * 3.0, -1, 1) * 0.9
    return y.astype(np.float32)


def common_clips(folders: dict[str, Path], n: int) -> dict[str, dict[str, Path]]:
    """For each label, its clips of the first `n` sentences every folder has (same sentences for all)."""
    missing = [f"{k}: {p}" for k, p in folders.items() if not Path(p).is_dir()]
    if missing:
        raise FileNotFoundError("no clips folder for " + "; ".join(missing))
    ids = sorted(set.intersection(*[{w.stem for w in Path(p).glob("*.wav")} for p in folders.values()]))[:n]
    if not ids:
        raise FileNotFoundError(f"the clip folders share no sentence: {list(folders.values())}")
    return {k: {i: Path(p) / f"{i}.wav" for i in ids} for k, p in folders.items()}


def _wav_data_url(samples: np.ndarray, sr: int, rate: int) -> str:
    import soundfile as sf
    x = resample(samples, sr, rate) if sr != rate else samples
    x = x / max(float(np.abs(x).max()), 1e-9) * 0.9
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def build_kit(clips: dict[str, dict[str, Path]], reference: str, texts: dict[str, str], out_dir: Path, key_path: Path,
              anchors: int = 2, seed: int = 0, rate: int = 16000, title: str = "Listening test") -> dict:
    """Write `out_dir/index.html`, one self-contained page (audio embedded, no network) that plays every clip in a
    per-rater random order under opaque ids, asks for a 1-5 naturalness score, and downloads the ratings as
    JSON; and the key that un-blinds the ids to `key_path`, which must lie outside `out_dir` (the folder is
    what raters get). `anchors` sentences add a hidden copy of the reference and a degraded clip each."""
    out_dir, key_path = Path(out_dir), Path(key_path)
    if out_dir.resolve() in key_path.resolve().parents:
        raise ValueError(f"the key {key_path} must not be inside the folder given to raters ({out_dir})")
    if reference not in clips:
        raise ValueError(f"reference {reference!r} is not among the clips: {sorted(clips)}")
    entries = [(label, sid, None, path) for label, by_sid in clips.items() for sid, path in by_sid.items()]
    ref_sids = sorted(clips[reference])[:anchors]
    entries += [(reference, sid, REFERENCE, clips[reference][sid]) for sid in ref_sids]
    entries += [(reference, sid, DEGRADED, clips[reference][sid]) for sid in ref_sids]
    rng = np.random.default_rng(seed)
    tokens = [f"s{i:03d}" for i in rng.permutation(len(entries))]
    stimuli, key = [], {}
    for token, (label, sid, anchor, path) in zip(tokens, entries):
        samples, sr = read_wav(path)
        if anchor == DEGRADED:
            samples = degrade(samples, sr, seed=int(token[1:]))
        stimuli.append({"id": token, "src": _wav_data_url(samples, sr, rate)})
        key[token] = {"variant": label, "sentence": sid, "anchor": anchor, "text": texts.get(sid, "")}
    stimuli.sort(key=lambda s: s["id"])
    kit_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "index.html", _page(stimuli, kit_id, title))
    atomic_write_json(key_path, {"kit_id": kit_id, "reference": reference, "rate": rate, "seed": seed,
                                 "variants": sorted(clips), "stimuli": key})
    (out_dir / "ratings").mkdir(exist_ok=True)
    return {"kit_id": kit_id, "stimuli": len(stimuli), "variants": len(clips), "sentences": len(clips[reference]),
            "page": out_dir / "index.html", "page_mb": (out_dir / "index.html").stat().st_size / 2**20}


def _page(stimuli: list[dict], kit_id: str, title: str) -> str:
    scale = "".join(f"<label><input type='radio' name='score' value='{v}'> {v} {ACR[v]}</label>" for v in ACR)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }}
.trial {{ border: 1px solid #ccc; border-radius: 6px; padding: 1rem; margin: 1rem 0; }}
.scale label {{ display: block; margin: .25rem 0; }} button {{ font-size: 1rem; padding: .4rem 1rem; }}
#progress {{ color: #555; }} .hidden {{ display: none; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<section id="intro">
<p>You will hear short English sentences, one at a time. For each, rate <b>how natural the speech sounds</b>
on the scale below, as in ITU-T P.808 (absolute category rating). Use headphones in a quiet room, and set the
volume once, at the start, to a comfortable level. Listen to each sentence to the end before rating it; you may
replay it. There are no right answers, and the order is random for every listener.</p>
<p>5 Excellent, 4 Good, 3 Fair, 2 Poor, 1 Bad.</p>
<p><label>Your name or code: <input id="rater" autocomplete="off"></label></p>
<button id="start">Start</button>
</section>
<section id="test" class="hidden">
<p id="progress"></p>
<div class="trial"><audio id="player" controls preload="auto"></audio>
<p>How natural does this speech sound?</p><div class="scale" id="scale">{scale}</div></div>
<button id="prev">Back</button> <button id="next">Next</button>
</section>
<section id="done" class="hidden"><p>Thank you. Download your ratings and send the file to the experimenter.</p>\
</section>
<p><button id="export" class="hidden">Download ratings (JSON)</button></p>
<script>
const KIT = "{kit_id}";
const STIMULI = {json.dumps(stimuli)};
function mulberry32(a) {{ return function() {{ a |= 0; a = a + 0x6D2B79F5 | 0; let t = Math.imul(a ^ a >>> 15, 1 | a);
  t = t + Math.imul(t ^ t >>> 7, 61 | t) ^ t; return ((t ^ t >>> 14) >>> 0) / 4294967296; }}; }}
const params = new URLSearchParams(location.search);
const seed = params.has("seed") ? Number(params.get("seed")) : crypto.getRandomValues(new Uint32Array(1))[0];
const rand = mulberry32(seed);
const order = STIMULI.map((_, i) => i);
for (let i = order.length - 1; i > 0; i--) {{ const j = Math.floor(rand() * (i + 1)); \
[order[i], order[j]] = [order[j], order[i]]; }}
const ratings = {{}}; const played = {{}}; let pos = 0; let started = null;
const player = document.getElementById("player");
function show() {{
  const s = STIMULI[order[pos]];
  player.src = s.src;
  document.getElementById("progress").textContent = `Sentence ${{pos + 1}} of ${{order.length}}`;
  document.querySelectorAll("input[name=score]").forEach(r => r.checked = ratings[s.id] === Number(r.value));
  document.getElementById("prev").disabled = pos === 0;
  document.getElementById("next").textContent = pos === order.length - 1 ? "Finish" : "Next";
}}
player.addEventListener("play", () => {{ played[STIMULI[order[pos]].id] = true; }});
document.querySelectorAll("input[name=score]").forEach(r => r.addEventListener("change", () => {{
  ratings[STIMULI[order[pos]].id] = Number(r.value); }}));
document.getElementById("start").onclick = () => {{
  if (!document.getElementById("rater").value.trim()) {{ alert("Please enter your name or code first."); return; }}
  started = new Date().toISOString();
  document.getElementById("intro").classList.add("hidden");
  document.getElementById("test").classList.remove("hidden");
  document.getElementById("export").classList.remove("hidden"); show(); }};
document.getElementById("prev").onclick = () => {{ if (pos > 0) {{ pos--; show(); }} }};
document.getElementById("next").onclick = () => {{
  if (!(STIMULI[order[pos]].id in ratings)) {{ alert("Please rate this sentence first."); return; }}
  if (pos < order.length - 1) {{ pos++; show(); }} else {{
    document.getElementById("test").classList.add("hidden"); \
document.getElementById("done").classList.remove("hidden"); }} }};
function exportRatings() {{
  const rater = document.getElementById("rater").value.trim();
  const data = {{ kit_id: KIT, rater: rater, seed: seed, started: started, finished: new Date().toISOString(),
    user_agent: navigator.userAgent, order: order.map(i => STIMULI[i].id),
    ratings: order.map((i, k) => ({{ stimulus: STIMULI[i].id, position: k, score: ratings[STIMULI[i].id] ?? null,
                                     played: !!played[STIMULI[i].id] }})) }};
  const blob = new Blob([JSON.stringify(data, null, 1)], {{ type: "application/json" }});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `ratings_${{KIT}}_${{rater.replace(/[^A-Za-z0-9_-]/g, "_") || "anonymous"}}.json`;
  document.body.appendChild(a); a.click(); a.remove();
}}
document.getElementById("export").onclick = exportRatings;
</script></body></html>
"""


def load_ratings(folder: Path, key: dict) -> pd.DataFrame:
    """Every ratings_*.json under `folder` for this kit, one row per (rater, stimulus) with a score."""
    rows = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RatingsError(f"{path}: not valid JSON ({exc})") from None
        for field in ("kit_id", "rater", "seed", "ratings"):
            if field not in data:
                raise RatingsError(f"{path}: no '{field}' field")
        if data["kit_id"] != key["kit_id"]:
            raise RatingsError(f"{path}: ratings of kit {data['kit_id']}, not of this kit ({key['kit_id']})")
        for r in data["ratings"]:
            if r.get("score") is None:
                continue
            if r["stimulus"] not in key["stimuli"]:
                raise RatingsError(f"{path}: unknown stimulus {r['stimulus']!r}")
            if r["score"] not in ACR:
                raise RatingsError(f"{path}: score {r['score']!r} for {r['stimulus']} is not on the 1-5 scale")
            rows.append({"rater": str(data["rater"]), "file": path.name, "seed": data["seed"],
                         "stimulus": r["stimulus"], "score": int(r["score"]), "played": bool(r.get("played", True)),
                         **{k: key["stimuli"][r["stimulus"]][k] for k in ("variant", "sentence", "anchor")}})
    return pd.DataFrame(rows, columns=["rater", "file", "seed", "stimulus", "score", "played", "variant", "sentence",
                                       "anchor"])


def screen_raters(ratings: pd.DataFrame, min_gap: float = 2.0, min_reference: float = 3.0) -> pd.DataFrame:
    """P.808-style gold questions: a rater passes when the hidden reference scores at least `min_reference` on
    average and at least `min_gap` above the degraded anchor."""
    rows = []
    for rater, g in ratings.groupby("rater"):
        ref = g.loc[g["anchor"] == REFERENCE, "score"].mean()
        low = g.loc[g["anchor"] == DEGRADED, "score"].mean()
        ok = bool(np.isfinite(ref) and np.isfinite(low) and ref >= min_reference and ref - low >= min_gap)
        rows.append({"rater": rater, "reference_mean": ref, "degraded_mean": low,
                     "rated": int(g["anchor"].isna().sum()), "passed": ok,
                     "why": "" if ok else ("anchors not rated" if not (np.isfinite(ref) and np.isfinite(low))
                                           else f"reference {ref:.1f} vs degraded {low:.1f}")})
    return pd.DataFrame(rows, columns=["rater", "reference_mean", "degraded_mean", "rated", "passed", "why"])


def mos_table(ratings: pd.DataFrame, raters: Sequence[str]) -> pd.DataFrame:
    """MOS per variant over the kept raters (anchors left out), with its 95 % confidence interval (Student t
    over all kept scores of that variant)."""
    from scipy import stats
    kept = ratings[ratings["rater"].isin(list(raters)) & ratings["anchor"].isna()]
    rows = []
    for variant, g in kept.groupby("variant"):
        n = len(g)
        sd = g["score"].std(ddof=1) if n > 1 else np.nan
        half = float(stats.t.ppf(0.975, n - 1) * sd / np.sqrt(n)) if n > 1 else np.nan
        rows.append({"variant": variant, "mos": g["score"].mean(), "ci95": half, "n": n,
                     "raters": g["rater"].nunique()})
    return pd.DataFrame(rows, columns=["variant", "mos", "ci95", "n", "raters"]).sort_values("mos", ascending=False)


def agreement(mos: pd.DataFrame, predicted: dict[str, float]) -> dict:
    """Pearson and Spearman correlation across variants between human MOS and a predicted score (DNSMOS)."""
    from scipy import stats
    m = mos[mos["variant"].isin(predicted)]
    x, y = m["mos"].to_numpy(), np.array([predicted[v] for v in m["variant"]])
    if len(m) < 3:
        return {"variants": len(m), "pearson": None, "spearman": None}
    return {"variants": len(m), "pearson": float(stats.pearsonr(x, y)[0]), "spearman": float(stats.spearmanr(x, y)[0])}


def blinded(page: str, names: Sequence[str]) -> list[str]:
    """The variant names (and their parts longer than 3 characters) that appear in a page or file: [] when blind."""
    words = {n for name in names for n in [name] + re.split(r"[-_ ()/]+", name) if len(n) > 3}
    words -= {"anchor", "reference", "degraded", "data", "audio", "test"}
    return sorted(w for w in words if re.search(rf"(?<![A-Za-z0-9+/=]){re.escape(w)}(?![A-Za-z0-9+/=])", page))


def recorded_clips(writer, root: Path, variants: Sequence[str], reference: str) -> dict[str, Path]:
    """{variant: its clip folder} for each `variants` entry (<notebook>/<clip folder>) whose notebook recorded clips
    under `root`; an absent `human_mos` row in `writer` for each that did not. `reference` must be one of them."""
    if reference not in variants:
        raise ValueError(f"reference {reference!r} must be one of `variants`")
    folders = {v: Path(root) / v.split("/")[0] / "audio" / v.split("/")[1] for v in variants}
    available = {v: p for v, p in folders.items() if p.is_dir()}
    for v in sorted(set(folders) - set(available)):
        writer.about(v, Technique.LISTENING_TEST).absent(
            ["human_mos"], f"no clips at {folders[v]} (its notebook has not run, or failed)")
    return available


def analyse(ratings: pd.DataFrame, results: pd.DataFrame, *, min_gap: float, min_reference: float) -> tuple:
    """(rater screening, MOS per variant beside its DNSMOS P.808 from `results`, agreement of the two): empty frames
    and {} when no ratings are collected."""
    if ratings.empty:
        return pd.DataFrame(), pd.DataFrame(), {}
    screening = screen_raters(ratings, min_gap=min_gap, min_reference=min_reference)
    mos = mos_table(ratings, screening.loc[screening["passed"], "rater"].tolist())
    dnsmos = results[(results["metric"] == "dnsmos_p808") & (results["status"] == "ok")]
    predicted = {}
    for v in mos["variant"]:
        nb, folder = v.split("/")
        name, backend = folder.split("__")
        hit = dnsmos[(dnsmos["notebook"] == nb) & (dnsmos["variant"] == name) & (dnsmos["backend"] == backend)]
        if not hit.empty:
            predicted[v] = float(hit["value"].iloc[0])
    mos["dnsmos_p808"] = mos["variant"].map(predicted)
    return screening, mos, agreement(mos, predicted)


def record(writer, available: Sequence[str], mos: pd.DataFrame) -> None:
    """The human MOS rows (with their 95 % intervals), or an absent row per variant while no ratings exist."""
    if mos.empty:
        for v in available:
            writer.about(v.split("/")[1].split("__")[0], Technique.LISTENING_TEST, backend=v.split("__")[-1]).absent(
                ["human_mos"], "no ratings collected yet")
        return
    for _, r in mos.iterrows():
        name, backend = r["variant"].split("/")[1].split("__")
        out = writer.about(name, Technique.LISTENING_TEST, backend=backend)
        out.add("human_mos", r["mos"], n=int(r["n"]))
        out.add("human_mos_ci95", r["ci95"], n=int(r["n"]))
