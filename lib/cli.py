"""`tts-lab`: the lab's command line, in four groups; each command is parsed by tyro straight into the dataclass its
job reads, and its module is imported only when it runs (so `tts-lab --help` answers at once).

    tts-lab voice export --pack outputs/recorded/training/speaker/lora-r8 --out /tmp/lora-r8-voice
    tts-lab speaker folder --folder /tmp/jf_alpha
    tts-lab speaker adapt --work /tmp/full --dataset /tmp/jf_alpha --method full
        --out outputs/recorded/training/speaker/full
    tts-lab train corpus --out ~/.cache/tts-lab/corpus/teacher-49
        --manifest-out outputs/recorded/corpus/teacher-49/manifest.json
    tts-lab train regress-istft --work /tmp/istft --steps 100000 --init-from outputs/recorded/training/istft
    tts-lab train pack --work /tmp/istft --out outputs/recorded/training/istft --device cpu
        --ledger outputs/recorded/training_ledger.csv
    tts-lab study overfit --out outputs/recorded/intel-xeon-amx-2c/30_overfit
    tts-lab study eta default 02_lora_qlora
    tts-lab study probe
    tts-lab study rundiff BEFORE.csv AFTER.csv

The names before the groups (`tts-lab adapt-speaker`, `tts-lab regress-istft`, ...) still run, unlisted.
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro  # light (tens of ms); the commands' modules are what is imported late

_LOGGER = logging.getLogger("tts-lab")

# group -> command -> (module, dataclass, one line for the listing). The dataclass's own docstring is its --help; a
# command whose options live in a light module of their own (its --help loads no runtime) is done by WORK's module.
COMMANDS: dict[str, dict[str, tuple[str, str, str]]] = {
    "lab": {
        "run": ("lib.cli", "RunProfile", "a profile's notebooks in order, then the report (tts-lab run PROFILE)"),
        "runs": ("lib.cli", "Runs", "the long training runs registered here and whether they are paused"),
        "hold": ("lib.cli", "Hold", "run a command while holding the timing lock (long runs pause meanwhile)"),
        "lane": ("lib.cli", "Lane", "run a command as a lane of its own beside the others"),
    },
    "voice": {
        "export": ("lib.cli", "Export", "a packed part or adaptation as a piper voice, spoken once by piper's runtime"),
        "optimize": ("lib.studies.optimize_options", "Optimize",
                     "the fastest variant within the quality bounds here, as a piper voice"),
    },
    "speaker": {
        "folder": ("lib.cli", "SpeakerFolder", "write the default target speaker's LJSpeech folder (Kokoro jf_alpha)"),
        "posterior": ("lib.jobs.speaker_options", "PosteriorRun",
                      "bootstrap the posterior encoder on the teacher's audio"),
        "adapt": ("lib.jobs.speaker_options", "SpeakerRun",
                  "adapt the voice to a speaker's folder (full, LoRA, QLoRA)"),
        "pack": ("lib.cli", "PackSpeaker", "pack an adaptation run: weights, card, curve, env, a ledger row"),
        "ladder": ("lib.cli", "SpeakerLadder", "every rung of the adaptation ladder and its distance from the teacher"),
    },
    "train": {
        "corpus": ("lib.jobs.run_configs", "CorpusRun", "the teacher speaks the corpus students learn from (hours)"),
        "regress": ("lib.jobs.run_configs", "Regress", "a channel-pruned decoder, regression-first"),
        "regress-istft": ("lib.jobs.run_configs", "RegressIstft", "the 5x voice's frame-rate decoder"),
        "regress-hybrid": ("lib.jobs.run_configs", "RegressHybrid", "the teacher-initialised hybrid decoder"),
        "regress-flow": ("lib.jobs.run_configs", "RegressFlow", "the half-width flow"),
        "regress-frontend": ("lib.jobs.run_configs", "RegressFrontend", "the x_low front end"),
        "students": ("lib.jobs.run_configs", "Students", "the adversarial students together (a lent GPU's job)"),
        "pack": ("lib.jobs.run_configs", "Pack", "pack a run's generators with curves, env and ledger rows"),
        "judge-packs": ("lib.jobs.run_configs", "JudgePacks", "judge committed packs' held-out sentences"),
        "bundle": ("lib.jobs.run_configs", "Bundle", "the teacher's weights and phoneme ids for a bare GPU machine"),
    },
    "study": {
        "overfit": ("lib.studies.study_options", "Overfit",
                    "packed students on sentences they trained on and held out"),
        "adaptation-gap": ("lib.studies.study_options", "AdaptationGap",
                           "speaker runs' WER and SECS on recordings they trained on and held out"),
        "adaptation-parts": ("lib.studies.study_options", "AdaptationParts",
                             "speaker runs at their trained timing and with flow and decoder swapped"),
        "alignment": ("lib.studies.study_options", "AlignmentYardstick", "each aligner against true durations"),
        "phase-gap": ("lib.studies.study_options", "PhaseGap",
                      "split frame-rate decoders' gap into magnitude and phase"),
        "magnitude-gap": ("lib.studies.study_options", "MagnitudeGap",
                          "a frame-rate decoder's over-smoothing, bias, rank ceiling and per-bin corrections"),
        "dev-judge": ("lib.studies.study_options", "DevJudge",
                      "decoder packs judged on the development set, paired with their start and the teacher"),
        "ladder-judge": ("lib.studies.study_options", "LadderJudge",
                         "speaker packs on held-out sentences of their rung: WER excess, SECS share, F0 in Hz"),
        "adversary-gate": ("lib.studies.study_options", "AdversaryGate",
                           "adversarial arms' discriminators against chance and their judged change, before hours"),
        "hybrid-timing": ("lib.studies.study_options", "HybridTiming", "untrained hybrid decoders timed in the voice"),
        "step-costs": ("lib.jobs.run_configs", "StepCosts", "time a training step of each recipe on this CPU"),
        "eta": ("lib.cli", "Eta", "how long a profile's notebooks will take on this machine"),
        "probe": ("lib.cli", "Probe", "the back-end registry as this machine sees it"),
        "rundiff": ("lib.cli", "RunDiff", "which result rows moved beyond noise between two runs"),
    },
}
# options class -> the module whose run() does the work, where not its own
WORK = {"Optimize": "lib.studies.optimize", "Overfit": "lib.studies.overfit",
        "AdaptationGap": "lib.studies.adaptation_gap",
        "AdaptationParts": "lib.studies.adaptation_parts", "AlignmentYardstick": "lib.studies.alignment",
        "PhaseGap": "lib.studies.phase_gap", "MagnitudeGap": "lib.studies.magnitude_gap",
        "DevJudge": "lib.studies.dev_judge", "LadderJudge": "lib.studies.ladder_judge",
        "AdversaryGate": "lib.studies.adversary_gate", "HybridTiming": "lib.studies.hybrid_timing",
        "StepCosts": "lib.jobs.step_costs"}

# The names before the groups, kept so that every recorded command still runs.
ALIASES = {"run": ("lab", "run"),
           "export": ("voice", "export"), "optimize": ("voice", "optimize"), "speaker-folder": ("speaker", "folder"),
           "posterior": ("speaker", "posterior"), "adapt-speaker": ("speaker", "adapt"),
           "pack-speaker": ("speaker", "pack"),
           **{name: ("train", name) for name in COMMANDS["train"] if name != "corpus"},
           "corpus": ("train", "corpus"),
           **{name: ("study", name) for name in COMMANDS["study"]}}


@dataclass
class RunProfile:
    """Run a profile's numbered notebooks through papermill, in order and past failures, then render the report:
    outputs/PROFILE/report.html, the executed notebooks in outputs/PROFILE/notebooks/ with run.log, eta.json and
    run_status.json. It says its estimate first; long training runs on this machine pause while it runs."""
    profile: tyro.conf.Positional[str]  # a folder of params/: smoke, default, full, or your own copy of one
    notebooks: tyro.conf.Positional[list[str]] = field(default_factory=list)  # numbers (02 90); all when empty
    only: list[str] = field(default_factory=list)  # the same as the numbers after the profile
    start: Annotated[str, tyro.conf.arg(name="from")] = ""  # resume: this number and the ones after it
    skip: list[str] = field(default_factory=list)  # numbers left out (their earlier results stay)
    timeout_s: int = 3600  # the longest one cell may run


@dataclass
class Runs:
    """The long training runs registered on this machine, each with its state (running, or paused for a timing)."""


@dataclass
class Hold:
    """Run a command while holding the machine's timing lock, so that long training runs pause until it ends:
    tts-lab lab hold -- CMD [ARG ...]"""
    command: tyro.conf.Positional[list[str]]  # the command and its arguments (after --)


@dataclass
class Lane:
    """Run a command as a lane of its own: beside other lanes, each timing in one stops the others meanwhile:
    tts-lab lab lane -- CMD [ARG ...]"""
    command: tyro.conf.Positional[list[str]]  # the command and its arguments (after --)


@dataclass
class Eta:
    """Say how long a profile's notebooks will take on this machine (a few seconds of calibration)."""
    profile: tyro.conf.Positional[str]  # a folder of params/: smoke, default, full, ...
    notebooks: tyro.conf.Positional[list[str]] = field(default_factory=list)  # notebook names; all where empty
    json: str = ""  # also write {notebook: estimated seconds} here
    # estimate every recorded run of the profile from those before it instead, and write the table here (CSV)
    backtest: str = ""


