"""The run of a profile (`tts-lab run`): every numbered notebook through papermill, in order, past failures, then the
report. Above every other package: it may import them all, the report included, and nothing in lib imports it."""
