"""The shape of lib, enforced: only the harness measures. The rules are written once, here, as the design states
them (../shared/design.md, 'Boundaries, enforced'); the test walks every import in lib (top level and inside
functions) and fails on a forbidden arrow, naming the module, the line and the rule."""
import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lib"

TECHNIQUES = {"finetune", "adapt_targets", "compress", "distill", "training", "artefacts", "speecht5", "export",
              "frontend_student", "istft_decoder", "channel_prune", "regress_recipe"}
HARNESS = {"metrics", "bench", "evaluate", "judges", "scenarios"}
MODEL_CODE = {"voices", "piper_torch", "hub", "finetune", "compress", "distill", "training", "speecht5", "backends",
              "engines", "istft_decoder", "frontend_student", "artefacts", "export", "channel_prune", "regress_recipe"}
RULES = [
    ("techniques build variants and never measure", TECHNIQUES, HARNESS),
    ("judges know no model", {"metrics", "audio"}, MODEL_CODE),
    ("the signal layer knows neither judges nor models", {"audio", "machine", "text", "results", "pause"},
     HARNESS | MODEL_CODE),
    ("verdicts, run diffs and the training ledger read result frames only", {"verdicts", "rundiff", "ledger"},
     HARNESS | MODEL_CODE),
]
MAX_LINES = 500  # one concern per module, readable in one sitting (issue 14)


def lib_imports(path: Path) -> list[tuple[int, str]]:
    """(line, lib module) for every `from . import x`, `from .x import y` and `import lib.x` in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            out += [(node.lineno, node.module)] if node.module else [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lib"):
            out += [(node.lineno, node.module.split(".")[1])] if "." in node.module else [(node.lineno, a.name) for a in node.names]
    return [(line, mod.split(".")[0]) for line, mod in out]


def violations() -> list[str]:
    found = []
    for path in sorted(LIB.glob("*.py")):
        for line, target in lib_imports(path):
            for rule, sources, forbidden in RULES:
                if path.stem in sources and target in forbidden and target != path.stem:
                    found.append(f"lib/{path.name}:{line} imports {target}: {rule}")
    return found


def test_no_forbidden_import():
    assert violations() == []


def test_the_check_can_fail(tmp_path, monkeypatch):
    (tmp_path / "compress.py").write_text("def f():\n    from . import metrics\n    from .bench import size_mb\n")
    (tmp_path / "metrics.py").write_text("from .hub import HfWhisperAsr\n")
    monkeypatch.setattr(__import__(__name__), "LIB", tmp_path)
    found = violations()
    assert any("compress.py:2 imports metrics" in v for v in found) and any("compress.py:3 imports bench" in v for v in found)
    assert any("metrics.py:1 imports hub: judges know no model" in v for v in found)


def test_modules_stay_readable():
    long = {p.name: n for p in LIB.glob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
