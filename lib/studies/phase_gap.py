"""Where a frame-rate decoder's distance to the teacher lives, in its magnitudes or in its phases (issue 39): its
held-out audio made again with the teacher's STFT phase, or magnitude, in place of its own, each judged beside the
teacher's own audio of the same latent. A diagnosis of trained packs: nothing here trains, and no score reaches a
loss or a choice."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from lib.core.results import atomic_write_text, write_env
from lib.harness import bench, metrics
from lib.jobs.run_state import LONG_RUN_NOISE, heldout_latents
from lib.voices import teacher_bundle
from lib.voices.artefacts import ArtefactError, load_part
from lib.voices.istft_decoder import stft
from lib.studies.study_options import PhaseGap

# what the decoder's own spectra are swapped for: (its magnitude or the teacher's, its phase or the teacher's)
SWAPS = {"its own spectra": (False, False), "the teacher's phase": (False, True),
         "the teacher's magnitude": (True, False), "the teacher's magnitude and phase": (True, True)}
JUDGES = ("dnsmos_sig", "dnsmos_ovrl", "dnsmos_p808")
COLUMNS = ["decoder", "swap", "id", "metric", "value", "teacher"]
_LOGGER = logging.getLogger(__name__)


def swapped(dec, z: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The frame-rate decoder's waveform for latent z [1, C, T], per SWAPS: its own spectra, or the teacher's (the
    STFT of y at its frames) in place of its magnitude, its phase or both (both gives y back, a check)."""
    logmag, phase = dec.spectra(z)
    target = stft(y, dec.istft.n_fft, dec.hop)[..., : logmag.shape[-1]]
    theirs = (target.abs().clamp_min(1e-5).log(), target.angle())
    return {swap: dec.synthesize(theirs[0] if mag else logmag, theirs[1] if ph else phase)[..., : y.shape[-1]]
            for swap, (mag, ph) in SWAPS.items()}


def of_packs(runs: Sequence[str], root: Path, sentences: int,
             noise: dict = LONG_RUN_NOISE) -> tuple[pd.DataFrame, dict]:
    """phase_gap of the frame-rate decoder packs `root`/<run> with the teacher they learned from (the lab's default
    voice, whatever voice a notebook speaks): (its frame, {run: why it is absent})."""
    decoders, absent = load_decoders(runs, root)
    return phase_gap(teacher_bundle.teacher() if decoders else None, decoders, sentences, noise), absent


def load_decoders(runs: Sequence[str], root: Path) -> tuple[dict, dict]:
    """The frame-rate decoders of packs `root`/<run>: ({run: decoder}, {run: why it is absent})."""
    found, absent = {}, {}
    for run in runs:
        try:
            module, config = load_part(Path(root) / run)
        except ArtefactError as exc:
            absent[run] = f"cannot be loaded: {exc}"
            continue
        if config["kind"] != "istft_decoder":
            absent[run] = f"is a {config['kind']}, not a frame-rate decoder (no spectra to swap)"
            continue
        found[run] = module.eval()
    for run, why in absent.items():
        _LOGGER.warning("phase gap: %s %s", run, why)
    return found, absent


def phase_gap(teacher, decoders: dict, sentences: int, noise: dict = LONG_RUN_NOISE) -> pd.DataFrame:
    """Per decoder (name -> frame-rate decoder), swap, held-out sentence and judge of JUDGES: its score and the
    teacher's own audio's (COLUMNS), on the first `sentences` held-out sentences at the corpus noise the decoders
    trained at (the latents the packs' own held-out judging reads); no decoder, no rows."""
    if not decoders:
        return pd.DataFrame(columns=COLUMNS)
    held, lat = heldout_latents(teacher, noise, sentences)
    dnsmos, rows = metrics.Dnsmos(threads=1), []
    for s, z, y in zip(held, lat.z, lat.wav):
        theirs = dnsmos(y.flatten().numpy(), teacher.sample_rate)
        for name, dec in decoders.items():
            with torch.no_grad():
                clips = swapped(dec, z, y)
            for swap, w in clips.items():
                mine = dnsmos(w.flatten().numpy(), teacher.sample_rate)
                rows += [{"decoder": name, "swap": swap, "id": s.id, "metric": m, "value": mine[m],
                          "teacher": theirs[m]} for m in JUDGES]
    return pd.DataFrame(rows, columns=COLUMNS)


def run(cfg: PhaseGap) -> pd.DataFrame:
    """Judge every pack of `cfg` (phase_gap), write the CSV and env.json (this machine, threads, the config)."""
    torch.set_num_threads(cfg.threads)
    frame, absent = of_packs(cfg.packs, Path(cfg.root), cfg.sentences,
                             {"noise_scale": cfg.noise_scale, "noise_w": cfg.noise_w})
    if frame.empty:
        raise ValueError(f"no frame-rate decoder among the packs: {absent}")
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, frame.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "absent": absent}
    write_env(out.parent / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, frame.assign(gap=frame["value"] - frame["teacher"]).groupby(
        ["decoder", "swap", "metric"], sort=False)["gap"].mean().unstack().round(3).to_string())
    return frame
