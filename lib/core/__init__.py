"""Signals and bookkeeping every layer uses: text, audio (`Audio`, WAV files, WORLD), the machine (CPU features, load),
params, results (schema, metric registry, atomic files) and what a row is about (subject: the typed identity and
technique), the timing lock (pause). Imports no other lib package."""
