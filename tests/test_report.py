import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lib.core import results
from lib.report import report


def _rows(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    w = results.ResultWriter("p", "01_baselines")
    k = dict(model="m", backend="ort-cpu", threads=1)
    w.add_many({"rtf": 0.10, "dnsmos_p808": 3.9, "wer": 0.05, "size_mb": 60}, variant="fp32", **k)
    w.write(env={"cpu_model": "cpu", "versions": {"torch": "2"}})
    w2 = results.ResultWriter("p", "03_pruning_quantization")
    w2.add_many({"rtf": 0.04, "dnsmos_p808": 3.85, "wer": 0.06, "size_mb": 15}, variant="int8", technique="quantization", **k)
    w2.add_many({"rtf": 0.02, "dnsmos_p808": 3.0, "wer": 0.20, "size_mb": 8}, variant="int4", technique="quantization", **k)
    w2.absent(model="m", variant="fp16", metrics=["rtf"], backend="ort-cuda", reason="no GPU here")
    w2.write()
    return report.load("p", tmp_path)


def test_recommend_respects_quality_bounds(tmp_path, monkeypatch):
    df = _rows(tmp_path, monkeypatch)
    assert report.baseline(df)["rtf"] == pytest.approx(0.10)
    rec = report.recommend(df).set_index("goal")
    assert "int8" in rec.loc["fastest", "variant"], "int4 is faster but fails the DNSMOS bound"
    assert "int8" in rec.loc["smallest", "variant"]
    assert "int8" in rec.loc["best quality per ms", "variant"]


def test_recommend_ranks_speed_within_a_run_and_skips_baselines(tmp_path, monkeypatch):
    df = _rows(tmp_path, monkeypatch)
    w = results.ResultWriter("p", "04_distillation")
    k = dict(model="m", backend="ort-cpu", threads=1)
    w.add_many({"rtf": 0.03, "rtf_ratio": 1.0, "dnsmos_p808": 3.9, "wer": 0.05}, variant="fp32-ort", technique="baseline", **k)
    w.add_many({"rtf": 0.025, "rtf_ratio": 0.8, "dnsmos_p808": 3.88, "wer": 0.05}, variant="student", technique="distillation", **k)
    w.write()
    w = results.ResultWriter("p", "02_lora_qlora")
    w.add_many({"rtf": 0.001, "rtf_ratio": 0.01, "dnsmos_p808": 3.9, "wer": 0.05}, variant="full", technique="finetune", **k)
    w.write()
    w = results.ResultWriter("p", "05_hardware_benchmark")
    w.add_many({"rtf": 0.03, "rtf_ratio": 1.0, "dnsmos_p808": 3.0, "wer": 0.30}, variant="ref", technique="baseline", **k)
    w.add_many({"rtf": 0.01, "rtf_ratio": 0.2, "dnsmos_p808": 2.95, "wer": 0.31}, variant="hard-set", technique="engine", **k)
    w.write()
    rec = report.recommend(report.load("p", tmp_path)).set_index("goal")
    assert "hard-set" in rec.loc["fastest", "variant"], "judged against its own parent on its own sentences"
    rec = report.recommend(report.load("p", tmp_path)[lambda d: d["notebook"] != "05_hardware_benchmark"]).set_index("goal")
    assert "int8" in rec.loc["fastest", "variant"], "0.4 of its parent beats 0.8, although the student's RTF is lower"
    assert "fp32-ort" not in " ".join(rec["variant"]) and "full" not in " ".join(rec["variant"])


def test_pareto_front():
    pts = pd.DataFrame({"rtf": [0.1, 0.05, 0.2, 0.04], "q": [3.9, 3.8, 3.7, 3.0]})
    front = report.pareto_front(pts, "rtf", "q")
    assert sorted(front["rtf"]) == [0.04, 0.05, 0.1]


def test_tables_absent_and_status(tmp_path, monkeypatch):
    df = _rows(tmp_path, monkeypatch)
    t = report.grouped_tables(df[df["notebook"] == "03_pruning_quantization"])
    assert set(t) == {"quality", "speed", "size"} and len(t["speed"]) == 2
    ab = report.absent_rows(df)
    assert list(ab["reason"]) == ["no GPU here"]
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for name in ("01_baselines", "02_lora_qlora", "90_report"):
        (nbs / f"{name}.ipynb").write_text("{}")
    (tmp_path / "p" / "run_status.json").write_text(json.dumps({"01_baselines": {"status": "failed", "seconds": 3}}))
    st = report.notebook_status("p", nbs, tmp_path).set_index("notebook")
    assert list(st.index) == ["01_baselines", "02_lora_qlora"]
    assert st.loc["01_baselines", "status"] == "failed" and st.loc["02_lora_qlora", "status"] == "not run"
    assert not st.loc["02_lora_qlora", "has_results"]


def test_audio_tag_embeds_a_short_clip(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(22050 * 10) * 0.05)).astype(np.float32), 22050)
    tag = report.audio_tag(wav, max_s=2.0, label="x <y>")
    assert tag.count("<audio") == 1 and "x &lt;y&gt;" in tag
    payload = tag.split("base64,")[1].split("'")[0]
    assert 60_000 < len(payload) < 100_000, "2 s at 16 kHz, 16-bit, base64"


