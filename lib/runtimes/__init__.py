"""What runs a voice on a back-end: the registry of back-ends with their probes, and the engines. Imports core, data,
voices, training and techniques (exports) only."""