@dataclass
class Probe:
    """The back-end registry as this machine sees it: each back-end available, or absent with its reason."""


@dataclass
class RunDiff:
    """Which result rows of one notebook moved between two runs by more than their metric's noise."""
    before: tyro.conf.Positional[Path]  # the earlier run's results.csv
    after: tyro.conf.Positional[Path]  # the later run's results.csv
    out: str = ""  # also write the table as CSV here


@dataclass
class SpeakerFolder:
    """Write the default target speaker's LJSpeech folder (Kokoro-82M jf_alpha reading Harvard lists 11-31)."""
    folder: str  # where the folder (wavs/ + metadata.csv) is written
    threads: int = 2  # ONNX Runtime threads for Kokoro
    # Harvard lists in reading order (11-31 when empty; last 10 clips validate)
    lists: list[int] = field(default_factory=list)
    timed: bool = False  # through Kokoro's graph with its durations: the folder keeps the true ones (durations.json)
    speaker: str = "jf_alpha"  # a Kokoro-82M speaker: jf_alpha (the target), jf_gongitsune, jf_nezumi, jm_kumo, ...
    # a rung of the adaptation ladder by name (teacher, teacher+4st, teacher+8st, teacher+12st, jm_kumo,
    # jm_kumo~jf_alpha, jf_alpha) in place of --speaker: the folder, then its distance from the teacher (distance.json)
    rung: str = ""
    # with --rung: the teacher's own folder of the same sentences, made where missing (empty: <folder>/../teacher)
    teacher_folder: str = ""
    distance_clips: int = 20  # with --rung: clips its distance is measured on


