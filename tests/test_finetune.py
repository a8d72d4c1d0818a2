import json
import re

import numpy as np
import torch

from lib.voices import piper_torch
from lib.training import batches
from lib.techniques import adapt_targets, finetune
from lib.harness import metrics
from lib.report import report, verdicts


def _tiny():
    from piper.train.vits.models import Generator
    torch.manual_seed(0)
    g = Generator(8, "2", (3,), ((1, 2),), (8, 8), 16, (16, 16))
    g.remove_weight_norm()
    return g


def _latents():
    teacher = _tiny()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(0.05 * torch.randn_like(p))
    zs = [torch.randn(1, 8, 60) for _ in range(4)]
    with torch.no_grad():
        wavs = [teacher(z) for z in zs]
    return batches.Latents([f"u{i}" for i in range(4)], zs, wavs, hop=64)


def test_losses_are_zero_for_identical_and_positive_otherwise():
    from lib.training import loop as training
    y = 0.5 * torch.randn(1, 1, 4096).clamp(-1, 1)
    assert float(training.mr_stft_loss(y, y)) < 1e-5
    assert float(training.mel_l1(y, y)) == 0.0
    assert float(training.mr_stft_loss(0.5 * y, y)) > 0.1 and float(training.mel_l1(0.5 * y, y)) > 0.1


def test_segments_stay_aligned():
    lat = _latents()
    z, y = batches.random_segments(lat, 3, 10, np.random.default_rng(0))
    assert z.shape == (3, 8, 10) and y.shape == (3, 1, 640)


def test_train_decoder_learns_checkpoints_and_resumes(tmp_path):
    from lib.training import loop as training
    lat = _latents()
    recipe = lambda n: training.Recipe(steps=n, lr=2e-3, adversarial=False, checkpoint_every=10, log_every=1)  # noqa: E731
    log = training.train_decoder(_tiny(), lat, recipe(30), tmp_path, batch=2, frames=40, progress=None)
    assert len(log.loss) == 30 and np.mean(log.loss[-5:]) < np.mean(log.loss[:5])
    assert (tmp_path / "state" / "model.safetensors").exists() and (tmp_path / "curve.csv").exists()
    assert log.s_per_step > 0
    again = training.train_decoder(_tiny(), lat, recipe(40), tmp_path, batch=2, frames=40, progress=None)
    assert again.resumed_from == 30 and len(again.loss) == 40 and again.loss[:30] == log.loss
    done = training.train_decoder(_tiny(), lat, recipe(40), tmp_path, batch=2, frames=40, progress=None)
    assert done.resumed_from == 40 and done.s_per_step > 0, "a finished run still reports its speed"


# --- adapting the voice -------------------------------------------------------------------------------------------


def _recipe(steps):
    from lib.training import loop as training
    return training.Recipe(steps=steps, lr=2e-3, adversarial=False, checkpoint_every=6, log_every=1)

import copy

import pytest


def _harmonic(f0: float = 120.0, sr: int = 22050, seconds: float = 1.0):
    t = np.arange(int(sr * seconds)) / sr
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 15))
    return (0.3 * x * np.hanning(t.size) ** 0.2).astype(np.float32)


def test_voice_shift_moves_pitch_by_the_interval_and_keeps_length():
    x = _harmonic()
    y = adapt_targets.VoiceShift(semitones=3.0, formant_ratio=1.1)(x, 22050)
    assert y.shape == x.shape and np.isfinite(y).all()
    assert metrics.f0_shift_semitones([x], [y], 22050) == pytest.approx(3.0, abs=0.3)
    same = adapt_targets.VoiceShift(semitones=0.0, formant_ratio=1.0)(x, 22050)
    assert abs(metrics.f0_shift_semitones([x], [same], 22050)) < 0.3
    with pytest.raises(ValueError, match="too short"):
        adapt_targets.VoiceShift()(x[:50], 22050)


def test_formant_stretch_moves_the_envelope_up():
    x = _harmonic()
    env = metrics.mean_envelope_db(x, 22050)
    up = metrics.mean_envelope_db(adapt_targets.VoiceShift(semitones=0.0, formant_ratio=1.3)(x, 22050), 22050)
    freqs = np.linspace(0, 11025, env.size)
    band = lambda e: float(np.sum(10 ** (e / 10) * freqs) / np.sum(10 ** (e / 10)))  # noqa: E731
    assert band(up) > band(env) * 1.1


@pytest.mark.parametrize("name,expected", [("full", ("full", None)), ("lora-r8", ("lora", 8)),
                                           ("lora-attention-r16", ("lora-attention", 16)), ("qlora-r4", ("qlora", 4))])
