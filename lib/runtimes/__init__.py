"""What runs a voice on a back-end: the registry of back-ends with their probes, the benchmark engines and their specs
(the Engine interface itself is lib.voices.engine). Imports core, data, voices, training and techniques (exports)
only."""
