"""How a speaker run's checkpoint is judged: the adapted voice on the speaker's validation recordings (Whisper's WER,
SECS to the speaker's own recordings) and the checkpoint choice by the targets (the highest SECS within the WER
bound)."""
from __future__ import annotations

import numpy as np

from lib.core.audio import Audio
from lib.harness import metrics
from lib.harness.judges import speaker_similarity
from lib.voices import synth as voices
from lib.voices.cards import WER_MARGIN


def validation_quality(voice, val, asr, threads: int = 1, noise_scale: float = 0.0, noise_w: float = 0.0) -> dict:
    """The adapted voice on the validation transcripts (noise off unless asked): WER (Whisper) and SECS to the
    speaker's own recordings of the same sentences (pairs of different sentences only), with the speaker's own WER
    and ceiling."""
    quiet = voices.load_voice(backend="torch-cpu", module=voice, threads=threads, noise_scale=noise_scale,
                              noise_w=noise_w)
    return clips_quality([quiet.synthesize(r.text) for r in val], val, asr, threads)


def clips_quality(clips: list[Audio], val, asr, threads: int = 1) -> dict:
    """validation_quality of clips already spoken, one per recording of `val`."""
    own = [Audio(r.samples, r.sample_rate) for r in val]
    wer = [metrics.wer_cer(r.text, asr.transcribe(c.samples, c.sample_rate))["wer"] for r, c in zip(val, clips)]
    wer_own = [metrics.wer_cer(r.text, asr.transcribe(r.samples, r.sample_rate))["wer"] for r in val]
    secs, ceiling = speaker_similarity({"adapted": clips}, own, threads=threads)
    return {"heldout_wer": float(np.mean(wer)), "heldout_secs": secs["adapted"], "speaker_wer": float(np.mean(wer_own)),
            "speaker_self_secs": ceiling}


def stale_packs(rows, speaker_wer: float = 0.0) -> int:
    """Ledger rows of one run (oldest first) since the one with the best validation score (against the speaker's
    own validation WER)."""
    scores = [validation_score({"heldout_secs": s, "heldout_wer": w}, speaker_wer)
              for s, w in zip(rows["heldout_secs"], rows["heldout_wer"])]
    return len(scores) - 1 - max(range(len(scores)), key=scores.__getitem__) if scores else 0


def validation_score(judged: dict, speaker_wer: float | None = None) -> tuple[bool, float]:
    """How a checkpoint is chosen on the speaker's validation split, by the targets: one whose WER is within the
    bound (the speaker's own WER, `speaker_wer` or the judged one's, + WER_MARGIN) beats any outside it, and among
    those within, the higher SECS wins; outside it, the lower WER. Compare scores with > or max()."""
    own = judged.get("speaker_wer") if speaker_wer is None else speaker_wer
    bound = (float(own) if own is not None and np.isfinite(own) else 0.0) + WER_MARGIN
    wer = float(judged["heldout_wer"])
    return (True, float(judged["heldout_secs"])) if wer <= bound else (False, -wer)
