"""tts-lab (lib.cli): grouped commands whose modules load only when they run, so the listing needs none of the
heavy libraries; the older flat names still parse; an unknown command is named."""
import os
import subprocess
import sys

import pytest

from lib import cli


def test_the_listing_and_the_module_import_none_of_the_heavy_libraries():
    code = ("import sys, io, contextlib; from lib import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'peft', 'transformers', 'onnxruntime', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
    assert all(f"  {name}" in out for group in cli.COMMANDS.values() for name in group)


HEAVY = ("torch", "pandas", "onnxruntime", "librosa")


def test_every_commands_help_loads_no_runtime_and_every_option_has_help():
    """Issue 69 item 3: every command answers --help in a fresh process without importing torch, pandas, onnxruntime
    or librosa, what makes help slow, rather than timing it (its options live in a light module, the work is
    imported when it runs); each of its options has help text, and a required one says so."""
    import dataclasses
    from tyro import _docstrings
    every = {(g, n) for g, commands in cli.COMMANDS.items() for n in commands}
    code = ("import sys; from lib import cli\ntry:\n    cli.main(sys.argv[1:] + ['--help'])\nexcept SystemExit:\n"
            f"    pass\nprint('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    for group, name in sorted(every):
        out = subprocess.run([sys.executable, "-c", code, group, name], capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == "HEAVY []", (group, name, out.stdout[-300:])
        assert "usage: tts-lab" in out.stdout, (group, name)
        cls = cli.config_class(group, name)
        assert not [f.name for f in dataclasses.fields(cls) if not _docstrings.get_field_docstring(cls, f.name, ())]
    export = subprocess.run([sys.executable, "-c", code, "voice", "export"], capture_output=True, text=True).stdout
    assert "required: a packed folder" in " ".join(export.split())


def test_every_command_resolves_to_a_dataclass_with_help():
    for group, commands in cli.COMMANDS.items():
        for name in commands:
            cls = cli.config_class(group, name)
            assert cls.__doc__ and "__dataclass_fields__" in vars(cls), f"{group} {name}"


def test_grouped_and_flat_names_parse_alike_and_an_unknown_one_is_named(capsys):
    grouped = cli.parse(["study", "rundiff", "a.csv", "b.csv"])
    assert cli.parse(["rundiff", "a.csv", "b.csv"]) == grouped and str(grouped.after) == "b.csv"
    assert cli.parse(["train", "corpus", "--out", "/tmp/c", "--limit", "3"]).limit == 3
    with pytest.raises(SystemExit, match="no command 'nope'"):
        cli.parse(["nope"])
    with pytest.raises(SystemExit) as exit_:
        cli.parse(["train", "--help"])
    assert exit_.value.code == 0 and "regress-istft" in capsys.readouterr().out


def test_the_command_line_silences_the_known_warnings_by_name_and_no_other(monkeypatch):
    """Issue 69 item 5: `tts-lab` opens no log with torch's weight_norm notice (lib.core.quiet.KNOWN), while any other
    warning still shows, and the processes it starts inherit the same filters."""
    import warnings

    from lib import cli

    def noisy(cmd, command):
        warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of ...", FutureWarning)
        warnings.warn("something the lab has not seen", UserWarning)

    monkeypatch.setattr(cli, "run", noisy)
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        cli.main(["study", "probe"])
    assert [str(w.message) for w in seen] == ["something the lab has not seen"]
    assert "weight_norm" in os.environ["PYTHONWARNINGS"]
