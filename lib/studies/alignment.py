"""A yardstick for alignment (issue 50, item 1): each method of alignment's frames per phoneme against the true ones,
on the teacher's own audio (its actual attention when it speaks the sentence, with its sampling noise on) and on
the `default` target speaker (Kokoro-82M's jf_alpha, whose graph gives its own durations: voices.kokoro_timed).

Methods (harness.durations): MAS on a posterior sample and on the posterior mean, for each bootstrapped posterior
pack named; DTW against the teacher's own noise-free rendition (MFCCs, Whisper's encoder output); Whisper's forced
alignment with the teacher's noise-free durations spread inside each word; and, as the floor an aligner must beat,
`teacher-prior`: the teacher's noise-free durations stretched to the recording's length (it hears nothing of the
audio but its length). Agreement at three levels (harness.durations.units): piper's phonemes, sounds (stress and
length marks joined to their vowel) and words. Sentences: Harvard lists no posterior trained on and no notebook
judges.

    .venv/bin/python -c "from lib.studies import alignment as a; a.run(a.AlignmentYardstick())"
"""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch

from lib.core import text
from lib.core.audio import resample
from lib.core.results import atomic_write_text, write_env
from lib.harness import durations as al
from lib.harness import bench
from lib.training import posterior
from lib.voices import piper_torch
from lib.voices import synth as voices
from lib.voices import teacher_bundle
from lib.studies.study_options import TEACHER, AlignmentYardstick

_LOGGER = logging.getLogger(__name__)

ROW_COLUMNS = ["speaker", "method", "level", "sentence", "correlation", "within_1_frame", "mae_frames", "n", "frames",
               "estimate", "truth"]
SUMMARY_COLUMNS = ["speaker", "method", "level", "correlation", "within_1_frame", "mae_frames", "n", "sentences",
                   "median_sentence_correlation"]


def mas_names(posteriors) -> list[tuple[str, str]]:
    """('mas-sample', 'mas-mean') for the first posterior pack, with '-<pack name>' for the others."""
    tags = ["" if i == 0 else f"-{Path(p).name.removeprefix('joe-medium-')}" for i, p in enumerate(posteriors)]
    return [(f"mas-sample{t}", f"mas-mean{t}") for t in tags]


def run_folder(cfg: AlignmentYardstick) -> Path:
    """`cfg.out`, created."""
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    return Path(cfg.out)


def utterances(cfg: AlignmentYardstick, speaker: str, teacher, sentences, frontend):
    """(sentence, phonemes, ids, audio at the voice's rate in whole frames, true frames per id) of `speaker`."""
    hop, sr = piper_torch.hop_length(teacher), teacher.sample_rate
    kokoro = None
    if speaker != TEACHER:
        from lib.voices.kokoro_timed import KokoroTimed, piper_frames_per_id
        kokoro = KokoroTimed(speaker, threads=cfg.threads)
    for i, s in enumerate(sentences):
        phonemes = frontend.phonemes(s.text)[0]
        ids = frontend.phoneme_ids(s.text)[0]
        if kokoro is None:
            torch.manual_seed(cfg.seed + i)
            with torch.no_grad():
                o, attn, _, _ = teacher.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                              noise_scale=cfg.noise_scale, noise_scale_w=cfg.noise_w)
            yield s, phonemes, ids, o.reshape(-1).numpy(), attn[0, 0].sum(0).numpy()
            continue
        timed = kokoro.speak(s.text)
        if timed.phonemes != phonemes:
            raise ValueError(f"{s.id}: Kokoro spoke other phonemes than piper's for the same text")
        audio = resample(timed.audio, timed.sample_rate, sr)
        n = len(audio) // hop
        truth = piper_frames_per_id(timed, kokoro.voice.vocab, frontend.config.phoneme_id_map, hop, sr, n)
        yield s, phonemes, ids, audio[: n * hop], truth