def test_tradeoff_plot_labels_the_frontier_without_overlap_and_names_every_point_on_hover():
    """80 clustered variants, as the default report has: only the frontier and the baseline are labelled, no two
    drawn labels overlap, and the SVG names every marker in a <title>."""
    import matplotlib
    matplotlib.use("Agg")
    from lib.report import tradeoff
    rng = np.random.default_rng(0)
    rows = [{"notebook": f"0{k % 4 + 1}_nb", "variant": f"v{k}", "backend": "ort-cpu",
             "rtf": float(rng.choice([0.01, 0.05]) * rng.uniform(0.9, 1.1)), "dnsmos_p808": float(rng.uniform(3.5, 3.9))}
            for k in range(80)]
    rows.append({"notebook": "01_nb", "variant": "fp32", "backend": "ort-cpu", "rtf": 0.06, "dnsmos_p808": 3.88})
    qs = pd.DataFrame(rows)
    fig, names = tradeoff.plot(qs)
    fig.canvas.draw()
    ax = fig.axes[0]
    boxes = [t.get_window_extent() for t in ax.texts]
    assert 2 <= len(boxes) <= len(tradeoff.pareto_front(qs, "rtf", "dnsmos_p808")) + 1
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    frame = ax.get_window_extent()
    assert all(frame.x0 <= b.x0 and b.x1 <= frame.x1 for b in boxes)  # none cut by the axes' edge
    assert any(t.get_text() == "fp32 (ort-cpu)" for t in ax.texts)
    svg = tradeoff.svg(fig, names)
    assert svg.count("<title>") - svg.count("<title>Created with") >= len(qs)
    assert "<title>v17 (ort-cpu)</title>" in svg


def test_the_two_quality_judges_are_compared_variant_by_variant():
    """A variant that DNSMOS calls better than its parent and Distill-MOS worse is flagged; small changes are no
    direction; the rank correlation covers every variant both judged."""
    from lib.report import judges
    rows = []
    for variant, parent, dns, dm in (("teacher", "", 3.8, 3.9), ("a", "teacher", 3.9, 3.6), ("b", "teacher", 3.5, 3.4),
                                     ("c", "teacher", 3.81, 3.7)):
        for metric, value in (("dnsmos_p808", dns), ("distillmos", dm)):
            rows.append({"notebook": "02_x", "model": "m", "variant": variant, "technique": "t", "parent": parent or None,
                         "backend": "torch-cpu", "device": "cpu", "threads": np.nan, "metric": metric, "value": value,
                         "unit": "MOS", "n": 10, "status": "ok", "reason": "", "reference": "", "run_id": "r"})
    flagged, agree = judges.disagreements(pd.DataFrame(rows))
    by = flagged.set_index("variant")
    assert bool(by.loc["a", "disagree"]) and not by.loc["b", "disagree"] and not by.loc["c", "disagree"]
    assert agree["variants"] == 4 and -1 <= agree["spearman"] <= 1
