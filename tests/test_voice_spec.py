"""VoiceSpec: a variant's name is rendered from its parts, never parsed back; the names the result rows carry."""
import pytest

from lib.voices.spec import Part, Source, VoiceSpec

LONG, H100 = Source("cpu-long", 283000, 3.02), Source("h100", 9000, 0.5)


def test_names_render_as_the_results_carry_them():
    dec, flow, fe = (Part("istft192x6-adv", "istft_decoder", 192, LONG), Part("flow96", "flow", 96, LONG),
                     Part("fe96", "frontend", 96, LONG))
    whole = VoiceSpec((fe, dec, flow))  # parts in any order: a name lists decoder, flow, front end
    assert whole.on("ort-cpu").name == "istft192x6-adv+flow96-long+fe96-long@cpu-long-ort"
    assert whole.folder == "istft192x6-adv+flow96-long+fe96-long_at_cpu-long" and whole.device == "cpu-long"
    assert VoiceSpec((flow,)).name == "flow96@cpu-long", "a pack alone is named by itself"
    here = Part("fe96", "frontend", 96)
    assert VoiceSpec((here,)).name == "teacher+fe96", "this run's front end on the teacher's decoder"
    assert VoiceSpec().name == "teacher" and VoiceSpec(backend="ort-cpu").name == "fp32-ort"
    gpu = VoiceSpec((Part("istft256x6", "istft_decoder", 256, H100), Part("flow96", "flow", 96, H100)))
    assert gpu.with_part(here).on("ort-cpu").name == "istft256x6+flow96+fe96@h100-ort"
    scan = VoiceSpec((Part("istft128x6", "istft_decoder", 128, Source(trained=False)), Part("flow96", "flow"), here))
    assert scan.name == "istft128x6+flow96+fe96-untrained"
    mixed = VoiceSpec((Part("dec128-regress", "decoder", 128, LONG), Part("flow96", "flow", 96), here))
    assert mixed.on("ort-cpu").name == "dec128-regress+flow96+fe96@cpu-long-ort"
    assert mixed.with_part(flow).name == "dec128-regress+flow96-long+fe96@cpu-long"


def test_a_spec_is_checked_and_says_where_its_parts_trained():
    with pytest.raises(ValueError, match="one part per role"):
        VoiceSpec((Part("dec64", "decoder"), Part("istft8x1", "istft_decoder")))
    with pytest.raises(ValueError, match="kind"):
        Part("posterior", "posterior_encoder")
    with pytest.raises(ValueError, match="back-end"):
        VoiceSpec(backend="tensorrt")
    p = Part.of_pack({"student": "flow96", "kind": "flow", "build": {"hidden_channels": 96}, "steps": 30500,
                      "hours": 0.8}, "cpu-long")
    assert (p.width, p.source.steps, p.source.hours, p.role) == (96, 30500, 0.8, "flow")


def test_a_verdict_names_its_own_voices_budget():
    """A long pack's voice is judged with its parts' machine-hours (and a GPU phase's device-hours), not with the
    minutes this run trained; this run's parts with their own minutes; the teacher with none."""
    gpu_phase = Part.of_pack({"student": "istft192x6-adv", "kind": "istft_decoder", "build": {"dim": 192},
                              "steps": 283000, "hours": 3.02, "device_hours": 0.13, "device": "NVIDIA H200"},
                             "cpu-long")
    five = VoiceSpec((gpu_phase, Part("flow96", "flow", 96, Source("cpu-long", 30500, 0.80)),
                      Part("fe96", "frontend", 96, Source("cpu-long", 9000, 0.45))))
    said = five.budget({"fe96": 3.0}, "cpu")
    assert said == ("after 3.02 machine-hours on cpu-long + 0.13 device-hours on NVIDIA H200 (decoder) + 0.80 "
                    "machine-hours on cpu-long (flow) + 0.45 machine-hours on cpu-long (frontend) of training")
    mixed = VoiceSpec((Part("dec128-regress", "decoder", 128, LONG), Part("flow96", "flow", 96),
                       Part("fe96", "frontend", 96)))
    assert mixed.budget({"flow96": 2.5, "fe96": 1.0, "dec64": 9.0}, "cpu") == (
        "after 3.02 machine-hours on cpu-long (decoder) + 3.5 minutes on cpu in this run (flow, frontend) of training")
    assert VoiceSpec().budget({"fe96": 3.0}, "cpu") == ""
    untrained = VoiceSpec((Part("istft128x6", "istft_decoder", 128, Source(trained=False)),))
    assert untrained.budget({}, "cpu") == ""