def estimates(cfg, teacher, encoders, aligner, frontend, text_, phonemes, ids, audio, seed) -> dict:
    """Frames per id of every method for one recording."""
    hop, sr = piper_torch.hop_length(teacher), teacher.sample_rate
    reference, prior = al.teacher_rendition(teacher, ids)
    out = {}
    for (name_sample, name_mean), enc_q in zip(mas_names(cfg.posteriors), encoders):
        out[name_sample] = al.mas_frames(teacher, enc_q, ids, audio, sr, mean=False, seed=seed)
        out[name_mean] = al.mas_frames(teacher, enc_q, ids, audio, sr, mean=True)
    out["dtw-mfcc"] = al.dtw_frames(al.mfcc_features(reference, sr, hop), prior, al.mfcc_features(audio, sr, hop))
    out["dtw-whisper"] = al.dtw_frames(aligner.encoder_features(reference, sr, hop), prior,
                                       aligner.encoder_features(audio, sr, hop))
    out["whisper"] = aligner.frames(audio, sr, text_, phonemes, prior, frontend, hop)
    out["teacher-prior"] = al.spread(len(audio) // hop, prior)
    return out


def yardstick(cfg: AlignmentYardstick) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per speaker, method and sentence; one row per speaker and method, phonemes pooled)."""
    teacher = teacher_bundle.teacher()
    frontend = voices.PiperFrontend(voices.piper_paths()[1])
    encoders = [posterior.load(Path(p), teacher.hparams, teacher).eval() for p in cfg.posteriors]
    aligner = al.WhisperAligner(cfg.whisper, threads=cfg.threads)
    sentences = text.harvard_sentences(cfg.lists)[: cfg.sentences]
    rows, pooled = [], {}
    for speaker in cfg.speakers:
        for i, (s, phonemes, ids, audio, truth) in enumerate(utterances(cfg, speaker, teacher, sentences, frontend)):
            found = estimates(cfg, teacher, encoders, aligner, frontend, s.text, phonemes, ids, audio, cfg.seed + i)
            for level in al.LEVELS:
                slots = al.units(phonemes, level)
                true = al.grouped(al.per_phoneme(truth), slots)
                for method, frames in found.items():
                    est = al.grouped(al.per_phoneme(frames), slots)
                    pooled.setdefault((speaker, method, level), []).append((est, true))
                    rows.append({"speaker": speaker, "method": method, "level": level, "sentence": s.id,
                                 **al.agreement(est, true), "frames": len(audio) // piper_torch.hop_length(teacher),
                                 "estimate": " ".join(f"{v:g}" for v in est),
                                 "truth": " ".join(f"{v:g}" for v in true)})
            _LOGGER.info("alignment yardstick: %s %s done", speaker, s.id)
    frame = pd.DataFrame(rows, columns=ROW_COLUMNS)
    summary = []
    for (speaker, method, level), pairs in pooled.items():
        per = frame[(frame.speaker == speaker) & (frame.method == method) & (frame.level == level)]
        summary.append({"speaker": speaker, "method": method, "level": level,
                        **al.agreement([e for e, _ in pairs], [t for _, t in pairs]),
                        "sentences": len(pairs), "median_sentence_correlation": float(per.correlation.median())})
    return frame, pd.DataFrame(summary, columns=SUMMARY_COLUMNS)




def run(cfg: AlignmentYardstick, command: str = "") -> pd.DataFrame:
    """The yardstick of `cfg`, written to its run folder: alignment_per_sentence.csv, alignment_summary.csv and
    env.json (this machine, threads, the config, the `command`). Returns the summary."""
    torch.set_num_threads(cfg.threads)
    frame, summary = yardstick(cfg)
    folder = run_folder(cfg)
    atomic_write_text(folder / "alignment_per_sentence.csv", frame.to_csv(index=False))
    atomic_write_text(folder / "alignment_summary.csv", summary.to_csv(index=False))
    env = {**bench.environment(threads=cfg.threads), "config": vars(cfg), "command": command,
           "sentences": [s.id for s in text.harvard_sentences(cfg.lists)[: cfg.sentences]]}
    write_env(folder / "env.json", env)
    _LOGGER.info("wrote %s\n%s", folder, summary.round(3).to_string(index=False))
    return summary