@dataclass
class SpeakerLadder:
    """Make the adaptation ladder's target speakers (LJSpeech folders, kept once written) and measure each one's
    distance from the teacher: SECS to its clips and pYIN's F0 in Hz."""
    root: str  # the rungs' folders are written here, each named as its rung
    out: str  # the distances as CSV (env.json beside it)
    rungs: list[str] = field(default_factory=list)  # rung names (all when empty): teacher, teacher+4st, ... jf_alpha
    lists: list[int] = field(default_factory=list)  # Harvard lists read (11-31 when empty)
    clips: int = 20  # clips each distance is measured on
    threads: int = 2  # the voices' threads


@dataclass
class PackSpeaker:
    """Pack an adaptation run's latest state (weights, card, curve, env) with a ledger row."""
    work: str  # the adaptation run's folder (tts-lab speaker adapt --work)


@dataclass
class Export:
    """Export packed parts (a decoder, flow and front end together) or an adaptation as a piper voice named as piper
    names voices (<lang>_<REGION>-<name>-<quality>.onnx + .onnx.json) with its card (README.md), and speak it once
    with piper's runtime. The 5x voice is three packs:
    --pack outputs/recorded/training/istftcorpusadv/istft192x6-adv --pack outputs/recorded/training/flow96/flow96
    --pack outputs/recorded/training/fe96varied/fe96-varied"""
    # required: a packed folder (outputs/recorded/training/<work>/<run>); repeat it for a decoder, flow and front end
    pack: tyro.conf.UseAppendAction[list[str]]
    out: str  # the folder the voice and its card are written to (an earlier export's files there are replaced)
    voice: str = ""  # the base voice the packs were trained from: a piper .onnx with its .onnx.json ('': the lab's)
    name: str = ""  # what the voice's name adds to the base's (en_US-joe_<name>-medium); '': the packs' run names
    # also the folder sherpa-onnx (phones, a Raspberry Pi, its bindings) loads: <out>/sherpa-onnx/ with the model's
    # metadata, tokens.txt and espeak-ng-data, spoken once by sherpa-onnx as the check
    sherpa: bool = False
    # also the streaming pair notebook 05 times: <out>/streaming/ with text -> latents and a fixed-window latents ->
    # audio decoder (explicit noise, no random op), and streaming.json saying how to call them
    streaming: bool = False