def test_method_names_parse(name, expected):
    assert finetune.parse_method(name) == expected


@pytest.mark.parametrize("bad", ["lora", "lora-r0", "dora-r8", "full-r8", "lora-rx"])
def test_bad_method_names_are_named_in_the_error(bad):
    with pytest.raises(ValueError, match=f"methods: '{bad}'"):
        finetune.parse_method(bad)


@pytest.fixture(scope="module")
def joe():
    from lib.voices import synth as voices
    torch.set_num_threads(2)
    onnx, cfg = voices.joe_paths()
    model = piper_torch.load_piper_torch(onnx)
    ids = voices.PiperFrontend(cfg).phoneme_ids("A small dog ran home.")[0]
    return model, ids


def _one_segment_set(model, ids, frames=16, target=None):
    """An aligned set cut to its first `frames` latent frames, so every batch is the same segment."""
    data = batches.aligned_set(model, [ids], ["u0"], target=target, progress=None)
    data.attn = [data.attn[0][:frames]]
    data.wav = [data.wav[0][..., : frames * data.hop]]
    return data


def test_aligned_segments_pad_and_align(joe):
    model, ids = joe
    data = batches.aligned_set(model, [ids, ids[:10]], ["a", "b"], progress=None)
    assert data.wav[0].shape[-1] == data.attn[0].shape[0] * data.hop
    assert torch.allclose(data.attn[0].sum(0), data.attn[0].sum(0).round()), "hard alignment: whole frames per phoneme"
    x, xl, attn, y = batches.aligned_segments(data, 5, 24, np.random.default_rng(0))
    assert x.shape[0] == 5 and attn.shape[:2] == (5, 24) and attn.shape[2] == x.shape[1] and y.shape == (5, 1, 24 * data.hop)
    assert set(xl.tolist()) <= {len(ids), 10}


