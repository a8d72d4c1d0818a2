"""piper's inference settings as numbers, in a module that imports nothing: what a command's options default to
(lib.jobs.speaker_options, lib.jobs.run_configs) without loading a runtime to show its help."""

NOISE_SCALE, LENGTH_SCALE, NOISE_W = 0.667, 1.0, 0.8  # piper's inference scales (its voice configs' defaults)
SCALES = (NOISE_SCALE, LENGTH_SCALE, NOISE_W)  # in the order of piper's ONNX `scales` input
CHUNK_FRAMES, CONTEXT_FRAMES = 64, 16  # streaming: latent frames decoded per chunk, and the context on each side
LONG_RUN_NOISE = {"noise_scale": NOISE_SCALE, "noise_w": NOISE_W}  # the long runs' corpus noise (piper's sampling)
