import pytest
import yaml

from lib.core import params
from lib.harness.judges import make_asr


def test_shipped_profiles_fit_their_notebooks():
    for profile in ("smoke", "default", "full"):
        assert params.check_profile(profile) == []


def test_notebook_defaults_are_read():
    d = params.notebook_defaults("01_baselines")
    assert d["asr"] == "whisper-base" and d["threads"] == [1, 2] and isinstance(d["noise_scale"], float)


def _values(**change):
    v = params.notebook_defaults("01_baselines")
    v.update(change)
    return v


def test_unknown_key_is_named():
    with pytest.raises(params.ParamsError,
                       match="unknown key 'nosie_scale'.*my.yaml|my.yaml.*unknown key 'nosie_scale'"):
        params.validate(_values(nosie_scale=0.5), "01_baselines", source="my.yaml")


def test_missing_key_takes_the_notebook_default():
    assert params.validate({"profile": "smoke"}, "01_baselines") == {"profile": "smoke"}


def test_default_profile_cannot_drift_from_the_notebooks(tmp_path, monkeypatch):
    """The default profile is each notebook's parameters cell: a params/default file that changes a key is an error,
    and every key in every cell says in a comment what it means."""
    import shutil
    notebooks = sorted(params.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 8, notebooks
    for nb in notebooks:
        assert params.undocumented(nb.stem) == [], nb.stem
    shutil.copytree(params.PARAMS / "default", tmp_path / "default")
    (tmp_path / "default" / "04_distillation.yaml").write_text("decoder_steps: [2500, 3000]\n")
    monkeypatch.setattr(params, "PARAMS", tmp_path)
    assert any("changes ['decoder_steps']" in e for e in params.check_profile("default"))


def test_mistyped_key_is_named_with_float_hint():
    with pytest.raises(params.ParamsError, match="key 'noise_scale': expected float, got str.*1.0e-4"):
        params.validate(_values(noise_scale="1e-4"), "01_baselines")
    with pytest.raises(params.ParamsError, match="key 'speed_sentences': expected int"):
        params.validate(_values(speed_sentences=2.5), "01_baselines")


def test_int_is_accepted_for_float():
    params.validate(_values(length_scale=1), "01_baselines")


def test_bad_yaml_file(tmp_path, monkeypatch):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "01_baselines.yaml").write_text("eval_limit: [unclosed\n")
    monkeypatch.setattr(params, "PARAMS", tmp_path)
    with pytest.raises(params.ParamsError, match="not valid YAML"):
        params.load("p", "01_baselines")
    with pytest.raises(params.ParamsError, match="no parameter file .*00_data_and_features"):
        params.load("p", "00_data_and_features")
    v = params.notebook_defaults("01_baselines")
    v.pop("profile")
    v["extra"] = 1
    (tmp_path / "p" / "01_baselines.yaml").write_text(yaml.safe_dump(v))
    assert any("unknown key 'extra'" in e for e in params.check_profile("p"))
    (tmp_path / "p" / "01_baselines.yaml").write_text("profile: default\neval_limit: 3\n")
    with pytest.raises(params.ParamsError,
                       match="01_baselines.yaml sets 'profile': remove it, the folder's name is the profile"):
        params.load("p", "01_baselines")


def test_full_profile_names_only_known_hub_models_and_asr():
    from lib.voices import hub
    import yaml
    p = yaml.safe_load((params.PARAMS / "full" / "01_baselines.yaml").read_text())
    from lib.voices.synth import VOICE_NAMES
    assert set(p["other_models"]) <= set(hub.HUB_MODELS) | set(VOICE_NAMES)
    assert p["ground_truth"] in hub.HUB_DATASETS
    assert p["asr"].startswith("hf:")
    with pytest.raises(ValueError, match="unknown ASR 'hf-nope'"):
        make_asr("hf-nope")


def test_the_streaming_window_is_one_per_profile(tmp_path, monkeypatch):
    """03 judges the chunked voice and 05 times it: a profile that gives them different windows is refused, naming
    the key and both notebooks, by the whole-profile check and by run_all.sh's check of either notebook."""
    import shutil
    shutil.copytree(params.PARAMS / "smoke", tmp_path / "smoke")
    monkeypatch.setattr(params, "PARAMS", tmp_path)
    assert params.shared_mismatches("smoke") == []
    f = tmp_path / "smoke" / "05_hardware_benchmark.yaml"
    f.write_text(f.read_text() + "\ncontext_frames: 8\n")
    errors = params.check_profile("smoke")
    assert len(errors) == 1 and "'context_frames'" in errors[0] and "05_hardware_benchmark has 8" in errors[0]
    assert "03_pruning_quantization has 16" in errors[0]
    assert (params.shared_mismatches("smoke", "03_pruning_quantization")
            and params.shared_mismatches("smoke", "05_hardware_benchmark"))
    assert params.shared_mismatches("smoke", "01_baselines") == []
    f.write_text(f.read_text() + "\nnosie_scale: 0.5\n")  # a broken 05 is 05's own error, not 06's or 03's
    assert params.shared_mismatches("smoke", "06_listening_test") == []
    assert params.shared_mismatches("smoke", "03_pruning_quantization") == []
    with pytest.raises(params.ParamsError, match="nosie_scale"):
        params.shared_mismatches("smoke", "05_hardware_benchmark")


def test_full_profile_trains_on_a_gpu_with_its_adversarial_phase():
    """What the README says of `full`: GPU-sized training, the adversarial phase included. Every notebook that trains
    does so on cuda, with at least 10x the default's steps and an adversarial phase at least 10x as long."""
    for notebook, steps, adv in (("02_lora_qlora", "steps", "adversarial_steps"),
                                 ("03_pruning_quantization", "recovery_steps", "adversarial_steps"),
                                 ("04_distillation", "decoder_steps", "adversarial_steps")):
        full, default = params.resolved("full", notebook), params.resolved("default", notebook)
        total = lambda p: sum(p[steps]) if isinstance(p[steps], list) else p[steps]
        assert full["device"] == "cuda", notebook
        assert total(full) >= 10 * total(default), (notebook, total(full), total(default))
        shortest = min(full[steps]) if isinstance(full[steps], list) else full[steps]
        assert 10 * max(default[adv], 1) <= full[adv] < shortest, (notebook, full[adv], default[adv])
