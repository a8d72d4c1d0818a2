"""The magnitude part of a frame-rate decoder's gap, without training (issue 66 item 3): per STFT bin, how much the
student's log-magnitudes are over-smoothed (their spread over frames against the teacher's) and biased; the ceiling
its head's rank sets (the teacher's log-magnitudes projected onto 192 dimensions, spoken with the teacher's phase);
how consistent its spectra are (an STFT of its own waveform against the spectra it predicted); and per-bin
corrections that fold into the head's weights at no runtime cost. Statistics are fitted on training sentences
(Harvard lists the corpus speaks), everything is judged on the development set, beside the teacher's own audio."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lib.core import text
from lib.core.results import atomic_write_text, write_env
from lib.harness import bench, metrics
from lib.jobs.run_state import CORPUS_LISTS, DEV_SET, LONG_RUN_NOISE, dev_sentences, heldout_latents
from lib.training.losses import mel_l1
from lib.voices import teacher_bundle
from lib.voices.artefacts import load_part
from lib.voices.istft_decoder import spectra_to_wave, stft
from lib.studies.study_options import MagnitudeGap

FLOOR = 1e-5  # the magnitude floor under every log (the student's head predicts log-magnitudes down to it)
BANDS_HZ = (0, 500, 1000, 2000, 4000, 8000, 11025)  # the per-bin table's summary bands
JUDGES = ("dnsmos_p808", "dnsmos_sig", "distillmos")
_LOGGER = logging.getLogger(__name__)


@torch.no_grad()
def spectra(dec, lat) -> list[tuple]:
    """Per utterance of `lat`: (the student's log-magnitude, its phase, the teacher's log-magnitude, the teacher's
    phase), each [bins, frames] at the student's frames."""
    out = []
    for z, y in zip(lat.z, lat.wav):
        logmag, phase = dec.spectra(z)
        target = stft(y, dec.istft.n_fft, dec.hop)[..., : logmag.shape[-1]]
        out.append((logmag[0].clamp_min(np.log(FLOOR)), phase[0], target[0].abs().clamp_min(FLOOR).log(),
                    target[0].angle()))
    return out


def bin_stats(specs: list[tuple]) -> pd.DataFrame:
    """Per bin over every frame of `specs`: the student's and the teacher's mean and spread of log-magnitude, the
    bias (student minus teacher) and the spread ratio (below 1: over-smoothed)."""
    s = torch.cat([x[0] for x in specs], dim=1)
    t = torch.cat([x[2] for x in specs], dim=1)
    frame = pd.DataFrame({"bin": np.arange(s.shape[0]), "student_mean": s.mean(1).numpy(),
                          "teacher_mean": t.mean(1).numpy(), "student_sd": s.std(1).numpy(),
                          "teacher_sd": t.std(1).numpy()})
    frame["bias"] = frame["student_mean"] - frame["teacher_mean"]
    frame["sd_ratio"] = frame["student_sd"] / frame["teacher_sd"]
    return frame


def pca_basis(specs: list[tuple], rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the mean, the top `rank` principal directions [bins, rank]) of the teacher's log-magnitude frames: the best
    rank-`rank` affine subspace any linear head of that width could reach."""
    t = torch.cat([x[2] for x in specs], dim=1).T.double()
    mean = t.mean(0)
    _, _, v = torch.linalg.svd(t - mean, full_matrices=False)
    return mean, v[:rank].T


def head_span(dec) -> tuple[torch.Tensor, torch.Tensor]:
    """(the head's magnitude bias, an orthonormal basis of its magnitude weights' column space): where this head's
    log-magnitudes can lie."""
    bins = dec.istft.n_fft // 2 + 1
    w, b = dec.head.weight[:bins].double(), dec.head.bias[:bins].double()
    q, _ = torch.linalg.qr(w)
    return b, q


def project(logmag: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Log-magnitudes [bins, frames] projected onto the affine subspace mean + span(basis)."""
    x = logmag.T.double() - mean
    return (x @ basis @ basis.T + mean).T.float()


def corrected(dec, stats: pd.DataFrame, scale: bool):
    """A copy of `dec` whose head's magnitude rows and bias are corrected per bin: the fitted bias removed, and with
    `scale` each bin's spread over frames set to the teacher's (logmag -> teacher mean + k (logmag - student mean),
    k = teacher sd / student sd). Folded into the Linear layer: the voice runs exactly as before."""
    out = copy.deepcopy(dec)
    bins = dec.istft.n_fft // 2 + 1
    k = torch.tensor(stats["teacher_sd"] / stats["student_sd"] if scale else np.ones(len(stats)), dtype=torch.float32)
    mu_s = torch.tensor(stats["student_mean"].to_numpy(), dtype=torch.float32)
    mu_t = torch.tensor(stats["teacher_mean"].to_numpy(), dtype=torch.float32)
    with torch.no_grad():
        out.head.weight[:bins] *= k[:, None]
        out.head.bias[:bins] = k * out.head.bias[:bins] + mu_t - k * mu_s
    return out


def consistency(dec, logmag: torch.Tensor, phase: torch.Tensor) -> float:
    """How far spectra are from any waveform's: || STFT(iSTFT(S)) - S || / || S || over the inner frames."""
    wave = spectra_to_wave(dec.istft, logmag[None], phase[None])
    again = stft(wave, dec.istft.n_fft, dec.hop)[0, :, : logmag.shape[-1]]
    s = torch.polar(logmag.exp(), phase)
    inner = slice(2, logmag.shape[-1] - 2)
    return float((again[:, inner] - s[:, inner]).abs().norm() / s[:, inner].abs().norm())


