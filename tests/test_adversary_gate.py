"""Issue 66's diagnoses without training: the gate's reading of an arm's curve (discriminators against chance, the
adversarial share), and the magnitude study's pieces (a per-bin correction folded into the head, projections,
STFT consistency)."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lib.studies import adversary_gate as gate, magnitude_gap as mag
from lib.voices.istft_decoder import FrameRateDecoder, stft


def _arm(folder, loss_d, share, names=("mrd",)):
    folder.mkdir(parents=True)
    steps = np.arange(1, len(loss_d) + 1) * 25
    pd.DataFrame({"step": steps, "disc_steps": steps, "loss_d": loss_d, "adv_share": share}).to_csv(
        folder / "curve.csv", index=False)
    (folder / "config.json").write_text(json.dumps({"kind": "istft_decoder", "discriminators": list(names)}))
    return folder


def test_the_gate_passes_an_adversary_below_chance_with_its_share_and_stops_one_at_chance(tmp_path):
    """MRD's chance is 1.5 (three sub-discriminators); an arm whose loss falls to 0.7 of it with a 30 % share learns
    and holds its share; one that sits at 1.5 does not learn and is not judged, whatever its share."""
    learning = _arm(tmp_path / "a", np.linspace(1.5, 1.05, 16), np.full(16, 0.3))
    stuck = _arm(tmp_path / "b", np.full(16, 1.5), np.full(16, 0.3))
    curves = pd.concat([gate.curve_table("a", learning, 100), gate.curve_table("b", stuck, 100)])
    assert set(curves["chance"]) == {1.5}
    table = gate.summary(curves, pd.DataFrame(columns=["id", "metric", "value", "teacher", "decoder", "steps"]))
    a, b = table.set_index("arm").loc["a"], table.set_index("arm").loc["b"]
    assert a["learns"] and a["share_holds"] and a["lowest_loss_d_to_chance"] < gate.LEARNS
    assert not b["learns"] and not b["judged"] and not b["passes"]


def test_a_per_bin_correction_folds_into_the_head_exactly():
    torch.manual_seed(0)
    dec = FrameRateDecoder(in_channels=8, dim=16, blocks=1).eval()
    bins = 513
    stats = pd.DataFrame({"bin": np.arange(bins), "student_mean": np.random.randn(bins),
                          "teacher_mean": np.random.randn(bins), "student_sd": 1 + np.random.rand(bins),
                          "teacher_sd": 1 + np.random.rand(bins)})
    z = torch.randn(1, 8, 20)
    with torch.no_grad():
        before = dec.spectra(z)[0][0]
        after, phase_after = mag.corrected(dec, stats, scale=True).spectra(z)
    k = torch.tensor(stats["teacher_sd"] / stats["student_sd"], dtype=torch.float32)[:, None]
    want = torch.tensor(stats["teacher_mean"], dtype=torch.float32)[:, None] + k * (
        before - torch.tensor(stats["student_mean"], dtype=torch.float32)[:, None])
    assert torch.allclose(after[0], want, atol=1e-4)
    assert torch.equal(phase_after, dec.spectra(z)[1]), "the phases are left as they were"


def test_projections_and_consistency_behave_at_their_limits():
    """A full-rank projection gives the log-magnitudes back, a rank-1 one does not; the teacher's own STFT is
    consistent (near 0), the same magnitudes with random phases are not."""
    torch.manual_seed(0)
    dec = FrameRateDecoder(in_channels=8, dim=16, blocks=1).eval()
    y = 0.1 * torch.randn(1, 1, 256 * 40)
    s = stft(y, 1024, 256)[0, :, :40]
    logmag, phase = s.abs().clamp_min(mag.FLOOR).log(), s.angle()
    specs = [(logmag, phase, logmag, phase)]
    full, one = mag.pca_basis(specs, 40), mag.pca_basis(specs, 1)
    assert torch.allclose(mag.project(logmag, *full), logmag, atol=1e-3)
    assert not torch.allclose(mag.project(logmag, *one), logmag, atol=1e-1)
    assert mag.consistency(dec, logmag, phase) < 1e-3
    assert mag.consistency(dec, logmag, torch.rand_like(phase) * 6.28) > 0.3
    with pytest.raises(ValueError, match="fit on lists the corpus speaks"):
        mag.run(mag.MagnitudeGap(out="unused", fit_lists=(1,)))


def test_the_report_reads_the_recorded_gate_and_magnitude_study():
    """Notebook 04's sections 6f and 6g read the committed records: the gate's table names every arm with its
    discriminators' rate as written (1e-4, not a rounded 0.0), its line says none passed and how close the best came;
    the magnitude table pairs each variant with the teacher, and its line names the rank ceilings."""
    from lib.core import results
    from lib.report import adversary
    gate_dir, mag_dir = (results.RECORDED / "amd-epyc-zen4-2c" / n for n in ("66_adversary_gate", "67_magnitude_gap"))
    table, curve, bounds = adversary.gate(gate_dir)
    assert len(table) == curve["arm"].nunique() >= 5 and "0.0001" in set(table["lr_d"])
    assert bounds["learns"] == gate.LEARNS and not table["passes"].any()
    assert "No arm passes the gate" in adversary.gate_line(table, bounds)
    mag_table = adversary.magnitude(mag_dir)
    p808 = mag_table[mag_table["metric"] == "dnsmos_p808"].set_index("variant")
    assert p808.loc["teacher's magnitude and phase", "value"] == pytest.approx(0.0, abs=1e-3)
    assert p808.loc["student", "hi"] < 0 and p808.loc["student", "n"] == 40
    line = adversary.magnitude_line(mag_table, adversary.consistency(mag_dir))
    assert "rank 192" in line and "none ships" in line