def listing() -> str:
    """The top-level help: every group and command with its one line."""
    lines = [__doc__.split("\n\n")[0], "",
             "usage: tts-lab GROUP COMMAND [OPTIONS]   (tts-lab GROUP COMMAND --help)", ""]
    for group, commands in COMMANDS.items():
        lines.append(f"{group}:")
        lines += [f"  {name:<18}{line}" for name, (_, _, line) in commands.items()]
    return "\n".join(lines)


def resolve(argv: list[str]) -> tuple[str, str, list[str]]:
    """(group, command, the rest of argv) of a command line that names its group or uses an older flat name; the
    listing (or a group's) where it names no command, and an error naming what it asked for where that is none."""
    if argv and argv[0] in ALIASES:
        return (*ALIASES[argv[0]], argv[1:])
    if len(argv) >= 2 and argv[0] in COMMANDS and argv[1] in COMMANDS[argv[0]]:
        return argv[0], argv[1], argv[2:]
    helps = ([], ["-h"], ["--help"])
    if argv[:1] in helps:
        print(listing())  # the command's output
        raise SystemExit(0)
    if argv[0] in COMMANDS and argv[1:] in helps:
        print("\n".join([f"usage: tts-lab {argv[0]} COMMAND [OPTIONS]", ""] +
                        [f"  {n:<18}{line}" for n, (_, _, line) in COMMANDS[argv[0]].items()]))
        raise SystemExit(0)
    raise SystemExit(f"tts-lab: no command {' '.join(argv[:2])!r}\n\n{listing()}")


def config_class(group: str, name: str) -> type:
    """The dataclass of a command, its module imported now."""
    module, attr, _ = COMMANDS[group][name]
    return getattr(importlib.import_module(module), attr)


def parse(argv: list[str]):
    """The command line parsed into its command's dataclass (tyro: --help, usage errors and exit codes)."""
    group, name, rest = resolve(list(argv))
    cls = config_class(group, name)
    return tyro.cli(cls, args=rest, prog=f"tts-lab {group} {name}", description=(cls.__doc__ or "").strip())