def variants(dec, pcas: dict[int, tuple], spec: tuple) -> dict[str, torch.Tensor]:
    """The waveforms [1, 1, T] of one utterance's spectra `spec` as each variant of the study speaks it (`pcas`: the
    teacher's principal subspaces by rank)."""
    logmag, phase, t_mag, t_phase = spec
    wave = lambda m, p: spectra_to_wave(dec.istft, m[None], p[None])
    return {"student": wave(logmag, phase),
            "student, teacher's phase": wave(logmag, t_phase),
            **{f"teacher's magnitude, rank {r} (PCA), teacher's phase": wave(project(t_mag, *pca), t_phase)
               for r, pca in pcas.items()},
            "teacher's magnitude in this head's span, teacher's phase": wave(project(t_mag, *head_span(dec)), t_phase),
            "teacher's magnitude and phase": wave(t_mag, t_phase)}


@torch.no_grad()
def study(dec, teacher, fit_sentences: list, judged_sentences: list, ranks: tuple = (),
          noise: dict = LONG_RUN_NOISE) -> tuple:
    """(per-bin statistics fitted on `fit_sentences`, per-clip scores on `judged_sentences`, consistency per clip);
    the rank ceiling at the head's width and at `ranks`."""
    fit = spectra(dec, heldout_latents(teacher, noise, held=fit_sentences)[1])
    stats = bin_stats(fit)
    pcas = {r: pca_basis(fit, r) for r in sorted({dec.head.in_features, *ranks})}
    decs = {"bias corrected": corrected(dec, stats, False), "bias and spread corrected": corrected(dec, stats, True)}
    held, lat = heldout_latents(teacher, noise, held=judged_sentences)
    dnsmos, distill, rows, consist = metrics.Dnsmos(threads=1), metrics.DistillMos(threads=1), [], []
    sr = teacher.sample_rate
    items = list(zip(held, lat.z, lat.wav, spectra(dec, lat)))
    for s, z, y, spec in tqdm(items, desc="magnitude gap", unit="sentence"):
        clips = variants(dec, pcas, spec)
        clips.update({name: d(z) for name, d in decs.items()})
        ref = y.flatten().numpy()
        theirs = {**dnsmos(ref, sr), **distill(ref, sr)}
        for name, w in clips.items():
            w = w[..., : y.shape[-1]]
            a = w.flatten().numpy()
            mine = {**dnsmos(a, sr), **distill(a, sr), "pesq_wb": metrics.pesq_wb(ref, a, sr),
                    "mel_l1": float(mel_l1(w.reshape(1, 1, -1), y, sr))}
            rows += [{"variant": name, "id": s.id, "metric": m, "value": v,
                      "teacher": theirs.get(m, np.nan)} for m, v in mine.items() if m in (*JUDGES, "pesq_wb", "mel_l1")]
        consist.append({"id": s.id, "student": consistency(dec, spec[0], spec[1]),
                        "teacher": consistency(dec, spec[2], spec[3])})
    return stats, pd.DataFrame(rows), pd.DataFrame(consist)


def bands(stats: pd.DataFrame, sample_rate: int, n_fft: int) -> pd.DataFrame:
    """The per-bin table summarised by frequency band (BANDS_HZ): mean bias and spread ratio."""
    hz = stats["bin"] * sample_rate / n_fft
    cut = pd.cut(hz, BANDS_HZ, right=False, labels=[f"{a}-{b} Hz" for a, b in zip(BANDS_HZ, BANDS_HZ[1:])])
    return stats.groupby(cut, observed=True)[["bias", "sd_ratio", "student_sd", "teacher_sd"]].mean().reset_index(
        names="band")


def run(cfg: MagnitudeGap) -> pd.DataFrame:
    """Fit, judge, write the tables and env.json; returns the judged table's means per variant."""
    torch.set_num_threads(cfg.threads)
    if not set(cfg.fit_lists) <= set(CORPUS_LISTS):
        raise ValueError(f"fit_lists {cfg.fit_lists}: fit on lists the corpus speaks ({CORPUS_LISTS[0]}-"
                         f"{CORPUS_LISTS[-1]}), never on a judged one")
    dec, config = load_part(Path(cfg.root) / cfg.pack)
    dec.eval()
    teacher = teacher_bundle.teacher()
    stats, judged, consist = study(dec, teacher, text.harvard_sentences(list(cfg.fit_lists)),
                                   dev_sentences(cfg.sentences), cfg.ranks)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"bins.csv": stats, "bands.csv": bands(stats, teacher.sample_rate, dec.istft.n_fft),
              "judged.csv": judged, "consistency.csv": consist}
    for name, frame in tables.items():
        atomic_write_text(out / name, frame.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "development_set": DEV_SET,
           "pack_steps": config.get("steps")}
    write_env(out / "env.json", env)
    means = judged.assign(gap=judged["value"] - judged["teacher"].fillna(0.0)).pivot_table(  # PESQ, mel: values
        index="variant", columns="metric", values="gap", sort=False)
    _LOGGER.info("wrote %s\n%s\nconsistency %s", out, means.round(3).to_string(), consist.mean(numeric_only=True))
    return means
