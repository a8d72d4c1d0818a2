"""What builds variants of a voice and never measures them: adaptation, compression, export, distillation and its
students, channel pruning, SpeechT5. Imports core, data, voices and training only."""