def test_untrained_adapters_leave_the_voice_unchanged_and_target_what_they_claim(joe):
    model, ids = joe
    data = _one_segment_set(model, ids)
    batch = batches.aligned_segments(data, 1, 16, np.random.default_rng(0))
    base = finetune.VoicePath(copy.deepcopy(model)).eval()
    with torch.no_grad():
        ref = base(*batch[:3])
    for method in ("full", "lora", "lora-attention"):
        a = finetune.prepare(model, method, rank=4)
        with torch.no_grad():
            out = a.trainable(*batch[:3])
        assert torch.allclose(out, ref, atol=1e-5), method
        names = [n for n, p in a.trainable.named_parameters() if p.requires_grad]
        if method == "full":
            assert names and all(n.startswith(("dec.", "flow.")) for n in names)
        else:
            assert names and all("lora_" in n for n in names)
    lora = finetune.prepare(model, "lora", rank=4)
    kinds = {type(model.get_submodule(t)).__name__ for t in lora.targets}
    assert kinds == {"Conv1d"} and not any(model.get_submodule(t).dilation != (1,) for t in lora.targets)
    assert any(t.startswith("dec.") for t in lora.targets) and any(t.startswith("flow.") for t in lora.targets)
    attention = finetune.prepare(model, "lora-attention", rank=4)
    assert attention.targets and all(t.startswith("enc_p.") and t.endswith(("conv_q", "conv_k", "conv_v", "conv_o"))
                                     for t in attention.targets)
    assert lora.trainable_params() < 0.05 * finetune.prepare(model, "full").trainable_params()
    with pytest.raises(ValueError, match="method 'adapter'"):
        finetune.prepare(model, "adapter")


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_adapter_trains_merges_saves_and_loads(joe, tmp_path, method):
    from lib.techniques import compress
    if method == "qlora" and not compress.bitsandbytes_status("nf4", "cpu")[0]:
        pytest.skip("bitsandbytes NF4 does not run on this CPU")
    model, ids = joe
    data = _one_segment_set(model, ids, target=adapt_targets.VoiceShift(semitones=2.0))
    torch.manual_seed(0)
    a = finetune.prepare(model, method, rank=4)
    if method == "qlora":
        assert a.quantized and all(type(a.voice.get_submodule(n)).__name__ == "BnbConv1x1" for n in a.quantized)
    log = finetune.train_adapted(a, data, _recipe(12), tmp_path / "ckpt", batch=1, frames=16, progress=None)
    assert np.mean(log.loss[-3:]) < np.mean(log.loss[:3])
    x = torch.tensor([ids])
    run = lambda m: m.infer(x, torch.tensor([len(ids)]), noise_scale=0.0, noise_scale_w=0.0)[0]  # noqa: E731
    with torch.no_grad():
        adapted_out, merged_out, base_out = run(a.voice), run(a.merged()), run(model)
    assert not torch.allclose(adapted_out, base_out, atol=1e-3), "training changed the voice"
    assert torch.allclose(merged_out, adapted_out, atol=2e-3), float((merged_out - adapted_out).abs().max())
    merged = a.merged()
    assert not any("lora" in n for n, _ in merged.named_modules())
    out_dir = a.save(tmp_path / "adapter", base="piper:joe", card={"target": "up 2", "steps": 12})
    cfg = json.loads((out_dir / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == "piper:joe" and "up 2" in (out_dir / "README.md").read_text()
    if method == "lora":
        reloaded = finetune.load_adapter(model, out_dir)
        with torch.no_grad():
            assert torch.allclose(run(reloaded), adapted_out, atol=1e-5)
            assert torch.allclose(run(finetune.load_adaptation(model, out_dir)), merged_out, atol=2e-3)
    again = finetune.train_adapted(finetune.prepare(model, method, rank=4), data, _recipe(12), tmp_path / "ckpt",
                                   batch=1, frames=16, progress=None)
    assert again.resumed_from == 12 and again.loss == log.loss


def test_a_checkpoint_of_another_method_is_refused(joe, tmp_path):
    model, ids = joe
    data = _one_segment_set(model, ids)
    finetune.train_adapted(finetune.prepare(model, "lora", rank=4), data, _recipe(2), tmp_path, batch=1, frames=16,
                           progress=None)
    with pytest.raises(ValueError, match="written for another model"):
        finetune.train_adapted(finetune.prepare(model, "lora", rank=8), data, _recipe(4), tmp_path, batch=1, frames=16,
                               progress=None)


def _secs_per_sentence(rows, sd: float, n: int = 10, seed: int = 0):
    """SECS sentence by sentence around each variant's value in `rows` (noise of mean exactly zero, so the means are
    the values), as notebook 02 records them."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    out = []
    for v, secs in zip(rows["variant"], rows["secs"]):
        e = rng.normal(0, 1, n)
        out += [{"variant": v, "id": f"s{i}", "secs": secs + sd * (x - e.mean()) / (e.std() or 1)} for i, x in enumerate(e)]
    return pd.DataFrame(out)


def test_adaptation_verdict_one_line_per_target():
    """SECS targets: full halfway to the target's self-similarity within the WER bound; LoRA <= 5 % at 80 % of full's
    gain; QLoRA within 5 % of its LoRA; merged speed within 5 %. Each says met, missed or tied once, and by how much;
    a SECS margin judged per sentence whose 95 % interval holds zero is tied, not met."""
    import pandas as pd
    rows = pd.DataFrame([
        {"variant": "teacher", "secs": 0.50, "wer": 0.05, "trainable_pct_of_full": np.nan, "rtf_ratio": 1.0},
        {"variant": "target-speaker", "secs": 0.90, "wer": 0.10, "trainable_pct_of_full": np.nan, "rtf_ratio": np.nan},
        {"variant": "full", "secs": 0.80, "wer": 0.12, "trainable_pct_of_full": 100.0, "rtf_ratio": 1.01},
        {"variant": "lora-r8", "secs": 0.76, "wer": 0.14, "trainable_pct_of_full": 3.0, "rtf_ratio": 1.02},
        {"variant": "qlora-r8", "secs": 0.74, "wer": 0.14, "trainable_pct_of_full": 3.0, "rtf_ratio": np.nan},
        {"variant": "lora-r8-unmerged", "secs": 0.76, "wer": 0.14, "trainable_pct_of_full": np.nan, "rtf_ratio": 1.3}])
    one = re.compile(r"target (?:met|missed|tied)")
    v = verdicts.adaptation_verdict(rows, _secs_per_sentence(rows, 0.002), target="target-speaker")
    assert v["met"] == {"full": True, "lora": True, "qlora": True, "speed": True}, v["lines"]
    assert len(v["lines"]) == 4 and all(len(one.findall(x)) == 1 for x in v["lines"])
    assert "needed 0.700" in v["lines"][0] and "lora-r8 reaches 87%" in v["lines"][1] and "unmerged lora-r8 1.300" in v["lines"][3]
    assert all("n = 10" in x for x in v["lines"][:3])
    # the same means from sentences that disagree: the LoRA and QLoRA margins (0.02) are inside the noise
    noisy = verdicts.adaptation_verdict(rows, _secs_per_sentence(rows, 0.15), target="target-speaker")
    assert noisy["met"]["lora"] is False and noisy["met"]["qlora"] is False, noisy["lines"]
    assert "LoRA target tied" in noisy["lines"][1] and "QLoRA target tied" in noisy["lines"][2]
    worse = rows.assign(secs=[0.50, 0.90, 0.65, 0.55, 0.50, 0.55], wer=[0.05, 0.10, 0.30, 0.14, 0.14, 0.14],
                        rtf_ratio=[1.0, np.nan, 1.0, 1.2, np.nan, 1.3])
    v = verdicts.adaptation_verdict(worse, _secs_per_sentence(worse, 0.002), target="target-speaker")
    assert v["met"] == {"full": False, "lora": False, "qlora": False, "speed": False}
    assert "WER 0.300 (bound 0.150)" in v["lines"][0] and "33%" in v["lines"][1] and "-9.1%" in v["lines"][2]
    assert all("target missed" in x for x in v["lines"])
    no_full = rows[rows["variant"] != "full"]
    nothing = verdicts.adaptation_verdict(no_full, _secs_per_sentence(no_full, 0.002), target="target-speaker")
    assert not any(nothing["met"][k] for k in ("full", "lora", "qlora")) and "no SECS for full" in nothing["lines"][0]


def test_aligned_set_and_full_fine_tuning_save_without_pickles(joe, tmp_path):
    model, ids = joe
    data = _one_segment_set(model, ids)
    back = batches.AlignedSet.load(data.save(tmp_path / "set.safetensors"))
    assert back.ids == data.ids and back.hop == data.hop and torch.equal(back.wav[0], data.wav[0])
    assert torch.equal(back.attn[0], data.attn[0]) and torch.equal(back.phonemes[0], data.phonemes[0])
    a = finetune.prepare(model, "full")
    with torch.no_grad():
        a.voice.dec.conv_pre.bias.add_(0.01)
    out = a.save(tmp_path / "full", base="piper:joe", card={"target": "T"})
    assert json.loads((out / "config.json").read_text())["kind"] == "adapted_modules"
    again = finetune.load_adaptation(model, out)
    # stored in float16 (the committed-file bound): what loads is the adapted weight rounded to float16, not the base
    stored = a.voice.dec.conv_pre.bias.detach().to(torch.float16).float()
    assert torch.equal(again.dec.conv_pre.bias.detach(), stored) and again.dec.conv_pre.bias.dtype == torch.float32
    assert not torch.allclose(again.dec.conv_pre.bias, model.dec.conv_pre.bias, atol=5e-3)
    with pytest.raises(ValueError, match="neither a PEFT adapter"):
        finetune.load_adaptation(model, tmp_path)


def test_recorded_adaptations_load_their_target_only_and_name_the_rest(joe, tmp_path):
    model, _ = joe
    root = tmp_path / "h100" / "02_lora_qlora"
    finetune.prepare(model, "full").save(root / "full", base="piper:joe", card={"target": "T"})
    finetune.prepare(model, "lora", rank=4).save(root / "lora-r4", base="piper:joe", card={"target": "other"})
    (root / "lora-r8").mkdir()
    (root / "lora-r8" / "config.json").write_text("{broken")
    voices, absent = finetune.recorded_adaptations(model, {"h100": root, "h200": tmp_path / "h200"}, "T")
    assert set(voices) == {"full@h100"}
    assert "another target" in absent["lora-r4@h100"] and "cannot be loaded" in absent["lora-r8@h100"]
    assert "GPU" in absent["adapters@h200"]


def test_speaker_target_moves_another_voice_onto_the_teacher_timing():
    from lib.voices import synth as voices
    teacher = voices.load_voice(backend="ort-cpu", threads=1, noise_scale=0.0, noise_w=0.0)
    target = adapt_targets.SpeakerTarget(voices.load_voice("kokoro-82m", threads=1))
    sentence = "The birch canoe slid on the smooth planks."
    a = teacher.synthesize(sentence)
    y = target(a.samples, a.sample_rate, sentence)
    assert y.shape == a.samples.shape and np.isfinite(y).all()
    assert metrics.f0_shift_semitones([a.samples], [y], a.sample_rate) > 3.0
    m = target.frame_map(a.samples, target.voice.synthesize(sentence).samples[: 3 * a.sample_rate], a.sample_rate)
    assert (np.diff(m) >= 0).all() and m[0] >= 0
    with pytest.raises(ValueError, match="needs the text"):
        batches.aligned_set(None, [[1, 2]], ["x"], target=target)


def test_long_run_verdicts_judge_the_long_packs_apart_from_this_runs_methods():
    """`runs='@cpu-long'` judges the long CPU runs' LoRA against their own full fine-tuning (full and LoRA lines
    only); this run's verdict ignores every variant with an '@' (another run's budget)."""
    import pandas as pd
    rows = pd.DataFrame([
        {"variant": "teacher", "secs": 0.50, "wer": 0.05, "trainable_pct_of_full": np.nan, "rtf_ratio": 1.0},
        {"variant": "target-speaker", "secs": 0.90, "wer": 0.10, "trainable_pct_of_full": np.nan, "rtf_ratio": np.nan},
        {"variant": "full", "secs": 0.60, "wer": 0.12, "trainable_pct_of_full": 100.0, "rtf_ratio": 1.0},
        {"variant": "lora-r8", "secs": 0.52, "wer": 0.12, "trainable_pct_of_full": 3.0, "rtf_ratio": 1.0},
        {"variant": "full@cpu-long", "secs": 0.80, "wer": 0.12, "trainable_pct_of_full": 100.0, "rtf_ratio": np.nan},
        {"variant": "lora-r8@cpu-long", "secs": 0.78, "wer": 0.13, "trainable_pct_of_full": 3.0, "rtf_ratio": np.nan}])
    clips = _secs_per_sentence(rows, 0.002)
    here = verdicts.adaptation_verdict(rows, clips, target="target-speaker")
    assert here["met"]["full"] is False and here["met"]["lora"] is False, here["lines"]
    assert "lora-r8 reaches 20%" in here["lines"][1] and "cpu-long" not in " ".join(here["lines"])
    long = verdicts.adaptation_verdict(rows, clips, full="full@cpu-long", runs="@cpu-long", target="target-speaker")
    assert long["met"] == {"full": True, "lora": True} and len(long["lines"]) == 2, long["lines"]
    assert "lora-r8@cpu-long reaches 93%" in long["lines"][1]
    runs = pd.DataFrame([{"method": "full@cpu-long", "steps": 4800, "machine_hours": 1.06, "device": "cpu"},
                         {"method": "lora-r8@cpu-long", "steps": 38500, "machine_hours": 2.74, "device": "cpu"}])
    lines = verdicts.runs_adaptation_lines(rows, clips, runs, "@cpu-long", target="target-speaker")
    assert lines[0].startswith("Long runs (full@cpu-long 4,800 steps, 1.06 machine-hours on the cpu; lora-r8@cpu-long 38,500")
    assert [x.split("): ", 1)[1] for x in lines] == long["lines"] and verdicts.runs_adaptation_lines(rows, clips, runs[:0], "@x") == []
    short = rows[~rows["variant"].str.endswith("@cpu-long")]
    gone = verdicts.adaptation_verdict(short, clips[clips["variant"].isin(short["variant"])], full="full@cpu-long",
                                       runs="@cpu-long", target="target-speaker")
    assert gone["met"] == {"full": False, "lora": False} and "no SECS for full@cpu-long" in gone["lines"][0]


def test_long_run_adaptations_load_the_packs_for_this_target_and_name_the_rest(joe, tmp_path):
    """Notebook 02 judges the long CPU runs' packs (<work>/<method>) as <method>@cpu-long: those trained for its
    target load, with their steps, machine-hours and share of the long full run's trainable parameters; a pack for
    another target or a missing one is named with the reason."""
    from lib.studies import adaptation
    model, _ = joe
    full = finetune.prepare(model, "full")
    full.save(tmp_path / "wf" / "full", base="piper:joe", card={"target": "T", "steps": 40, "hours": 0.5, "device": "cpu"})
    lora = finetune.prepare(model, "lora", rank=4)
    lora.save(tmp_path / "wl" / "lora-r4", base="piper:joe", card={"target": "T", "steps": 90, "hours": 1.25})
    finetune.prepare(model, "lora", rank=2).save(tmp_path / "wo" / "lora-r2", base="piper:joe", card={"target": "U"})
    voices, absent, table = adaptation.long_run_adaptations(
        model, ["wf/full", "wl/lora-r4", "wo/lora-r2", "none/lora-r8"], "T", root=tmp_path)
    assert set(voices) == {"full@cpu-long", "lora-r4@cpu-long"}
    assert "another target" in absent["lora-r2@cpu-long"] and "none/lora-r8" in absent["lora-r8@cpu-long"]
    t = table.set_index("method")
    assert t.loc["lora-r4@cpu-long", "steps"] == 90 and t.loc["lora-r4@cpu-long", "machine_hours"] == 1.25
    share = 100 * lora.trainable_params() / full.trainable_params()
    assert t.loc["full@cpu-long", "trainable_pct_of_full"] == 100.0
    assert abs(t.loc["lora-r4@cpu-long", "trainable_pct_of_full"] - share) < 1e-9 and share < 5
