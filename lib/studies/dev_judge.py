"""Decoder packs judged on the development set (Factbook sentences no corpus and no verdict holds), each paired
sentence by sentence with the pack it started from and with the teacher's own audio: whether an arm moved a judge,
the question a gate asks before more hours go to it. Reads packs; the judges choose nothing an arm trains on."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from lib.core.results import atomic_write_text, write_env
from lib.harness import bench
from lib.jobs.run_state import DEV_SET, dev_judged, paired_changes
from lib.studies.study_options import DevJudge

JUDGES = ("dnsmos_p808", "dnsmos_sig", "distillmos", "wer")
_LOGGER = logging.getLogger(__name__)


def run(cfg: DevJudge) -> pd.DataFrame:
    """Judge, pair, write both tables and env.json; returns the paired table."""
    torch.set_num_threads(cfg.threads)
    root, out = Path(cfg.root), Path(cfg.out)
    scores = dev_judged({p: root / p for p in [cfg.start, *cfg.packs]}, cfg.sentences, JUDGES)
    table = paired_changes(scores, cfg.start)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "dev_judged.csv", scores.to_csv(index=False))
    atomic_write_text(out / "dev_paired.csv", table.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "development_set": DEV_SET}
    write_env(out / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, table.round(3).to_string())
    return table
