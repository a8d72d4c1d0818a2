"""The study's quality bounds as numbers, in a module that imports nothing: lib.core.bounds judges against them, and
a command's options default to them without loading pandas to show its help."""

MAX_DNSMOS_DROP = 0.10  # the study's quality bounds against the parent (notebooks 03-05, the report, optimize)
MAX_WER_INCREASE = 0.02
ADAPTATION_WER_MARGIN = 0.05  # an adapted voice's WER bound: the speaker's own WER plus this (issue 50's targets)
