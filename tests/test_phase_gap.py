"""Where a frame-rate decoder's gap lives (lib.studies.phase_gap, lib.report.arms.gap_table): the teacher's magnitude
and phase give the teacher's audio back and score as the teacher, an untrained decoder's own spectra far below it,
and the report's line states each swap and the share of the gap the teacher's phase closes."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lib import cli
from lib.report import arms
from lib.studies import phase_gap
from lib.voices import artefacts
from lib.voices.istft_decoder import FrameRateDecoder


def test_the_teachers_spectra_give_its_audio_back_and_the_decoders_own_are_its_output():
    torch.manual_seed(0)
    dec = FrameRateDecoder(8, 16, 1, n_fft=256, hop=64).eval()
    z, y = torch.randn(1, 8, 40), 0.1 * torch.randn(1, 1, 40 * 64)
    with torch.no_grad():
        clips = phase_gap.swapped(dec, z, y)
        own = dec(z)
    assert list(clips) == list(phase_gap.SWAPS) and all(c.shape == y.shape for c in clips.values())
    assert torch.allclose(clips["its own spectra"], own, atol=1e-6)
    assert (clips["the teacher's magnitude and phase"] - y)[..., 256:-256].abs().max() < 1e-4
    for swap in ("the teacher's phase", "the teacher's magnitude"):  # half the teacher's: neither end
        assert (clips[swap] - y).abs().mean() > 1e-3 and (clips[swap] - own).abs().mean() > 1e-4


def test_an_untrained_decoder_with_the_teachers_spectra_scores_as_the_teacher(tmp_path):
    """`tts-lab phase-gap` on a packed, untrained frame-rate decoder: the teacher's spectra score as the teacher, its
    own far below; a pack that is no frame-rate decoder is named, and with none left the command says so."""
    torch.manual_seed(0)
    dec = FrameRateDecoder(192, 16, 1)
    artefacts.save_part(dec, tmp_path / "w" / "istft16x1", "istft_decoder", dec.config)
    with pytest.raises(SystemExit, match="no frame-rate decoder among the packs.*nowhere/x.*cannot be loaded"):
        cli.main(["phase-gap", "--packs", "nowhere/x", "--root", str(tmp_path)])
    out = tmp_path / "gap" / "phase_gap.csv"
    cli.main(["phase-gap", "--packs", "w/istft16x1", "nowhere/x", "--root", str(tmp_path), "--out", str(out),
              "--sentences", "1"])
    frame = pd.read_csv(out)
    assert list(frame.columns) == phase_gap.COLUMNS and len(frame) == len(phase_gap.SWAPS) * len(phase_gap.JUDGES)
    assert (set(frame["decoder"]) == {"w/istft16x1"}
            and "nowhere/x" in json.loads((out.parent / "env.json").read_text())["absent"])
    gap = (frame["value"] - frame["teacher"]).groupby([frame["swap"], frame["metric"]]).mean()
    assert gap["the teacher's magnitude and phase"].abs().max() < 0.05, "the teacher's spectra are the teacher"
    assert gap[("its own spectra", "dnsmos_sig")] < -0.5, "an untrained decoder is far below the teacher"


def test_the_gap_line_states_each_swap_and_the_share_the_teachers_phase_closes():
    rng = np.random.default_rng(0)
    rows = [{"decoder": "istft/regress", "swap": swap, "id": f"h31_{k}", "metric": "dnsmos_sig",
             "value": 3.4 + gap + rng.normal(0, 1e-4), "teacher": 3.4}
            for swap, gap in zip(phase_gap.SWAPS, (-0.30, -0.12, -0.36, 0.0)) for k in range(10)]
    table = arms.gap_table(pd.DataFrame(rows))
    assert list(table["swap"]) == list(phase_gap.SWAPS) and set(table["n"]) == {10}
    assert ((table["lo"] <= table["delta"]) & (table["delta"] <= table["hi"])).all()
    line = arms.gap_lines(table, lambda x, f=".2f": format(x, f))
    assert (line.startswith("\n  - `istft/regress`: with its own spectra -0.30")
            and "with the teacher's phase -0.12" in line)
    assert line.endswith("the teacher's phase closes 60 % of its gap")
    assert arms.gap_lines(table, str, "dnsmos_p808") == "", "a judge not in the table: no line"
    one = arms.gap_table(pd.DataFrame(rows).groupby("swap", sort=False).head(1))  # one sentence: a mean, no interval
    assert one["delta"].notna().all() and one["lo"].isna().all()
    assert "[" not in arms.gap_lines(one, lambda x, f=".2f": format(x, f))
