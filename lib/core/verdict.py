"""A verdict as a record (issue 70 item 2): the target it judges, what it is about, its outcome (met, missed, or
undecided at its n), the margin with its interval and n, and the sentence a notebook shows for it. Each notebook
writes its verdicts to verdicts.json beside results.csv, and the report reads them as data, never from prose."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Literal, get_args

Outcome = Literal["met", "missed", "undecided"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
FILE = "verdicts.json"


@dataclass(frozen=True)
class Verdict:
    """One target judged once. `margin`, `lo` and `hi` are the judged quantity's mean and 95 % interval (the
    direction the target names, so that met means the interval clears 0); `n` the sentences they were taken over."""
    target: str  # what is judged, as the notebook names it: "speed target", "LoRA target", "5x voice: speed target"
    outcome: Outcome
    sentence: str  # the line the notebook shows for it
    subject: str = ""  # the variant it is about ('' where it names none: no candidate, no row to judge)
    n: int | None = None
    margin: float | None = None
    lo: float | None = None
    hi: float | None = None
    group: str = ""  # where verdicts of one notebook answer different questions: "long runs" beside this run's

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"verdict {self.target!r}: outcome {self.outcome!r} is not one of {OUTCOMES}")
        for name in ("margin", "lo", "hi"):  # JSON has no NaN: an unmeasured number is None
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                object.__setattr__(self, name, None)
            elif value is not None:
                object.__setattr__(self, name, float(value))
        if self.n is not None:
            object.__setattr__(self, "n", int(self.n))

    @property
    def word(self) -> str:
        """met, missed, or 'undecided at n = N'."""
        return f"undecided at n = {self.n}" if self.outcome == "undecided" and self.n else self.outcome


def outcome_of(word: str) -> Outcome:
    """The outcome a verdict's word names ('met', 'missed', 'undecided at n = 12', 'not judged' -> missed)."""
    word = str(word).strip().lower()
    return "met" if word == "met" else "undecided" if word.startswith("undecided") else "missed"


def to_json(verdicts: list[Verdict]) -> str:
    """verdicts.json's text (a list, empty where the notebook judged no target; ResultWriter writes it)."""
    return json.dumps([asdict(v) for v in verdicts], indent=1, ensure_ascii=False)


def read(folder: Path) -> list[Verdict]:
    """The verdicts a notebook recorded in `folder`; [] where it wrote none. ValueError names the file and entry
    that does not read as a Verdict."""
    path = Path(folder) / FILE
    if not path.exists():
        return []
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a list of verdicts, got {type(rows).__name__}")
    known = {f.name for f in fields(Verdict)}
    out = []
    for i, row in enumerate(rows):
        extra = set(row) - known if isinstance(row, dict) else set()
        if not isinstance(row, dict) or extra:
            raise ValueError(f"{path}: entry {i} is not a verdict" + (f" (unknown keys {sorted(extra)})" if extra
                                                                      else ""))
        try:
            out.append(Verdict(**row))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from None
    return out
