"""The shape of lib, enforced: subpackages by role whose imports flow one way (core -> data -> voices -> training ->
techniques -> runtimes -> harness -> jobs; report reads core only), no cycles, only the harness measures. The rules
are written once, as import-linter contracts in pyproject.toml ([tool.importlinter]); import-linter counts the
imports inside functions too, and names the importing module and line of every broken rule."""
import subprocess
import sys
import textwrap
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "lib"
MAX_LINES = 500  # one concern per module, readable in one sitting (issue 14)


def lint(config: Path, cwd: Path, monkeypatch) -> int:
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    return lint_imports(config_filename=str(config), no_cache=True, no_logo=True)


def test_contracts_kept(monkeypatch, capsys):
    code = lint(ROOT / "pyproject.toml", ROOT, monkeypatch)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "0 broken" in out and "Layers" in out and "No import cycles" in out


def test_the_check_can_fail(tmp_path, monkeypatch, capsys):
    """The same kinds of contract on a toy package break on an upward import inside a function and on a cycle."""
    pkg = tmp_path / "toylab_arch"
    for sub in ("core", "techniques", "harness"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "audio.py").write_text("from toylab_arch.core import text\n")
    (pkg / "core" / "text.py").write_text("def f():\n    from toylab_arch.core import audio\n")  # a cycle
    (pkg / "harness" / "metrics.py").write_text("from toylab_arch.core import audio\n")
    (pkg / "techniques" / "compress.py").write_text("def f():\n    from toylab_arch.harness import metrics\n")
    config = tmp_path / "toy.toml"
    config.write_text(textwrap.dedent("""\
        [tool.importlinter]
        root_package = "toylab_arch"

        [[tool.importlinter.contracts]]
        name = "layers"
        type = "layers"
        layers = ["toylab_arch.harness", "toylab_arch.techniques", "toylab_arch.core"]

        [[tool.importlinter.contracts]]
        name = "acyclic"
        type = "acyclic_siblings"
        ancestors = ["toylab_arch"]
        """))
    assert lint(config, tmp_path, monkeypatch) == 1
    out = capsys.readouterr().out
    assert "toylab_arch.techniques.compress -> toylab_arch.harness.metrics (l.2)" in out
    assert "layers BROKEN" in out and "acyclic BROKEN" in out


def test_modules_stay_readable():
    long = {str(p.relative_to(LIB)): n for p in LIB.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_every_subpackage_says_what_it_holds_and_may_import():
    inits = sorted(LIB.glob("*/__init__.py"))
    assert len(inits) >= 9, inits  # core, data, voices, training, techniques, runtimes, harness, jobs, studies, report
    for init in inits:
        doc = (init.read_text().split('"""') + ["", ""])[1]
        assert doc.strip() and "import" in doc.lower(), f"{init.relative_to(ROOT)} needs its two-line docstring"


def test_environment_variables_are_read_in_one_module():
    """Every TTS_LAB_* variable the lab reads is declared in lib.core.env; no other module reads one by name."""
    import re
    from lib.core import env
    reads = re.compile(r"environ(?:\.get\(|\[)\s*[\"']TTS_LAB_")
    offenders = [str(p) for p in LIB.rglob("*.py")
                 if p.name != "env.py" and reads.search(p.read_text())]
    assert not offenders, offenders
    assert len({v.name for v in env.VARIABLES}) == len(env.VARIABLES) and all(v.meaning for v in env.VARIABLES)


def test_the_independence_contract_names_every_study():
    """Issue 52: no study imports another. The contract lists the modules it keeps apart; a new study must join it
    (lib.studies.common is what they share; a `*_options` module holds a command's options apart from its work,
    issue 69 item 3, and imports no study)."""
    import tomllib
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    apart = next(c for c in contracts if c["type"] == "independence")
    studies = {f"lib.studies.{p.stem}" for p in (ROOT / "lib" / "studies").glob("*.py")
               if not p.stem.endswith("_options")} - {"lib.studies.__init__", "lib.studies.common"}
    options = [p for p in (ROOT / "lib" / "studies").glob("*_options.py")]
    assert options and not [p.name for p in options if "from lib.studies" in p.read_text()
                            or "import lib.studies" in p.read_text()]
    assert set(apart["modules"]) == studies


def ruff(*paths: str) -> subprocess.CompletedProcess:
    """ruff with the project's rules ([tool.ruff] in pyproject.toml) on `paths`."""
    return subprocess.run([sys.executable, "-m", "ruff", "check", "--config", str(ROOT / "pyproject.toml"),
                           "--no-cache", "--output-format", "concise", *paths],
                          cwd=ROOT, capture_output=True, text=True)


def test_ruff_finds_nothing_in_lib_and_tests():
    """pyflakes' errors (unused or undefined names), syntax errors and lines longer than a reader sees whole."""
    out = ruff("lib", "tests")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-1000:]


def test_ruff_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f():\n    return undefined_name + " + "1 + " * 40 + "1\n")
    out = ruff(str(bad))
    assert out.returncode == 1 and all(code in out.stdout for code in ("F401", "F821", "E501")), out.stdout


def test_the_probe_scripts_kept_with_their_records_still_name_what_lib_has():
    """Issue 70 item 6: a record's probe script (outputs/recorded/**/*.py) repeats what it measured; every name it
    imports from lib still resolves, so a move in lib that would break it fails here (imported, not run: they
    measure for minutes)."""
    import ast
    import importlib
    import importlib.util
    probes = sorted((ROOT / "outputs" / "recorded").rglob("*.py"))
    assert probes
    missing = []
    for probe in probes:
        for node in ast.walk(ast.parse(probe.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lib":
                module = importlib.import_module(node.module)
                missing += [f"{probe.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                            if not hasattr(module, a.name) and not importlib.util.find_spec(f"{node.module}.{a.name}")]
    assert not missing, missing
