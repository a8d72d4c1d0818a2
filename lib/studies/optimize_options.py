"""The options of `tts-lab voice optimize`, in a module light enough that its --help imports no runtime (issue 69
item 3), with the candidates and sentences it defaults to; lib.studies.optimize does the work."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from lib.core.limits import MAX_DNSMOS_DROP, MAX_WER_INCREASE

JUDGED_LISTS = (1, 2, 3, 4, 5, 6)  # held-out Harvard lists (no training step or checkpoint choice touched them): the
# screen's sentences first, then the confirmation's
CALIBRATION_LISTS = (11,)  # the static int8 conversions' calibration text (the students' corpus lists, never judged)
COMPRESSIONS = ("ort-qdq-int8-flow", "ort-dynamic-int8-matmul", "ort-weight-int8-all", "ort-qdq-int8-all")
PACK_SET = "distillation"  # the registry's pack set of the study's best packs of each part (notebook 04's students)

@dataclass
class Optimize:
    """The fastest variant of a piper voice within the quality bounds on this machine (or the smallest, with
    --objective size), written as <out>/<lang>-<name>_<variant>-<quality>.onnx + .onnx.json with a model card
    (README.md) and results.csv; nothing is written as a voice where no candidate beats the voice within them."""
    NAME: ClassVar[str] = "optimize"
    out: str  # the folder the voice, its card, results.csv and optimize.json go to
    voice: str = ""  # a piper .onnx with its .onnx.json beside it ('': the lab's voice, en_US-joe-medium)
    objective: Literal["speed", "size"] = "speed"  # what "best" means among the candidates within the bounds
    compressions: tuple[str, ...] = COMPRESSIONS  # ONNX Runtime int8 conversions tried (names as notebook 03's)
    # committed packs (training/<work>/<run>): each, and their whole voices; another voice's skipped. Empty: the
    # registry's pack set `pack_set` (outputs/recorded/registry.yaml)
    packs: tuple[str, ...] = ()
    pack_set: str = PACK_SET  # the registry's pack set tried where --packs is not given
    sentences: int = 10  # the screen: held-out sentences (Harvard lists 1-6) each candidate speaks noise-free, judged
    confirm_sentences: int = 40  # the confirmation: the next held-out sentences, where the best open candidates decide
    confirm_prose: int = 100  # and the first sentences of real prose (the CIA World Factbook) they are decided on too
    confirm_tries: int = 3  # candidates confirmed, best first, until one is met there
    max_dnsmos_drop: float = MAX_DNSMOS_DROP  # DNSMOS P.808 bound against the voice, per sentence
    max_wer_increase: float = MAX_WER_INCREASE  # WER bound against the voice, per sentence
    asr: str = "whisper-base"  # the ASR judge of WER: whisper-base (offline) or pocketsphinx (cheaper)
    threads: int = 1  # threads each candidate is timed on
    workers: int = 2  # judge processes, one thread each
    repeats: int = 3  # timed passes over the sentences (interleaved across candidates)
    budget_minutes: float = 15.0  # candidates past this estimate are dropped, last first (0: no limit)
