"""Profile YAML files checked against a notebook's `parameters` cell.

Every default lives once, in the notebook's parameters cell, with a one-line comment saying what it means; that
cell *is* the `default` profile. A profile file (params/<profile>/<notebook>.yaml) holds only what it changes
(the folder's name is the profile); unknown or mistyped keys are errors that name the file and the key."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Optional

import yaml
from pydantic import ConfigDict, ValidationError, create_model

from lib.core import env

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
PARAMS = Path(env.PARAMS.get() or ROOT / "params")


class ParamsError(ValueError):
    """A profile file that does not fit its notebook; the message names the file and the key."""


def notebook_path(notebook: str) -> Path:
    path = NOTEBOOKS / (notebook if notebook.endswith(".ipynb") else f"{notebook}.ipynb")
    if not path.exists():
        raise ParamsError(f"no notebook {path.name} in {NOTEBOOKS}")
    return path


def parameters_cell(nb_path: Path) -> str:
    cells = json.loads(Path(nb_path).read_text(encoding="utf-8"))["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ParamsError(f"{nb_path.name}: expected exactly one cell tagged 'parameters', found {len(tagged)}")
    src = tagged[0]["source"]
    return "".join(src) if isinstance(src, list) else src


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """Names and default values of the parameters cell (plain literal assignments only)."""
    nb_path = Path(notebook) if Path(notebook).suffix == ".ipynb" else notebook_path(str(notebook))
    tree = ast.parse(parameters_cell(nb_path))
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name):
                raise ParamsError(f"{nb_path.name}: parameters cell must assign one plain name per line")
            try:
                out[targets[0].id] = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ParamsError(f"{nb_path.name}: parameter {targets[0].id} must be a literal ({exc})") from None
        elif not isinstance(node, ast.Expr):
            raise ParamsError(f"{nb_path.name}: parameters cell may only hold literal assignments")
    return out


def _field_type(default: Any) -> Any:
    if default is None:
        return Optional[Any]
    return type(default)


def _model_for(defaults: dict[str, Any]):
    fields = {name: (_field_type(value), value) for name, value in defaults.items()}
    return create_model("NotebookParameters", __config__=ConfigDict(extra="forbid", strict=True), **fields)


def validate(values: dict[str, Any], notebook: str, source: str = "parameters") -> dict[str, Any]:
    """Check `values` against the notebook's parameters; raise ParamsError naming every bad key and `source`."""
    defaults = notebook_defaults(notebook)
    if not isinstance(values, dict):
        raise ParamsError(f"{source}: expected a mapping of parameter names to values, got {type(values).__name__}")
    try:
        _model_for(defaults)(**values)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key '{key}' (the notebook has: {', '.join(sorted(defaults))})")
            elif err["type"] == "missing":
                problems.append(f"missing key '{key}'")
            else:
                want = type(defaults.get(err["loc"][0])).__name__
                got = err.get("input")
                hint = (" (write floats as 1.0e-4: YAML reads 1e-4 as a string)"
                        if want == "float" and isinstance(got, str) else "")
                problems.append(f"key '{key}': expected {want}, got {type(got).__name__} {got!r}{hint}")
        raise ParamsError(f"{source} does not fit notebook {notebook}: " + "; ".join(problems)) from None
    return values


def load(profile: str, notebook: str) -> dict[str, Any]:
    """Read params/<profile>/<notebook>.yaml and validate it against the notebook."""
    path = PARAMS / profile / f"{notebook}.yaml"
    if not path.exists():
        raise ParamsError(f"no parameter file {_show(path)} for notebook {notebook} in profile '{profile}'")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{_show(path)} is not valid YAML: {exc}") from None
    if isinstance(values, dict) and "profile" in values:
        raise ParamsError(f"{_show(path)} sets 'profile': remove it, the folder's name is the profile "
                          f"('{profile}'), so a copied profile writes its own outputs")
    return validate(values, notebook, source=_show(path))


def resolved(profile: str, notebook: str) -> dict[str, Any]:
    """The values a run of `notebook` on `profile` uses: the notebook's defaults, overlaid by the profile's file
    when there is one (a notebook run by hand, outside a profile, uses its defaults)."""
    values = notebook_defaults(notebook)
    path = PARAMS / profile / f"{notebook}.yaml"
    if path.exists():
        values.update(load(profile, notebook))
        values["profile"] = profile  # the folder names the profile, not a copied file's `profile:` key
    return values


