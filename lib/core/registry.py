"""The long runs' packs as data: the pack sets, decoder arms and described runs the notebooks and `tts-lab voice
optimize` judge, in one YAML file beside the training ledger (outputs/recorded/registry.yaml), so that a parameter
names a set instead of holding its list."""
from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lib.core.params import ROOT

REGISTRY = ROOT / "outputs" / "recorded" / "registry.yaml"


class RegistryError(ValueError):
    """A registry file that cannot be read, or a name it does not hold."""


class Registry(BaseModel):
    """pack_sets: name -> packs (<work>/<part> under outputs/recorded/training); decoder_arms: decoder -> arm label
    -> the packs the arm is made of, in training order; described: name -> pack -> what that run tried (the runs a
    notebook's findings name one by one, in order)."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    pack_sets: dict[str, list[str]]
    decoder_arms: dict[str, dict[str, list[str]]]
    described: dict[str, dict[str, str]] = Field(default_factory=dict)
    source: str = ""

    def runs(self, name: str) -> dict[str, str]:
        """The described runs of the set `name`: pack -> what it tried, in the file's order."""
        if name not in self.described:
            raise RegistryError(f"no described runs {name!r} in {self.source}: it holds "
                                f"{', '.join(sorted(self.described))}")
        return dict(self.described[name])

    def packs(self, name: str) -> list[str]:
        """The packs of the set `name`."""
        if name not in self.pack_sets:
            raise RegistryError(f"no pack set {name!r} in {self.source}: it holds {', '.join(sorted(self.pack_sets))}")
        return list(self.pack_sets[name])


def load(path: str | Path = REGISTRY) -> Registry:
    """The registry at `path` (relative paths from the repository root), checked: an unknown key or a value of the
    wrong shape is named with its place in the file."""
    p = Path(path) if Path(path).is_absolute() else ROOT / path
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RegistryError(f"registry {p} cannot be read ({type(exc).__name__}: {exc})") from None
    try:
        return Registry(**(data or {}), source=str(p))
    except (ValidationError, TypeError) as exc:
        raise RegistryError(f"registry {p}: {exc}") from None
