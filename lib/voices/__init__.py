"""The voices and their parts: Piper on ONNX Runtime, OpenVINO or PyTorch and Kokoro (synth), the PyTorch rebuild
(piper_torch), hub voices, the parts registry by kind, saved parts (artefacts). Imports core and data only."""
