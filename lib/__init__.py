"""tts-lab: measure what LoRA, pruning, quantization, distillation and hardware do to a TTS voice."""
__version__ = "0.1.0"

from lib.core.machine import apply_cpu_as as _apply_cpu_as

_apply_cpu_as()  # TTS_LAB_CPU_AS=avx2: act as an AVX2-only CPU, kernels included, before torch loads through lib
