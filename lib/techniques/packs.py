"""The long runs' packs as voices (notebooks 03, 04 and 05 judge them alike): each pack in the teacher in place of
its part, and each long regression-first decoder with a long flow and front end, the whole student voice."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lib.core import results
from lib.techniques import distill
from lib.voices.artefacts import ArtefactError, load_part
from lib.voices.frontend import frontend_of
from lib.voices.spec import ROLE_OF_KIND, Part, VoiceSpec

LONG_ROOT = results.RECORDED / "training"  # where the long CPU runs' packs are committed (<work>/<run>/)


def voice_of(teacher, spec: VoiceSpec, modules: dict):
    """The teacher with the parts of `spec` (`modules`: part -> its module) in place of its own."""
    return distill.with_parts(teacher, **{p.role: modules[p] for p in spec.parts})


def one_part_voices(teacher, runs: Sequence[str], root: Path = LONG_ROOT) -> tuple[dict, dict, dict, dict]:
    """The packs of the long CPU runs (`root`/<work>/<run>/, model.safetensors + config.json) each as the teacher
    with that decoder, flow or front end, named `<run>@cpu-long`: ({name: voice}, {name: reason it is absent},
    {name: config}, {name: spec})."""
    found, absent, info, specs = {}, {}, {}, {}
    for run in runs:
        name = f"{Path(run).name}@{results.LONG_RUN}"
        try:
            module, config = load_part(Path(root) / run, teacher)
        except ArtefactError as exc:
            absent[name] = f"long run {run} cannot be loaded: {exc}"
            continue
        if config["kind"] not in ROLE_OF_KIND:
            absent[name] = f"long run {run} is a {config['kind']}, not a decoder, a flow or a front end"
            continue
        spec = VoiceSpec((Part.of_pack({"student": Path(run).name, **config}, results.LONG_RUN),))
        found[spec.name], info[spec.name], specs[spec.name] = (voice_of(teacher, spec, {spec.parts[0]: module}),
                                                               config, spec)
    return found, absent, info, specs


def whole_voices(long: dict, info: dict, specs: dict, flow=None, flow_part: Part | None = None, fe=None,
                      fe_part: Part | None = None) -> tuple[dict, dict]:
    """Each long regression-first decoder of `long` (one_part_voices' voices, configs `info` and `specs`) as a whole
    student voice: with the first long flow run's flow, else `flow` (`flow_part`, this run's), and the first long
    front-end run's front end, else `fe` (`fe_part`); for a frame-rate decoder that is the 5x voice (none where
    neither a long run nor this run gives a flow and a front end). With a long flow, each long HiFi-GAN decoder also
    joins it under the teacher's front end: the long runs' parts alone (a minutes-trained front end stays out of
    their verdict). Returns ({name: voice}, {name: spec})."""
    flows = [n for n, c in info.items() if c["kind"] == "flow"]
    fes = [n for n, c in info.items() if c["kind"] == "frontend"]
    if flows:
        flow, flow_part = long[flows[0]].flow, specs[flows[0]].parts[0]
    if fes:
        fe, fe_part = frontend_of(long[fes[0]]), specs[fes[0]].parts[0]
    decoders = [n for n, c in info.items()
                if str(c.get("recipe", "")).startswith("regression-first")
                and c["kind"] in ("decoder", "istft_decoder")]
    whole = decoders if flow_part is not None and fe_part is not None else []
    made = {specs[n].with_part(flow_part).with_part(fe_part): (long[n], dict(flow=flow, frontend=fe)) for n in whole}
    if flows:
        made.update({specs[n].with_part(flow_part): (long[n], dict(flow=flow))
                     for n in decoders if info[n]["kind"] == "decoder"})
    return ({sp.name: distill.with_parts(voice, **swap) for sp, (voice, swap) in made.items()},
            {sp.name: sp for sp in made})


def long_run_voices(teacher, runs: Sequence[str]) -> tuple[dict, dict, dict]:
    """The voices notebook 04 makes of the long runs' packs `runs` alone, under the names it judges them by: each
    pack in the teacher (one_part_voices) and each long regression-first decoder's whole voice with the long flow
    and front end among `runs` (whole_voices, no part of a run of notebook 04). Returns ({name: voice},
    {name: reason it is absent}, {name: spec})."""
    long, absent, info, specs = one_part_voices(teacher, runs)
    whole, whole_specs = whole_voices(long, info, specs)
    return {**long, **whole}, absent, {**specs, **whole_specs}
