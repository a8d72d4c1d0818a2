"""Why an executed notebook failed, in one line: the cell that raised and its error, read from the notebook papermill
kept (`*.failed.ipynb`). `tts-lab run` prints it beside the notebook's status, where a log's tail still shows it."""
from __future__ import annotations

import json
from pathlib import Path


def failure(path: str | Path) -> str:
    """'cell N: Name: message' for the first cell whose outputs hold an error, or a line saying none did (papermill
    stopped it: a timeout, a dead kernel)."""
    try:
        cells = json.loads(Path(path).read_text())["cells"]
    except (OSError, ValueError, KeyError) as e:
        return f"cannot read {path}: {e}"
    for n, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                message = " ".join(str(out.get("evalue", "")).split())
                return f"cell {n}: {out.get('ename', 'Error')}: {message[:500]}"
    return "no cell recorded an error (a timeout or a dead kernel?)"
