"""`tts-lab`: the lab's command line, each subcommand parsed by tyro straight into the dataclass its job reads.

    tts-lab speaker-folder --folder /tmp/jf_alpha
    tts-lab posterior --work /tmp/posterior --out outputs/recorded/training/posterior/joe-medium
    tts-lab adapt-speaker --work /tmp/full --dataset /tmp/jf_alpha --method full --out outputs/recorded/training/speaker/full
    tts-lab pack-speaker --work /tmp/full
    tts-lab export --pack outputs/recorded/training/speaker/lora-r8 --out /tmp/lora-r8-voice
    tts-lab corpus --out ~/.cache/tts-lab/corpus/teacher-49 --manifest-out outputs/recorded/corpus/teacher-49/manifest.json
    tts-lab regress-istft --work /tmp/istft --steps 100000 --init-from outputs/recorded/training/istft
    tts-lab step-costs --out outputs/step_costs/step_costs.csv
    tts-lab phase-gap --packs istft/istft192x6-regress istftadv/istft192x6-adv --out outputs/phase_gap/phase_gap.csv
    tts-lab pack --work /tmp/istft --out outputs/recorded/training/istft --device cpu --ledger outputs/recorded/training_ledger.csv
    tts-lab eta default 02_lora_qlora          tts-lab probe          tts-lab rundiff BEFORE.csv AFTER.csv
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Union

import tyro

from lib.core.pause import Yielder
from lib.jobs import corpus_job, eta, export_pack, run_configs, speaker_job, step_costs, train_job
from lib.report import rundiff
from lib.runtimes import backends
from lib.studies import phase_gap

_LOGGER = logging.getLogger("tts-lab")


@dataclass
class Eta:
    """Say how long a profile's notebooks will take on this machine (a few seconds of calibration)."""
    profile: tyro.conf.Positional[str]
    notebooks: tyro.conf.Positional[list[str]] = field(default_factory=list)
    json: str = ""  # also write {notebook: estimated seconds} here


@dataclass
class Probe:
    """The back-end registry as this machine sees it: each back-end available, or absent with its reason."""


@dataclass
class RunDiff:
    """Which result rows of one notebook moved between two runs by more than their metric's noise."""
    before: tyro.conf.Positional[Path]
    after: tyro.conf.Positional[Path]
    out: str = ""  # also write the table as CSV here


@dataclass
class SpeakerFolder:
    """Write the default target speaker's LJSpeech folder (Kokoro-82M jf_alpha reading Harvard lists 11-31)."""
    folder: str
    threads: int = 2
    lists: list[int] = field(default_factory=list)  # Harvard lists in reading order (11-31 when empty; last 10 clips validate)


@dataclass
class PackSpeaker:
    """Pack an adaptation run's latest state (weights, card, curve, env) with a ledger row."""
    work: str


@dataclass
class Export:
    """Export a packed part or adaptation as model.onnx + model.onnx.json and speak once with piper's runtime."""
    pack: str
    out: str


Command = Union[
    Annotated[SpeakerFolder, tyro.conf.subcommand("speaker-folder")],
    Annotated[speaker_job.PosteriorRun, tyro.conf.subcommand("posterior")],
    Annotated[speaker_job.SpeakerRun, tyro.conf.subcommand("adapt-speaker")],
    Annotated[PackSpeaker, tyro.conf.subcommand("pack-speaker")],
    Annotated[Export, tyro.conf.subcommand("export")],
    Annotated[corpus_job.CorpusRun, tyro.conf.subcommand(corpus_job.CorpusRun.NAME)],
    Annotated[Eta, tyro.conf.subcommand("eta")],
    Annotated[Probe, tyro.conf.subcommand("probe")],
    Annotated[RunDiff, tyro.conf.subcommand("rundiff")],
    Annotated[step_costs.StepCosts, tyro.conf.subcommand(step_costs.StepCosts.NAME)],
    Annotated[phase_gap.PhaseGap, tyro.conf.subcommand(phase_gap.PhaseGap.NAME)],
    *(Annotated[job, tyro.conf.subcommand(job.NAME)] for job in run_configs.JOBS),
]


def run(cmd, command: str = "tts-lab") -> None:
    """Carry out one parsed command; a training run registers itself so that it pauses while anything is timed."""
    if isinstance(cmd, run_configs.JOBS):
        train_job.run(cmd, command)
    elif isinstance(cmd, Eta):
        eta.report(cmd.profile, cmd.notebooks, cmd.json)
    elif isinstance(cmd, Probe):
        print(backends.probes_frame(backends.probe_all()).to_string())  # the command's output: a table on stdout
    elif isinstance(cmd, RunDiff):
        if rundiff.show(cmd.before, cmd.after, Path(cmd.out) if cmd.out else None):
            raise SystemExit(2)
    elif isinstance(cmd, SpeakerFolder):
        _LOGGER.info("speaker folder: %s", speaker_job.default_speaker_folder(Path(cmd.folder), cmd.threads, cmd.lists))
    elif isinstance(cmd, PackSpeaker):
        speaker_job.pack_speaker(Path(cmd.work), ledger_path=speaker_job.ledger.LEDGER)
    elif isinstance(cmd, step_costs.StepCosts):
        step_costs.run(cmd)
    elif isinstance(cmd, phase_gap.PhaseGap):
        phase_gap.run(cmd)
    elif isinstance(cmd, corpus_job.CorpusRun):
        job = Yielder(f"corpus {Path(cmd.out).name}").register()  # it pauses while anything is timed, as a run does
        try:
            corpus_job.write(cmd)
        finally:
            job.close()
    elif isinstance(cmd, Export):
        result = export_pack.export(Path(cmd.pack), Path(cmd.out))
        _LOGGER.info("wrote %s (+ .json); piper's runtime spoke %d samples at %d Hz", result["onnx"], result["samples"],
                     result["sample_rate"])
    else:
        job = Yielder(f"{type(cmd).__name__} {Path(cmd.work).name}").register()
        try:
            (speaker_job.run_posterior if isinstance(cmd, speaker_job.PosteriorRun) else speaker_job.run_speaker)(cmd)
        finally:
            job.close()


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = tyro.cli(Command, args=argv, description=__doc__.split("\n\n")[0])
    try:
        run(cmd, "tts-lab " + " ".join(argv))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"tts-lab: {exc}") from None


if __name__ == "__main__":
    main()
