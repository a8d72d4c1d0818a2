"""Does an adapted voice lose its words because it memorised its folder? (issue 50's cheap signal). A speaker run's
state judged the way its packs are judged (speaker_judge.validation_quality: Whisper's WER and SECS, noise off) on
recordings it trained on and on its validation split, which no step saw. Words kept on the training sentences and
lost on the held-out ones say memorisation, which more recordings cure; words lost on both say the recipe cannot
speak this speaker at all, which no amount of the same data cures. Nothing here trains.

    tts-lab study adaptation-gap --work ~/runs/plain-full-acoustic --out outputs/recorded/<cpu>/<n>_adaptation_wer
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lib.data import ljspeech
from lib.harness import metrics
from lib.jobs import speaker_job, speaker_judge
from lib.studies import common
from lib.studies.study_options import AdaptationGap

_LOGGER = logging.getLogger(__name__)


def judge_run(work: Path, clips: int, threads: int = 1, noise: tuple[float, float] = (0.0, 0.0)) -> list[dict]:
    """Rows (work, steps, split, heldout_wer, heldout_secs, speaker_wer, speaker_self_secs) for the run's latest
    checkpoint on its first `clips` training recordings and on its validation split."""
    run = speaker_job.load_run(work)
    cfg, teacher, prepared, steps = run.cfg, run.teacher, run.prepared, run.steps
    train, val = ljspeech.split(ljspeech.read_folder(Path(cfg.dataset), teacher.sample_rate), cfg.validation)
    if clips > len(train):
        raise ValueError(f"{work}: --clips {clips} but the run trained on {len(train)} recordings")
    asr, voice, rows = metrics.WhisperAsr("base", threads=threads), prepared.merged(), []
    out = Path(cfg.out) if cfg.out else None  # the run as its ledger names it, else its folder
    for split, recs in (("trained on", train[:clips]), ("held out", val)):
        q = speaker_judge.validation_quality(voice, recs, asr, threads=threads, noise_scale=noise[0], noise_w=noise[1])
        rows.append({"work": f"{out.parent.name}/{out.name}" if out else work.name, "folder": work.name,
                     "method": cfg.method, "dataset": Path(cfg.dataset).name,
                     "recordings": len(train), "steps": steps, "noise_scale": noise[0], "noise_w": noise[1],
                     "split": split, "clips": len(recs), **q})
        _LOGGER.info("%s at %d steps, %s: WER %.3f (the speaker's own %.3f), SECS %.3f", work.name, steps, split,
                     q["heldout_wer"], q["speaker_wer"], q["heldout_secs"])
    return rows


def run(cfg: AdaptationGap, command: str = "") -> pd.DataFrame:
    """Judge every run of `cfg`, write gap.csv and env.json into `cfg.out`; returns the frame (WER and SECS on the
    split each row names)."""
    return common.judge_runs("adaptation-gap", cfg, lambda w: judge_run(w, cfg.clips, cfg.threads,
                                                                        (cfg.noise_scale, cfg.noise_w)),
                             "gap.csv", command, rename={"heldout_wer": "wer", "heldout_secs": "secs"})