def run(cmd, command: str = "tts-lab") -> None:
    """Carry out one parsed command, importing what it needs now; a training run or the corpus registers itself so
    that it pauses while anything on the machine is timed."""
    from lib.core.pause import Yielder
    kind = type(cmd).__name__
    if kind in ("RunProfile", "Runs", "Hold", "Lane"):
        raise SystemExit(lab(cmd, command))
    if type(cmd).__module__ == "lib.jobs.run_configs" and kind not in ("CorpusRun", "StepCosts"):
        from lib.jobs import train_job
        train_job.run(cmd, command)
    elif kind == "Eta":
        from lib.jobs import eta
        if cmd.backtest:
            eta.write_backtest(cmd.profile, Path(cmd.backtest))
        else:
            eta.report(cmd.profile, cmd.notebooks, cmd.json)
    elif kind == "Probe":
        from lib.runtimes import backends
        print(backends.probes_frame(backends.probe_all()).to_string())  # the command's output: a table on stdout
    elif kind == "RunDiff":
        from lib.report import rundiff
        if rundiff.show(cmd.before, cmd.after, Path(cmd.out) if cmd.out else None):
            raise SystemExit(2)
    elif kind == "SpeakerLadder":
        from lib.core.results import atomic_write_text, write_env
        from lib.harness import bench
        from lib.jobs import speaker_job, speaker_ladder
        table = speaker_ladder.ladder(Path(cmd.root), cmd.rungs, speaker_job.target_sentences(cmd.lists), cmd.threads,
                                      cmd.clips)
        atomic_write_text(Path(cmd.out), table.to_csv(index=False))
        env = {**bench.environment(threads=cmd.threads), "command": command, "config": vars(cmd)}
        write_env(Path(cmd.out).with_name("env.json"), env)
        _LOGGER.info("wrote %s\n%s", cmd.out, table.round(3).to_string())
    elif kind == "SpeakerFolder" and cmd.rung:
        from lib.jobs import speaker_job, speaker_ladder
        sentences = speaker_job.target_sentences(cmd.lists)
        teacher = Path(cmd.teacher_folder or Path(cmd.folder).parent / "teacher")
        speaker_ladder.make_folder(speaker_ladder.Rung(), sentences, teacher, cmd.threads)
        folder = speaker_ladder.make_folder(speaker_ladder.rung(cmd.rung), sentences, Path(cmd.folder), cmd.threads,
                                            teacher)
        _LOGGER.info("speaker folder %s: %s", folder, speaker_ladder.distance(folder, teacher, cmd.distance_clips))
    elif kind == "SpeakerFolder":
        from lib.jobs import speaker_job
        _LOGGER.info("speaker folder: %s", speaker_job.default_speaker_folder(Path(cmd.folder), cmd.threads, cmd.lists,
                                                                             cmd.timed, cmd.speaker))
    elif kind == "PackSpeaker":
        from lib.jobs import speaker_job
        speaker_job.pack_speaker(Path(cmd.work), ledger_path=speaker_job.ledger.LEDGER)
    elif kind == "Export":
        from lib.jobs import export_pack
        result = export_pack.export([Path(p) for p in cmd.pack], Path(cmd.out), voice=cmd.voice, name=cmd.name,
                                    sherpa=cmd.sherpa, streaming=cmd.streaming)
        _LOGGER.info("wrote %s (+ .json); piper's runtime spoke %d samples at %d Hz", result["onnx"], result["samples"],
                     result["sample_rate"])
    elif kind in ("StepCosts", "PhaseGap", "HybridTiming", "AdversaryGate", "MagnitudeGap", "DevJudge",
                  "LadderJudge"):
        importlib.import_module(WORK.get(kind, type(cmd).__module__)).run(cmd)
    elif kind in ("Overfit", "AdaptationGap", "AdaptationParts", "AlignmentYardstick", "Optimize"):
        importlib.import_module(WORK.get(kind, type(cmd).__module__)).run(cmd, command)
    elif kind == "CorpusRun":
        from lib.jobs import corpus_job
        job = Yielder(f"corpus {Path(cmd.out).name}").register()
        try:
            corpus_job.write(cmd)
        finally:
            job.close()
    else:  # the speaker runs
        from lib.jobs import speaker_job
        job = Yielder(f"{kind} {Path(cmd.work).name}").register()
        try:
            (speaker_job.run_posterior if kind == "PosteriorRun" else speaker_job.run_speaker)(cmd)
        finally:
            job.close()


def lab(cmd, command: str) -> int:
    """The lab group's commands: a profile's run, and the machine's lock and lanes; returns the exit status."""
    import subprocess

    from lib.core import lanes, pause
    kind = type(cmd).__name__
    if kind == "Runs":
        for r in pause.runs():
            print(f"{r['name']}: pid {r['pid']}, {r['state']} since {time.ctime(r['since'])}")  # the command's output
        return 0
    if kind in ("Hold", "Lane"):
        with (pause.timing if kind == "Hold" else lanes.lane)(" ".join(cmd.command)[:60]):
            return subprocess.call(cmd.command)
    from lib.pipeline import profile_run
    try:
        plan = profile_run.plan(cmd.profile, [*cmd.notebooks, *cmd.only], cmd.start, cmd.skip, cmd.timeout_s,
                                command)
    except profile_run.RunError as exc:
        _LOGGER.error("%s", exc)
        return 2
    return profile_run.run(plan)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = parse(argv)
    from lib.core import quiet  # the warnings the lab knows to be noise, by name, here and in the processes it starts
    quiet.silence_known()
    os.environ.setdefault("PYTHONWARNINGS", quiet.pythonwarnings())
    try:
        run(cmd, "tts-lab " + " ".join(argv))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"tts-lab: {exc}") from None


if __name__ == "__main__":
    main()
