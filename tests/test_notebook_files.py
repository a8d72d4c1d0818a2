"""The committed notebooks and profiles, checked without the smoke run (tests/test_notebooks.py runs that): clean
notebooks, short code cells, and profiles named by their folder."""
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_all
from lib.core import params

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(nb):
    import nbformat
    nbformat.validate(nbformat.read(nb, as_version=4))  # e.g. cell ids need nbformat 4.5: papermill warns on each run
    data = json.loads(nb.read_text())
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), f"{nb.name} has outputs"
    assert len([c for c in data["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]) == 1
    assert data["metadata"]["kernelspec"]["name"] == "python3"
    assert data["cells"][0]["cell_type"] == "markdown", "a notebook opens with the question it asks"
    assert "sys.path" not in "".join("".join(c["source"]) for c in code)


MAX_CELL_LINES = 15  # issue 27: a code cell reads at a glance; loops, parsing and row-writing live in lib


def logic_lines(source: str) -> int:
    """Lines of a code cell that do something: blank lines, comments and import statements are not counted."""
    return sum(1 for line in source.splitlines()
               if line.strip() and not line.lstrip().startswith(("#", "import ", "from ")))


def test_logic_lines_counts_what_runs():
    assert logic_lines("import a\nfrom b import c\n\n# note\nx = 1\nfor i in x:\n    print(i)\n") == 3


@pytest.mark.parametrize("nb", [n for n in NOTEBOOKS if n.name[:2] in ("01", "02", "03", "04", "05")],
                         ids=lambda p: p.stem)
def test_code_cells_are_short(nb):
    """Outside the parameters cell, no code cell of 01-05 has more than MAX_CELL_LINES lines of logic."""
    cells = json.loads(nb.read_text())["cells"]
    long = [(i, n) for i, c in enumerate(cells) if c["cell_type"] == "code"
            and "parameters" not in c.get("metadata", {}).get("tags", [])
            and (n := logic_lines("".join(c["source"]))) > MAX_CELL_LINES]
    assert not long, f"{nb.name}: cells (index, lines) longer than {MAX_CELL_LINES} lines: {long}"


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_setup_cells_are_short(nb):
    """The setup cell (the first code cell after the parameters) is at most MAX_CELL_LINES lines, imports included:
    a few imports and a few calls into lib."""
    cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    lines = "".join(cells[1]["source"]).splitlines()
    assert len(lines) <= MAX_CELL_LINES, f"{nb.name}: its setup cell has {len(lines)} lines"


def test_a_copied_profile_writes_its_own_outputs(tmp_path):
    """params/smoke copied to params/mine: the folder names the profile, so the run writes under outputs/mine and
    leaves outputs/smoke alone (one cheap notebook is enough to show it)."""
    shutil.copytree(ROOT / "params" / "smoke", tmp_path / "params" / "mine")
    proc = run_all(tmp_path / "out", tmp_path / "params", profile="mine", pick=("06",))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    m = json.loads((tmp_path / "out" / "mine" / "06_listening_test" / "metrics.json").read_text())
    assert m["parameters"]["profile"] == "mine" and m["command"] == "./run_all.sh mine 06"
    assert not (tmp_path / "out" / "smoke").exists()


def test_unknown_profile_is_named(tmp_path):
    proc = run_all(tmp_path, profile="nope")
    assert proc.returncode == 2 and "no profile 'nope'" in proc.stderr


def test_params_match_notebooks():
    for profile in ("smoke", "default"):
        assert params.check_profile(profile) == []
