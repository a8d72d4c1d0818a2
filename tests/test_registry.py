"""The long runs' packs as data (outputs/recorded/registry.yaml, lib.core.registry): every pack set a profile names
exists and names committed packs, and a bad file or name is an error that says which."""
import pytest

from lib.core import params, registry
from lib.core.params import ROOT

TRAINING = ROOT / "outputs" / "recorded" / "training"

NOTEBOOKS = ("02_lora_qlora", "03_pruning_quantization", "04_distillation", "05_hardware_benchmark")
SET_PARAMS = ("long_runs", "phase_gap_packs", "recipe_comparison", "data_scaling")


def test_every_profiles_pack_sets_name_committed_packs():
    book = registry.load()
    named = {(profile, nb, key): value for profile in ("smoke", "default", "full") for nb in NOTEBOOKS
             for key, value in params.resolved(profile, nb).items() if key in SET_PARAMS}
    assert len(named) == 3 * len(NOTEBOOKS) + 3 * 3, "each notebook's long_runs and 04's three other sets, per profile"
    for (profile, nb, key), name in named.items():
        for pack in book.packs(name):
            assert (TRAINING / pack / "config.json").exists(), (profile, nb, key, pack)
    for decoder, arms in book.decoder_arms.items():
        for arm, runs in arms.items():
            assert runs and all((TRAINING / r).is_dir() for r in runs), (decoder, arm)
    # the runs notebook 02's findings name, and optimize's default candidates: data here too (issue 70 item 3)
    from lib.studies import adaptation, optimize_options
    for name in (adaptation.DIAGNOSIS, adaptation.ARMS, adaptation.ARMS_JUDGED, adaptation.DISTANCE):
        runs = book.runs(name)
        assert runs and all((TRAINING / r / "config.json").exists() and what for r, what in runs.items()), name
    assert len(book.runs(adaptation.DIAGNOSIS)) == 3
    assert all((TRAINING / pack / "config.json").exists() for pack in book.packs(optimize_options.PACK_SET))


def test_a_bad_registry_or_name_is_named(tmp_path):
    path = tmp_path / "registry.yaml"
    path.write_text("pack_sets: {a: [x/y]}\ndecoder_arms: {}\n")
    book = registry.load(path)
    assert book.packs("a") == ["x/y"]
    with pytest.raises(registry.RegistryError, match=r"no pack set 'b' in .*registry.yaml: it holds a"):
        book.packs("b")
    path.write_text("pack_sets: {a: [x/y]}\ndecoder_arms: {}\nlong_runs: [x/y]\n")
    with pytest.raises(registry.RegistryError, match="long_runs"):
        registry.load(path)
    path.write_text("pack_sets: {a: x/y}\ndecoder_arms: {}\n")
    with pytest.raises(registry.RegistryError, match="pack_sets.a"):
        registry.load(path)
    path.write_text("pack_sets: {}\ndecoder_arms: {}\ndescribed: {d: {x/y: what it tried}}\n")
    assert registry.load(path).runs("d") == {"x/y": "what it tried"}
    with pytest.raises(registry.RegistryError, match=r"no described runs 'e' in .*: it holds d"):
        registry.load(path).runs("e")
    with pytest.raises(registry.RegistryError, match="cannot be read"):
        registry.load(tmp_path / "missing.yaml")
