"""The README holds only commands that work (issue 27): every `python -m lib...` it names runs here (with --help, or
for real where it only reads), the set-up commands are the two it promises, CI runs the test one, and what needs a
GPU or the hub says so next to it."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
MODULE = re.compile(r"python3? -m (lib(?:\.\w+)+)((?: [a-z][a-z_-]*)?)")


def readme_module_commands(text: str) -> list[tuple[str, str]]:
    """(module, subcommand or '') of each `python -m lib...` in the text, once each."""
    return sorted({(m, sub.strip()) for m, sub in MODULE.findall(text)})


def fenced_blocks(text: str, lang: str = "bash") -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def test_the_parser_finds_commands():
    text = "run `python -m lib.jobs.train_job pack --work W` or python3 -m lib.jobs.device_launch .devrun"
    assert readme_module_commands(text) == [("lib.jobs.device_launch", ""), ("lib.jobs.train_job", "pack")]


TTS_LAB = re.compile(r"tts-lab ((?:[a-z][a-z-]* ){0,1}[a-z][a-z-]*)")


def test_every_tts_lab_command_in_the_readme_parses(capsys):
    """Each `tts-lab GROUP COMMAND` the README names answers --help (its dataclass loads and tyro builds its usage)."""
    import pytest
    from lib import cli
    named = sorted({m.strip() for m in TTS_LAB.findall(README)} - {"train", "study", "voice", "speaker"})
    runnable = [n for n in named if n.split()[0] in cli.COMMANDS and len(n.split()) == 2]
    assert len(runnable) >= 4, named  # training, packing, rundiff, probe, export, adaptation
    for name in runnable:
        with pytest.raises(SystemExit) as exit_:
            cli.parse([*name.split(), "--help"])
        assert exit_.value.code == 0 and "usage: tts-lab " + name in capsys.readouterr().out, name


def test_every_module_command_in_the_readme_runs():
    commands = readme_module_commands(README)
    assert len(commands) >= 1, commands  # the README names the GPU launch command
    for module, sub in commands:
        args = [sys.executable, "-m", module, *([sub] if sub else []), "--help"]
        proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"README command `{' '.join(args[1:])}` failed:\n{proc.stderr[-1500:]}"
        if "--help" in args:
            assert "usage:" in proc.stdout, f"`{' '.join(args[1:])}` printed no usage"


def setup_commands(text: str) -> list[str]:
    """The set-up-and-run commands: the fenced bash blocks that start with ./setup.sh."""
    return [b.strip() for b in fenced_blocks(text) if b.strip().startswith("./setup.sh")]


def test_the_two_setup_commands_and_ci():
    """Exactly two short set-up-and-run commands for a fresh machine (the main job on `default`, the tests), both
    through setup.sh; .ci/run is the test command and nothing else."""
    setup = setup_commands(README)
    assert len(setup) == 2, setup
    main, tests = setup
    assert main.startswith("./setup.sh && ") and main.endswith("./run_all.sh default"), main
    assert tests.startswith("./setup.sh --tests && ") and tests.endswith("python -m pytest -q tests"), tests
    assert all(len(c) <= 200 for c in setup), [len(c) for c in setup]
    ci = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.startswith(("#", "set ", "cd "))]
    assert ci == [tests]


def test_the_readme_reads_in_five_minutes():
    """The README stays short (10 KB); method details, measurement rules and timing histories live in docs/ and
    outputs/recorded/."""
    assert len((ROOT / "README.md").read_bytes()) <= 10 * 1024


def test_setup_pins_torch_before_the_requirements():
    """setup.sh installs torch==2.13.0 (the CPU build) before requirements.txt, whose other packages would otherwise
    pull an unpinned torch with several GB of CUDA packages."""
    lines = [ln for ln in (ROOT / "setup.sh").read_text().splitlines()
             if "pip install" in ln and not ln.lstrip().startswith("#")]
    first = lambda needle: next(i for i, ln in enumerate(lines) if needle in ln)
    assert first("torch==2.13.0") < first("-r requirements.txt"), lines


def test_what_needs_a_gpu_or_the_hub_says_so():
    """The GPU bench's command sits in the section on GPU runs; the Colab cell runs `full`, which the README says needs
    internet."""
    gpu = README.index("python3 -m lib.jobs.device_launch .devrun lib.jobs.device_run")
    heading = README.rfind("\n## ", 0, gpu)
    assert "GPU" in README[heading:README.index("\n", heading + 1)]
    assert "./run_all.sh full" in README
    colab = README.rfind("\n## ", 0, README.index("./run_all.sh full"))
    assert re.search(r"internet|hub", README[colab:README.index("./run_all.sh full")], flags=re.I)


SHELL = re.compile(r"`((?:\./|python3? |pip |jupyter |cp |git |!)[^`]*)`")
MARKED = re.compile(r"GPU|hub|internet|no test runs it", re.I)


def test_every_other_command_is_run_by_a_test_or_marked():
    """Beyond the module commands (run above) and the two set-up commands: `./run_all.sh` runs in the smoke fixture
    (on `smoke`; a copied profile in test_notebook_files), and any other command in backticks sits in a section or
    paragraph that says it needs a GPU, the hub or internet, or that no test runs it."""
    unmarked = []
    for m in SHELL.finditer(README):
        cmd = m.group(1)
        if MODULE.match(cmd) or re.fullmatch(r"\./run_all\.sh(?: <?\w+>?)*", cmd):
            continue
        heading = README.rfind("\n## ", 0, m.start())
        paragraph = README.rfind("\n\n", 0, m.start())
        where = README[heading:README.index("\n", heading + 1)] + README[paragraph:README.find("\n\n", m.end())]
        if not MARKED.search(where):
            unmarked.append(cmd)
    assert unmarked == [], f"README commands no test runs and nothing marks: {unmarked}"