def fingerprint(profile: str, notebook: str) -> str:
    """What a run of `notebook` on `profile` does, in 12 hex digits: its code cells and the parameter values it runs
    with (comments and outputs aside). A timing whose fingerprint differs timed other work (lib.jobs.eta says so)."""
    import hashlib
    cells = json.loads(notebook_path(notebook).read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) for c in cells if c.get("cell_type") == "code"]
    values = json.dumps(resolved(profile, notebook), sort_keys=True, default=str)
    return hashlib.sha256(json.dumps([code, values]).encode()).hexdigest()[:12]


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


VOICE_FILE = "voice.yaml"  # optional, per profile: the user's own Piper voice instead of en_US-joe-medium


def voice_env(profile: str) -> dict[str, str]:
    """The environment that points every notebook at the profile's own Piper voice, from params/<profile>/voice.yaml:
    `model` (path to the .onnx; relative paths from the repository root), `config` (its .onnx.json; default the
    model's path + .json) and `speaker` (id of a multi-speaker voice, default 0). Empty when the file is absent."""
    from pydantic import BaseModel

    class VoiceSpec(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        model: str
        config: str = ""
        speaker: int = 0

    path = PARAMS / profile / VOICE_FILE
    if not path.exists():
        return {}
    try:
        spec = VoiceSpec(**(yaml.safe_load(path.read_text(encoding="utf-8")) or {}))
    except (yaml.YAMLError, TypeError) as exc:
        raise ParamsError(f"{_show(path)} is not a mapping of model/config/speaker: {exc}") from None
    except ValidationError as exc:
        raise ParamsError(f"{_show(path)}: " + "; ".join(f"key '{'.'.join(map(str, e['loc']))}': {e['msg']}"
                                                          for e in exc.errors())) from None
    model = Path(spec.model) if Path(spec.model).is_absolute() else ROOT / spec.model
    config = Path(spec.config) if spec.config else Path(str(model) + ".json")
    config = config if config.is_absolute() else ROOT / config
    for what, p in (("model", model), ("config", config)):
        if not p.is_file():
            raise ParamsError(f"{_show(path)}: the voice's {what} file {p} does not exist")
    return {env.VOICE.name: str(model), env.VOICE_CONFIG.name: str(config), env.SPEAKER.name: str(spec.speaker)}


def undocumented(notebook: str) -> list[str]:
    """Parameters whose line in the cell has no `# meaning` comment."""
    src = parameters_cell(notebook_path(notebook))
    names = notebook_defaults(notebook)
    lines = {ln.split("=", 1)[0].strip(): ln for ln in src.splitlines() if "=" in ln and not ln.startswith(" ")}
    return [n for n in names if "#" not in lines.get(n, "").split("=", 1)[-1]]


SHARED = ("chunk_frames", "context_frames")  # the streaming window: 03 judges it, 05 times it, so one value per profile


def shared_mismatches(profile: str, notebook: str | None = None) -> list[str]:
    """Parameters in SHARED that two notebooks of `profile` resolve differently (only those involving `notebook`,
    when given; another notebook whose file does not load is left to its own check): each message names the key and
    both notebooks' values."""
    values = {}
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        try:
            values[nb.stem] = resolved(profile, nb.stem)
        except ParamsError:
            if nb.stem == notebook:
                raise
            continue  # a broken file of another notebook is that notebook's error, reported by its own check
    errors = []
    for key in SHARED:
        having = {name: v[key] for name, v in values.items() if key in v}
        ref = notebook if notebook in having else (None if notebook else next(iter(having), None))
        errors += [f"'{key}' is shared by the notebooks of a profile, but in '{profile}' {ref} has {having[ref]!r} "
                   f"and {name} has {value!r}: set the same value in both files"
                   for name, value in having.items() if ref and name != ref and value != having[ref]]
    return errors


def check_profile(profile: str) -> list[str]:
    """Every notebook's file in a profile; returns the error messages (empty when all fit). The `default`
    profile may change nothing: its values are the notebooks' own defaults, so the two cannot drift."""
    errors = []
    if profile == "default":
        for f in sorted((PARAMS / profile).glob("[0-9][0-9]_*.yaml")):
            extra = set(yaml.safe_load(f.read_text(encoding="utf-8")) or {})
            if extra:
                errors.append(f"{_show(f)} changes {sorted(extra)}: the default profile is the notebook's parameters "
                              f"cell; change the default there")
    for nb in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        try:
            load(profile, nb.stem)
        except ParamsError as exc:
            errors.append(str(exc))
    try:
        voice_env(profile)
    except ParamsError as exc:
        errors.append(str(exc))
    if not errors:
        errors += shared_mismatches(profile)
    extra = ({p.stem for p in (PARAMS / profile).glob("*.yaml")} - {nb.stem for nb in NOTEBOOKS.glob("*.ipynb")}
             - {Path(VOICE_FILE).stem})
    errors += [f"params/{profile}/{name}.yaml names no notebook" for name in sorted(extra)]
    return errors
