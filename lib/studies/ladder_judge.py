"""The ladder judged (issue 68 items 2 and 4): each adapted pack, the unadapted teacher and the rung's own clips on
held-out sentences of the rung (Harvard lists no speaker folder and no verdict holds), sentence by sentence: WER
(Whisper base) with its paired, pooled excess over the rung's own clips against the word bound, SECS to the rung's
own clips (pairs of other sentences) as the share of the way from the teacher to the rung's self-similarity, and
F0 in Hz (pYIN), one scale for every voice. Reads packs; the judges choose nothing a run trains on."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from lib.core import bounds, text
from lib.core.audio import Audio
from lib.core.results import atomic_write_text, write_env
from lib.data import ljspeech
from lib.harness import bench, metrics
from lib.harness.judges import speaker_similarity_per_clip
from lib.jobs import speaker_ladder
from lib.techniques import speaker_adapt
from lib.voices import piper_torch, synth as voices
from lib.voices.cards import WER_MARGIN
from lib.studies.study_options import LadderJudge

OWN, TEACHER = "own", "teacher"  # the rung's own clips and the unadapted voice, beside the packs
HALFWAY = 0.5  # the SECS target: half the way from the teacher to the rung's own self-similarity (issue 68)
_LOGGER = logging.getLogger(__name__)


def pack_rung(pack: Path) -> speaker_ladder.Rung:
    """The rung a speaker pack adapted to: its run config's folder, which `tts-lab speaker folder --rung` named after
    the rung; a ValueError names a pack whose folder is no rung."""
    info = json.loads((pack / "config.json").read_text())
    folder = Path(info.get("run", {}).get("dataset", "")).name
    try:
        return speaker_ladder.rung(folder)
    except ValueError as exc:
        raise ValueError(f"{pack}: adapted to {folder!r}, which is not a rung of the ladder ({exc})") from None


def _clips_of(voice, sentences) -> list[Audio]:
    return [voice.synthesize(s.text) for s in tqdm(sentences, desc="speak", leave=False)]


def judge_rung(rung: speaker_ladder.Rung, packs: dict[str, Path], sentences, folder: Path, teacher, asr,
               threads: int) -> pd.DataFrame:
    """Per-clip rows (variant, id, text, asr_hyp, wer, secs, f0_hz) of the rung's own clips, the teacher and each
    pack on `sentences`, noise off (as the runs validate)."""
    own_recs = ljspeech.read_folder(speaker_ladder.make_folder(rung, sentences, folder, threads=2), teacher.sample_rate)
    own = [Audio(r.samples, r.sample_rate) for r in own_recs]
    spoken = {TEACHER: _clips_of(voices.load_voice(backend="torch-cpu", module=teacher, threads=threads,
                                                   noise_scale=0.0, noise_w=0.0), sentences)}
    for name, pack in packs.items():
        try:
            module = speaker_adapt.load(teacher, pack)
        except (OSError, ValueError) as exc:  # a pack recorded without its weights, say: the others are judged
            _LOGGER.warning("%s cannot be judged: %s", name, exc)
            continue
        spoken[name] = _clips_of(voices.load_voice(backend="torch-cpu", module=module, threads=threads,
                                                   noise_scale=0.0, noise_w=0.0), sentences)
    secs, ceiling = speaker_similarity_per_clip(spoken, own, threads=threads)
    rows = []
    for name, clips in tqdm({OWN: own, **spoken}.items(), desc=f"{rung.name}: Whisper and pYIN", unit="voice"):
        for s, c, sim in zip(sentences, clips, ceiling if name == OWN else secs[name]):
            heard = asr.transcribe(c.samples, c.sample_rate)
            f0 = metrics.f0_hz([c.samples], c.sample_rate)["f0_hz"]
            rows.append({"rung": rung.name, "variant": name, "id": s.id, "text": s.text, "asr_hyp": heard,
                         "wer": metrics.wer_cer(s.text, heard)["wer"], "secs": float(sim), "f0_hz": f0})
    return pd.DataFrame(rows)


def training_clips(info: dict) -> int | None:
    """How many recordings a speaker pack trained on, as its card's `data` says ('200 recordings of the folder ...')."""
    m = re.match(r"(\d+) recordings", str(info.get("data", "")))
    return int(m.group(1)) if m else None


