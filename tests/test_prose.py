"""Prose that names code names code that exists: every `lib.x.y` or `lib/x/y.py` in the notebooks' text, the README,
docs/ and lib's own docstrings and comments resolves to a module (and, for a dotted name past a module, to one of
its top-level names), so a move or a rename cannot leave stale references behind."""
import ast
import json
import re
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOTTED = re.compile(r"\blib(?:\.[A-Za-z_]\w*)+")
PATH = re.compile(r"\blib(?:/[\w.-]+)+\.py\b")


@lru_cache(maxsize=None)
def _top_names(module_file: Path) -> frozenset:
    tree = ast.parse(module_file.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(names)


def resolves(dotted: str) -> bool:
    """`lib.a.b.c`: the longest prefix that is a module or package exists, and what follows it is a top-level name
    of that module (an attribute of it, one level deep)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        module = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if module.is_file():
            rest = parts[i:]
            return (not rest or rest[0] in _top_names(module)
                    or (module.name == "__init__.py" and (base / rest[0]).exists()))
    return False


def _texts():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for k, cell in enumerate(json.loads(nb.read_text())["cells"]):
            if cell["cell_type"] == "markdown":
                yield f"{nb.name} cell {k}", "".join(cell["source"])
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        yield md.name, md.read_text()
    for py in sorted((ROOT / "lib").rglob("*.py")):
        tree = ast.parse(py.read_text())
        docs = [ast.get_docstring(n) or "" for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        comments = [ln.split("#", 1)[1] for ln in py.read_text().splitlines() if "#" in ln]
        yield str(py.relative_to(ROOT)), "\n".join(docs + comments)


def test_the_check_can_fail():
    assert resolves("lib.training.loop.Trainer") and resolves("lib.core") and resolves("lib.jobs.speaker_job")
    assert not resolves("lib.results") and not resolves("lib.techniques.finetune.SpeakerTarget")


def test_code_named_in_prose_exists():
    stale = []
    for where, text in _texts():
        stale += [f"{where}: {m}" for m in DOTTED.findall(text) if not resolves(m.rstrip("."))]
        stale += [f"{where}: {m}" for m in PATH.findall(text) if not (ROOT / m).is_file()]
    assert not stale, "\n".join(stale)
