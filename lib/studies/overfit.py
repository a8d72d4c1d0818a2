"""How far the packed students fall from the teacher on sentences they trained on against sentences no step touched
(issue 49, item 1): each pack judged on TRAIN_SENTENCES (the first sentence of each corpus list, 11-30) and on
HELDOUT_SENTENCES (all of list 31, then the first sentence of each judged list, 1-10), with the ledger's held-out
mel L1 and judges, at the long runs' corpus noise. A diagnosis of trained packs: nothing here trains, and no score
reaches a loss or a choice.

Each split is drawn as run_state draws its held-out list: one draw per sentence at LONG_RUN_NOISE from one fixed
seed (DRAW_SEED) over the split in order, so the list-31 clips are the very clips the ledger and its judged file
score. The training sentences' draws are NOT the draws the runs trained on (those came from seeds 0, 1, ... per
draw over the whole corpus): the text, durations and teacher are the training ones, the noise sample is new. A
front end is judged as run_state.frontend_heldout judges it (the teacher's durations, the voice's noise scale, one
prior sample shared with the teacher's own audio)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core import text
from lib.data import corpus_text
from lib.core.results import atomic_write_text, write_env
from lib.harness import bench
from lib.jobs.run_state import CORPUS_LISTS, HELDOUT_LISTS, LONG_RUN_NOISE, _scorer, corpus_text_of, frontend_audio
from lib.techniques import distill
from lib.training import batches
from lib.training.losses import mel_l1
from lib.voices import teacher_bundle
from lib.voices.artefacts import ArtefactError, load_part
from lib.studies.study_options import Overfit

JUDGED_LISTS = list(range(1, 11))  # the notebooks' judged lists: no training step read them
DRAW_SEED = 1000  # run_state's held-out seed: every held-out figure of the ledger is drawn from it
JUDGES = ("dnsmos_sig", "dnsmos_p808", "distillmos")
METRICS = ("mel_l1", *JUDGES)
LOWER_IS_BETTER = {"mel_l1"}
COLUMNS = ["pack", "kind", "split", "id", "metric", "value", "teacher"]
SUMMARY_COLUMNS = ["pack", "metric", "n_train", "n_heldout", "train", "heldout", "gap", "gap_se", "gap_pct",
                   "teacher_train", "teacher_heldout", "gap_vs_teacher"]
_LOGGER = logging.getLogger(__name__)


def first_of(lists: Sequence[int]) -> list[text.Sentence]:
    """The first sentence of each Harvard list of `lists`, in order."""
    return [text.harvard_sentences([li])[0] for li in lists]


def training_sentences() -> list[text.Sentence]:
    """Twenty sentences every long run trained on: the first of each corpus list (11-30)."""
    return first_of(CORPUS_LISTS)


def heldout_sentences() -> list[text.Sentence]:
    """Twenty sentences no long run trained on: the held-out list 31 first (so its clips are the ledger's), then the
    first of each judged list (1-10)."""
    return text.harvard_sentences(HELDOUT_LISTS) + first_of(JUDGED_LISTS)


def split_sentences(corpus: str = "") -> dict[str, list[text.Sentence]]:
    """{'train': training_sentences(), 'heldout': heldout_sentences()}; with a teacher `corpus` folder, the first
    twenty of its Harvard sentences train (the packs learned from that corpus): Harvard sentences on both sides, so
    the gap measures memorisation, not how much harder the corpus's Factbook and templated sentences are."""
    if not corpus:
        return {"train": training_sentences(), "heldout": heldout_sentences()}
    harvard = {s.id for s in text.harvard_sentences(corpus_text.TRAIN_HARVARD)}
    train = [s for s in corpus_text_of(Path(corpus))[0] if s.id in harvard][:20]
    return {"train": train, "heldout": heldout_sentences()}


def decoder_latents(teacher, sentences: Sequence[text.Sentence], noise: dict) -> batches.Latents:
    """The teacher's latents and audio of `sentences`, one draw each at `noise` from DRAW_SEED (heldout_latents on
    any sentence list)."""
    with torch.no_grad():
        return batches.teacher_latents(teacher, teacher_bundle.sentence_ids(sentences), [s.id for s in sentences],
                                       noise_scale=noise.get("noise_scale", 0.0), noise_w=noise.get("noise_w", 0.0),
                                       seed=DRAW_SEED)


def part_audio(teacher, part, kind: str, sentences: Sequence[text.Sentence], noise: dict,
               latents: batches.Latents | None = None) -> tuple[list, list]:
    """(the teacher's audio, the part's) of `sentences` as run_state.heldout_audio makes them: a decoder (or frame-rate
    decoder) on the teacher's latents (`latents`, drawn here when not given), a flow's latents through the teacher's
    decoder from the teacher flow's own prior sample, a front end per frontend_audio."""
    part.eval()
    with torch.no_grad():
        if kind == "frontend":
            return frontend_audio(teacher, part, sentences)
        if kind == "flow":
            pairs = distill.flow_pairs(teacher, teacher_bundle.sentence_ids(sentences),
                                       noise_scale=noise.get("noise_scale", 0.0), noise_w=noise.get("noise_w", 0.0),
                                       draws=1, seed=DRAW_SEED)
            refs = [teacher.dec(z * m) for z, m in zip(pairs.z, pairs.mask)]
            outs = [teacher.dec(part(zp, m, g=None, reverse=True) * m) for zp, m in zip(pairs.z_p, pairs.mask)]
            return refs, outs
        lat = latents if latents is not None else decoder_latents(teacher, sentences, noise)
        return lat.wav, [part(z)[..., : ref.shape[-1]] for z, ref in zip(lat.z, lat.wav)]


def judge_pack(teacher, name: str, part, kind: str, splits: dict[str, list[text.Sentence]], noise: dict,
               judges: tuple = JUDGES, latents: dict | None = None) -> pd.DataFrame:
    """Per split, sentence and metric (mel L1 to the teacher's audio, then `judges`): the pack's value and the
    teacher's own (COLUMNS; the teacher's mel L1 to itself is 0). `latents` ({split: Latents}) spares decoders
    drawing the same teacher latents again."""
    score = _scorer(tuple(judges), teacher.sample_rate)
    rows = []
    for split, sentences in splits.items():
        refs, outs = part_audio(teacher, part, kind, sentences, noise, (latents or {}).get(split))
        for s, r, o in zip(sentences, refs, outs):
            rows.append({"pack": name, "kind": kind, "split": split, "id": s.id, "metric": "mel_l1",
                         "value": float(mel_l1(o, r, teacher.sample_rate)), "teacher": 0.0})
            mine, theirs = score(o.flatten().numpy(), s.text), score(r.flatten().numpy(), s.text)
            rows += [{"pack": name, "kind": kind, "split": split, "id": s.id, "metric": m, "value": mine[m],
                      "teacher": theirs[m]} for m in judges]
        _LOGGER.info("%s: %s judged on %d sentences", name, split, len(sentences))
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per pack and metric of a per-sentence frame (COLUMNS): the means on train and held-out, `gap` signed so that
    positive is worse on held-out (held-out minus train for mel L1, train minus held-out for a judge), its standard
    error (two independent sets of sentences), the gap as a % of the held-out mean, the teacher's means, and
    `gap_vs_teacher`: the same gap of the pack's distance to the teacher (the student's shortfall behind the teacher,
    held-out minus train), which takes out how much harder one set of sentences is than the other."""
    rows = []
    for (pack, metric), g in frame.groupby(["pack", "metric"], sort=False):
        tr, he = g[g["split"] == "train"], g[g["split"] == "heldout"]
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0  # +1: higher is worse
        gap = sign * (he["value"].mean() - tr["value"].mean())
        short = lambda d: sign * (d["value"] - d["teacher"]).mean()  # how far behind the teacher
        se = float(np.sqrt(tr["value"].var(ddof=1) / len(tr) + he["value"].var(ddof=1) / len(he))) \
            if len(tr) > 1 and len(he) > 1 else float("nan")
        rows.append({"pack": pack, "metric": metric, "n_train": len(tr), "n_heldout": len(he),
                     "train": tr["value"].mean(), "heldout": he["value"].mean(), "gap": gap, "gap_se": se,
                     "gap_pct": 100.0 * gap / he["value"].mean() if he["value"].mean() else float("nan"),
                     "teacher_train": tr["teacher"].mean(), "teacher_heldout": he["teacher"].mean(),
                     "gap_vs_teacher": short(he) - short(tr)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def overfit(packs: Sequence[str], root: Path, noise: dict = LONG_RUN_NOISE,
            judges: tuple = JUDGES, corpus: str = "") -> tuple[pd.DataFrame, dict]:
    """judge_pack of each pack `root`/<pack> on split_sentences() against the lab's teacher: (the per-sentence frame,
    {pack: why it is absent})."""
    found, absent = {}, {}
    for name in packs:
        try:
            found[name] = load_part(Path(root) / name)
        except ArtefactError as exc:
            absent[name] = f"cannot be loaded: {exc}"
            _LOGGER.warning("overfit: %s %s", name, absent[name])
    if not found:
        return pd.DataFrame(columns=COLUMNS), absent
    teacher, splits = teacher_bundle.teacher(), split_sentences(corpus)
    latents = {}
    if any(config["kind"] in ("decoder", "istft_decoder") for _, config in found.values()):
        latents = {split: decoder_latents(teacher, sents, noise) for split, sents in splits.items()}
    frames = [judge_pack(teacher, name, module, config["kind"], splits, noise, judges, latents)
              for name, (module, config) in found.items()]
    return pd.concat(frames, ignore_index=True), absent


def run(cfg: Overfit, command: str = "") -> pd.DataFrame:
    """Judge every pack of `cfg` (overfit), write both CSVs and env.json (this machine, threads, the config, the
    sentences of each split, absent packs, the `command`); returns the summary."""
    torch.set_num_threads(cfg.threads)
    frame, absent = overfit(cfg.packs, Path(cfg.root), {"noise_scale": cfg.noise_scale, "noise_w": cfg.noise_w},
                            corpus=cfg.corpus)
    if frame.empty:
        raise ValueError(f"no pack could be loaded: {absent}")
    table = summary(frame)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "overfit_per_sentence.csv", frame.to_csv(index=False))
    atomic_write_text(out / "overfit_summary.csv", table.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "absent": absent, "draw_seed": DRAW_SEED,
           "sentences": {split: [s.id for s in sents] for split, sents in split_sentences(cfg.corpus).items()},
           "command": command}
    write_env(out / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, table[["pack", "metric", "train", "heldout", "gap", "gap_se", "gap_pct",
                                              "gap_vs_teacher"]].round(4).to_string(index=False))
    return table
