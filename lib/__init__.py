"""tts-lab: measure what LoRA, pruning, quantization, distillation and hardware do to a TTS voice."""
__version__ = "0.1.0"

import logging as _logging

from lib.core.machine import apply_cpu_as as _apply_cpu_as

# bitsandbytes logs on every import that its optional "kernels-community" CPU kernels are absent: said once in
# notebook 02 (the NF4 kernel check), not on every run
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
# faster-whisper logs every clip's duration at INFO: one line per judged clip in a run's log, none of them a finding
_logging.getLogger("faster_whisper").setLevel(_logging.WARNING)

_apply_cpu_as()  # TTS_LAB_CPU_AS=avx2: act as an AVX2-only CPU, kernels included, before torch loads through lib

# The names a user's own script needs, importable from `lib` itself and kept here when modules move. Resolved on
# first use (PEP 562): importing lib must not load torch for a script that only reads results.
PUBLIC = {
    "load_voice": ("lib.voices.synth", "load_voice"),  # a voice by name and back-end: .synthesize(text) -> Audio
    "load_piper_torch": ("lib.voices.piper_torch", "load_piper_torch"),  # piper's SynthesizerTrn from an .onnx
    "load_adapted_voice": ("lib.techniques.speaker_adapt", "load"),  # a teacher adapted by a packed adapter/voice
    "export_pack": ("lib.jobs.export_pack", "export"),  # packs as one model.onnx + model.onnx.json, spoken once
    "read_speaker_folder": ("lib.data.ljspeech", "read_folder"),  # an LJSpeech folder's recordings
    "judge": ("lib.harness.judges", "judge"),  # DNSMOS and ASR of clips
    "load_results": ("lib.core.results", "load_results"),  # a profile's result rows
}


def __getattr__(name: str):
    if name not in PUBLIC:
        raise AttributeError(f"module 'lib' has no attribute {name!r}")
    import importlib
    module, attr = PUBLIC[name]
    return getattr(importlib.import_module(module), attr)
