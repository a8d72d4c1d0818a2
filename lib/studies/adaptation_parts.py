"""Where does an adapted voice lose its words? (issue 50's cheap signals, after adaptation-gap). Nothing here trains:
a speaker run's checkpoint is judged as its packs are (speaker_judge.clips_quality: Whisper's WER, SECS, noise off),
on recordings it trained on and on its validation split, in two ways.
- Timing: spoken by its duration predictor (as it speaks) and at each recording's own durations (what it trained on,
  found as the run found them). Words kept at the trained timing and lost at the predictor's say the timing is the
  fault; lost at both, the acoustic model cannot speak the speaker at all.
- Parts: the adapted flow with the teacher's decoder, and the teacher's flow with the adapted decoder. Which part
  moves SECS and which loses the words says where the fault lives.

    tts-lab study adaptation-parts --work outputs/recorded/training/speaker-infer/full-acoustic \
      --out outputs/recorded/<cpu>/<n>_adaptation_parts
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import pandas as pd
import torch

from lib.core.audio import Audio
from lib.data import ljspeech
from lib.harness import metrics
from lib.jobs import speaker_job, speaker_judge
from lib.studies import common
from lib.training import vits_objective as vo
from lib.voices import piper_torch
from lib.voices import synth as voices
from lib.studies.study_options import AdaptationParts

_LOGGER = logging.getLogger(__name__)

PREDICTOR, RECORDED = "predictor", "recorded"  # the timings: the voice's duration predictor, the recording's own
TEACHER, ADAPTED = "teacher", "adapted"
PART_MIXES = {"adapted flow + teacher decoder": (ADAPTED, TEACHER),  # name: (whose flow, whose decoder)
              "teacher flow + adapted decoder": (TEACHER, ADAPTED)}


def mixed(flow_from: torch.nn.Module, dec_from: torch.nn.Module) -> torch.nn.Module:
    """A copy of `flow_from` whose decoder is `dec_from`'s (the text path and durations stay `flow_from`'s, which
    every acoustic method leaves as the teacher's)."""
    voice = copy.deepcopy(flow_from)
    voice.dec = copy.deepcopy(dec_from.dec)
    return voice.eval()


def judge_run(work: Path, clips: int, threads: int = 1) -> list[dict]:
    """Rows (run, steps, split, voice, timing, wer, secs, speaker_wer, speaker_self_secs) of the run's checkpoint,
    the teacher and the two part mixes, on its first `clips` training recordings and its validation split."""
    run = speaker_job.load_run(work)
    cfg, teacher = run.cfg, run.teacher
    adapted = run.prepared.merged()
    train, val = ljspeech.split(ljspeech.read_folder(Path(cfg.dataset), teacher.sample_rate), cfg.validation)
    if clips > len(train):
        raise ValueError(f"{work}: --clips {clips} but the run trained on {len(train)} recordings")
    models = {TEACHER: teacher.eval(), ADAPTED: adapted}
    models |= {name: mixed(models[f], models[d]) for name, (f, d) in PART_MIXES.items()}
    frontend = voices.PiperFrontend(voices.piper_paths()[1])
    asr, rows, out = metrics.WhisperAsr("base", threads=threads), [], Path(cfg.out) if cfg.out else None
    for split, recs in (("trained on", train[:clips]), ("held out", val)):
        utts = vo.from_recordings(recs, frontend, piper_torch.hop_length(teacher))
        utts = speaker_job.speaker_durations(cfg, teacher, utts)  # as the run found them (the lab's cache)
        for name, model in models.items():
            timings = (PREDICTOR, RECORDED) if name in (TEACHER, ADAPTED) else (PREDICTOR,)
            for timing in timings:
                if timing == PREDICTOR:
                    quiet = voices.load_voice(backend="torch-cpu", module=model, threads=threads, noise_scale=0.0,
                                              noise_w=0.0)
                    spoken = [quiet.synthesize(r.text) for r in recs]
                else:
                    spoken = [Audio(vo.speak_at(model, ids, d), teacher.sample_rate)
                              for ids, d in zip(utts.phonemes, utts.durations)]
                q = speaker_judge.clips_quality(spoken, recs, asr, threads)
                rows.append({"run": f"{out.parent.name}/{out.name}" if out else work.name, "method": cfg.method,
                             "dataset": Path(cfg.dataset).name, "steps": run.steps, "durations": cfg.durations,
                             "split": split, "clips": len(recs), "voice": name, "timing": timing,
                             "wer": q["heldout_wer"], "secs": q["heldout_secs"], "speaker_wer": q["speaker_wer"],
                             "speaker_self_secs": q["speaker_self_secs"]})
                _LOGGER.info("%s, %s, %s timing: WER %.3f (the speaker's own %.3f), SECS %.3f", split, name, timing,
                             q["heldout_wer"], q["speaker_wer"], q["heldout_secs"])
    return rows


def run(cfg: AdaptationParts, command: str = "") -> pd.DataFrame:
    """Judge every run of `cfg`, write parts.csv and env.json into `cfg.out`; returns the frame."""
    return common.judge_runs("adaptation-parts", cfg, lambda w: judge_run(w, cfg.clips, cfg.threads), "parts.csv",
                             command)
