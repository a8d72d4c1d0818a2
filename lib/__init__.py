"""tts-lab: measure what LoRA, pruning, quantization, distillation and hardware do to a TTS voice."""
__version__ = "0.1.0"
