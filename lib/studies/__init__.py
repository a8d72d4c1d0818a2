"""The studies: the loops, parsing and row-writing of the notebooks' sections and of the `tts-lab study` commands,
as the few calls their cells and commands make. The top layer: studies may import every package but the report, and
nothing in lib imports a study. Which module serves which:

    notebook 01 baselines             baselines
    notebook 02 lora_qlora            adaptation
    notebook 03 pruning_quantization  compression
    notebook 04 distillation          distillation
    notebook 05 hardware_benchmark    hardware
    tts-lab voice optimize            optimize (its options: optimize_options)
    tts-lab study overfit, adaptation-gap, adaptation-parts, alignment, phase-gap, magnitude-gap, dev-judge,
    ladder-judge, adversary-gate, hybrid-timing: the module of that name (their options: study_options)
    shared by them all: common
"""
