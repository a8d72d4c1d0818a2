"""What the studies share: a run's artefact and figure folders, where a variant's clip of a sentence lies, and the
training device check."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from lib.core import quiet
from lib.core.results import OUTPUTS, ResultWriter, atomic_write_text, write_env
from lib.harness import bench, evaluate
from lib.harness.judges import Judges, worker_count


def folders(writer: ResultWriter) -> tuple[Path, Path]:
    """The run's `artefacts/` (exports, quantized files, checkpoints, students) and `figures/`
    folders, made if missing."""
    out = writer.dir / "artefacts", writer.dir / "figures"
    for d in out:
        d.mkdir(parents=True, exist_ok=True)
    return out


def start(profile: str, notebook: str, *, model: str, threads: int = 1, device: str = "cpu",
          torch_threads: int | None = None) -> tuple[ResultWriter, Path, Path, dict]:
    """A notebook's run begun: its ResultWriter (its rows about `model` unless they name another), `artefacts/` and
    `figures/` folders and the environment its numbers are measured in (`threads` timed, on `device`); torch's own
    threads for the untimed work set to `torch_threads`.
    Library warnings the lab knows to be noise are silenced by name (lib.core.quiet); any other one shows, and so do
    the studies' own log lines, in the cell's output."""
    quiet.silence_known()
    show_study_logs()
    writer = ResultWriter(profile, notebook, model)
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
    return (writer, *folders(writer), bench.environment(threads=threads, device=device))


def show_study_logs() -> None:
    """The studies' INFO lines (what ran, what was skipped and why) to stdout, once: a notebook's cell shows them."""
    studies = logging.getLogger("lib.studies")
    if not any(getattr(h, "_tts_lab_study", False) for h in studies.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._tts_lab_study = True
        studies.addHandler(handler)
    studies.setLevel(logging.INFO)


def judges(profile: str, asr: str | None, workers: int) -> Judges:
    """The judges of a profile's notebooks (ASR `asr`, DNSMOS) in `workers` processes,
    with the profile's score cache."""
    return Judges(asr=asr, workers=worker_count(workers), cache_path=OUTPUTS / profile / "judge_cache.sqlite")


def latents_cache(profile: str) -> Path:
    """Where a profile's notebooks keep the teacher's latents for the sentences they train on (03 and 04 share them)."""
    return OUTPUTS / profile / "teacher_latents"


def clip_path(writer: ResultWriter, variant: str, backend: str, sentence_id: str) -> Path:
    """The WAV the harness wrote for `variant` on `backend` speaking sentence `sentence_id`."""
    return writer.dir / "audio" / evaluate.clip_dir_name(variant, backend) / f"{sentence_id}.wav"


def listening_clips(writer: ResultWriter, variants: Sequence[evaluate.Variant], per_clip: pd.DataFrame,
                    sentence_id: str) -> list[tuple[str, str]]:
    """(variant, wav path) of one sentence for every variant that spoke it (absent variants have no clips)."""
    spoke = set(per_clip["variant"])
    return [(v.name, str(clip_path(writer, v.name, v.backend, sentence_id))) for v in variants if v.name in spoke]


def check_device(device: str) -> None:
    """Refuse a training device this machine does not have, naming it."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device: {device!r} is neither 'cpu' nor 'cuda'")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for, but this machine has no CUDA device")


def judge_runs(name: str, cfg, judge_run, csv_name: str, command: str = "", rename: dict | None = None) -> pd.DataFrame:
    """A study of speaker runs (`cfg.work`, one or more run folders): `judge_run(work folder)`'s rows of each, in one
    frame (columns renamed by `rename`) written to `cfg.out` as `csv_name` with env.json (write_study)."""
    if not cfg.work:
        raise ValueError(f"{name}: name at least one speaker run with --work")
    torch.set_num_threads(cfg.threads)
    frame = pd.DataFrame([r for w in cfg.work for r in judge_run(Path(w).expanduser())]).rename(columns=rename or {})
    write_study(cfg.out, csv_name, frame, cfg, cfg.threads, command)
    return frame


def write_study(out: str | Path, csv_name: str, frame: pd.DataFrame, cfg, threads: int, command: str = "") -> Path:
    """A no-training study's folder: its frame as `csv_name` and env.json (the machine, its config, the command),
    both written atomically; returns the folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / csv_name, frame.to_csv(index=False))
    env = {**bench.environment(threads=threads), "config": vars(cfg), "command": command}
    write_env(out / "env.json", env)
    return out
