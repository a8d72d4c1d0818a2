"""What the studies share: a run's artefact and figure folders, where a variant's clip of a sentence lies, and the
training device check."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from lib.core.results import ResultWriter
from lib.harness import evaluate


def folders(writer: ResultWriter) -> tuple[Path, Path]:
    """The run's `artefacts/` (exports, quantized files, checkpoints, students) and `figures/` folders, made if missing."""
    out = writer.dir / "artefacts", writer.dir / "figures"
    for d in out:
        d.mkdir(parents=True, exist_ok=True)
    return out


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