def summary(clips: pd.DataFrame, packs: dict[str, Path]) -> pd.DataFrame:
    """One row per pack: its rung, method, training recordings, steps and machine-hours; WER excess over the rung's
    own clips (pooled, paired, with its interval and verdict against WER_MARGIN); the SECS gain as a share of the
    way from the teacher to the rung's self-similarity (the target: HALFWAY), with the paired margin's interval; F0
    in Hz of the pack, the teacher and the rung's own clips."""
    rows = []
    for name, pack in packs.items():
        info = json.loads((pack / "config.json").read_text())
        if name not in set(clips["variant"]):  # it could not be loaded (judge_rung said why)
            rows.append({"pack": name, "method": info.get("method"), "clips": training_clips(info),
                         "steps": info.get("steps"),
                         "machine_hours": info.get("hours"), "n": 0, "wer_verdict": "not judged",
                         "secs_verdict": "not judged"})
            continue
        c = clips[clips["rung"] == clips.loc[clips["variant"] == name, "rung"].iloc[0]]
        wer = bounds.judge_wer(c, OWN, name, WER_MARGIN)
        by = {v: c[c["variant"] == v].set_index("id") for v in (OWN, TEACHER, name)}
        ids = by[OWN].index
        gain = by[name].loc[ids, "secs"] - by[TEACHER].loc[ids, "secs"]
        way = by[OWN].loc[ids, "secs"] - by[TEACHER].loc[ids, "secs"]
        half = bounds.judge((gain - HALFWAY * way).to_numpy(float), 0.0, True)
        f0 = {v: float(np.exp(np.nanmean(np.log(by[v]["f0_hz"])))) for v in by}
        rows.append({"rung": c["rung"].iloc[0], "pack": name, "method": info.get("method"),
                     "clips": training_clips(info), "steps": info.get("steps"), "machine_hours": info.get("hours"),
                     "n": wer["n"], "wer_own": float(by[OWN]["wer"].mean()), "wer": float(by[name]["wer"].mean()),
                     "wer_excess": wer["mean"], "wer_excess_lo": wer["lo"], "wer_excess_hi": wer["hi"],
                     "wer_verdict": wer["word"], "transcripts_changed": wer["changed"],
                     "secs": float(by[name]["secs"].mean()), "secs_teacher": float(by[TEACHER]["secs"].mean()),
                     "secs_own": float(by[OWN]["secs"].mean()), "secs_share": float(gain.mean() / way.mean()),
                     "secs_half_lo": half["lo"], "secs_half_hi": half["hi"], "secs_verdict": half["word"],
                     "wer_bound": WER_MARGIN,
                     "f0_hz": f0[name], "f0_teacher_hz": f0[TEACHER], "f0_own_hz": f0[OWN]})
    return pd.DataFrame(rows)


def run(cfg: LadderJudge) -> pd.DataFrame:
    """Judge every pack on its rung's held-out sentences, write both tables and env.json; returns the summary."""
    torch.set_num_threads(cfg.threads)
    root, out, heldout = Path(cfg.root), Path(cfg.out), Path(cfg.heldout).expanduser()
    sentences = text.harvard_sentences(cfg.lists)
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    asr = metrics.WhisperAsr("base", threads=cfg.threads)
    by_rung: dict[str, dict[str, Path]] = {}
    rungs = {}
    for p in cfg.packs:
        r = pack_rung(root / p)
        rungs[r.name] = r
        by_rung.setdefault(r.name, {})[p] = root / p
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, packs in by_rung.items():  # each rung's clips kept as it is judged: a later failure loses none of them
        parts.append(judge_rung(rungs[name], packs, sentences, heldout / name, teacher, asr, cfg.threads))
        atomic_write_text(out / "ladder_clips.csv", pd.concat(parts, ignore_index=True).to_csv(index=False))
    clips = pd.concat(parts, ignore_index=True)
    table = summary(clips, {p: root / p for p in cfg.packs})
    atomic_write_text(out / "ladder_judged.csv", table.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "sentences": len(sentences)}
    write_env(out / "env.json", env)
    _LOGGER.info("wrote %s\n%s", out, table.round(3).to_string())
    return table
