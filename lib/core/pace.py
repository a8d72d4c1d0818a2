"""The estimate while a run goes: each notebook's estimate (eta.json, said before the run) and the same scaled by
this run's pace so far (the seconds its finished notebooks took over their estimates), since the machine's speed
during the run can differ from the few seconds the calibration saw."""
from __future__ import annotations

import json
from pathlib import Path

MIN_ESTIMATED_S = 60.0  # the pace is read once finished notebooks were estimated at this much in all


def pace(estimate_s: dict[str, float], done_s: dict[str, float]) -> float | None:
    """Seconds taken over seconds estimated, for the finished notebooks that had an estimate; None before enough."""
    both = [nb for nb in done_s if nb in estimate_s]
    estimated = sum(estimate_s[nb] for nb in both)
    return sum(done_s[nb] for nb in both) / estimated if estimated >= MIN_ESTIMATED_S else None


def line(eta_json: Path, notebook: str, done_s: dict[str, float]) -> str:
    """', about X min' for `notebook` (and ', Y at this run's pace' where the pace is known); '' without an
    estimate."""
    try:
        estimate_s = json.loads(Path(eta_json).read_text())["estimate_s"]
    except (OSError, ValueError, KeyError):
        return ""
    if notebook not in estimate_s:
        return ""
    said = f", about {estimate_s[notebook] / 60:.1f} min"
    p = pace(estimate_s, done_s)
    return said + (f", {estimate_s[notebook] * p / 60:.1f} at this run's pace so far" if p else "")
