"""Every environment variable the lab reads, in one place. Each carries something to a process no argument
reaches: a notebook papermill starts, a fresh process the memory probe measures, a job on a lent GPU machine."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Var:
    name: str
    meaning: str

    def get(self, default: str = "") -> str:
        return os.environ.get(self.name) or default


OUTPUTS = Var("TTS_LAB_OUTPUTS", "the outputs folder (default: outputs/; the tests move it)")
RECORDED = Var("TTS_LAB_RECORDED", "the recorded runs' folder (default: outputs/recorded/)")
PARAMS = Var("TTS_LAB_PARAMS", "the profiles' folder (default: params/; the tests move it)")
COMMAND = Var("TTS_LAB_COMMAND", "the run_all.sh command a notebook ran under, kept in its metrics.json")
CACHE = Var("TTS_LAB_CACHE", "the judges' model cache (default: ~/.cache/tts-lab)")
CPU_AS = Var("TTS_LAB_CPU_AS", "act as an older CPU class (avx2) or as this one (native), kernels included")
REQUIRE_QUIET = Var("TTS_LAB_REQUIRE_QUIET", "seconds a timing waits for a quiet machine before it fails")
LOCK_DIR = Var("TTS_LAB_LOCK_DIR", "where the timing lock and the long runs' registry live")
MEASURING = Var("TTS_LAB_MEASURING", "set while a process times: its children time freely")
VOICE = Var("TTS_LAB_VOICE", "your own Piper voice's .onnx (params/<profile>/voice.yaml sets it)")
VOICE_CONFIG = Var("TTS_LAB_VOICE_CONFIG", "its .onnx.json, where it does not sit beside the model")
SPEAKER = Var("TTS_LAB_SPEAKER", "the speaker id of a multi-speaker voice")
TEACHER_BUNDLE = Var("TTS_LAB_TEACHER_BUNDLE", "the teacher bundle a GPU machine without the voice package reads")

VARIABLES = (OUTPUTS, RECORDED, PARAMS, COMMAND, CACHE, CPU_AS, REQUIRE_QUIET, LOCK_DIR, MEASURING,
             VOICE, VOICE_CONFIG, SPEAKER, TEACHER_BUNDLE)
