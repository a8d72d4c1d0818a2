"""The shared training stack: piper's discriminators and GAN losses (no copies here), a few adversarial steps on a
tiny decoder on CPU, and a stopped-and-resumed run that equals an uninterrupted one."""
import re
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lib.training import loop as training

LIB = Path(__file__).resolve().parent.parent / "lib"


def tiny_decoder(seed=0):
    from piper.train.vits.models import Generator
    torch.manual_seed(seed)
    return Generator(4, "2", (3,), ((1, 2),), (4, 4), 16, (8, 8))  # 4 latent channels, hop 16


def tiny_batches(seed=0, n=6, frames=32):
    """Random latents and a fixed random 'teacher' decoder's waveform for them."""
    teacher = tiny_decoder(seed=99).eval()
    g = torch.Generator().manual_seed(seed)
    zs = [torch.randn(1, 4, frames, generator=g) for _ in range(n)]
    with torch.no_grad():
        ys = [teacher(z) for z in zs]

    def batch(rng):
        picks = [int(rng.integers(n)) for _ in range(2)]
        return torch.cat([zs[i] for i in picks]), torch.cat([ys[i] for i in picks])
    return batch


def test_gan_parts_come_from_piper():
    from piper.train.vits import losses, models
    d = training.make_discriminators(("mpd", "mrd"))
    assert isinstance(d["mpd"], models.MultiPeriodDiscriminator)
    assert isinstance(d["mrd"], models.MultiResolutionDiscriminator)
    for name in ("discriminator_loss", "feature_loss", "generator_loss"):  # the loop's losses are piper's own
        assert getattr(training, name) is getattr(losses, name)
    for path in LIB.rglob("*.py"):
        text = path.read_text()
        for name in ("generator_loss", "discriminator_loss", "feature_loss", "kl_loss"):
            assert not re.search(rf"^def {name}\b", text, re.M), f"{path.name} copies piper's {name}"
        for name in ("MultiPeriodDiscriminator", "MultiResolutionDiscriminator", "DiscriminatorP", "DiscriminatorS"):
            assert not re.search(rf"^class {name}\b", text, re.M), f"{path.name} copies piper's {name}"


def _fit(work, steps, seed=0):
    recipe = training.Recipe(steps=steps, warmup_steps=2, discriminators=("mpd",), checkpoint_every=3,
                             log_every=1, lr=1e-3, lr_d=1e-3, seed=seed)
    gen = tiny_decoder()
    curve = training.Trainer(gen, tiny_batches(), recipe, work, forward=training.decoder_forward, threads=1,
                             progress=None).fit()
    return gen, curve


def tracked_scalars(folder: Path) -> dict:
    """{tag: [(step, value)]} from the TensorBoard event files under `folder` (TFRecord framing: a little-endian
    length, its CRC, an Event proto, its CRC)."""
    from tensorboardX.proto import event_pb2
    out = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            n = struct.unpack("<Q", data[i:i + 8])[0]
            event = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
            i += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_the_curve_goes_through_accelerates_tracker_as_well_as_the_csv(tmp_path):
    """Every logged row of curve.csv is in the TensorBoard files accelerate's tracker wrote in the run's folder, a
    resumed run's rows included, at their steps."""
    _fit(tmp_path / "a", 3)
    _fit(tmp_path / "a", 5)  # resumed: a second event file
    assert (tmp_path / "a" / training.TRACKER).is_dir()
    tracked = tracked_scalars(tmp_path / "a" / training.TRACKER)
    frame = pd.read_csv(tmp_path / "a" / "curve.csv")
    assert len(frame) == 5 and {"loss_g", "loss_mel", "loss_adv", "lr"} <= set(tracked)
    for tag in ("loss_g", "loss_mel", "lr"):
        logged = frame[["step", tag]].dropna()
        assert [s for s, _ in tracked[tag]] == logged["step"].tolist()
        assert [v for _, v in tracked[tag]] == pytest.approx(logged[tag].tolist(), rel=1e-6)


def test_adversarial_steps_run_and_resume_exactly(tmp_path):
    full, curve = _fit(tmp_path / "a", 6)
    assert curve.steps == [1, 2, 3, 4, 5, 6] and curve.resumed_from == 0
    frame = curve.frame
    assert frame.loc[frame["step"] <= 2, "loss_d"].isna().all(), "no adversarial term during the warm-up"
    assert frame.loc[frame["step"] > 2, ["loss_d", "loss_adv", "loss_fm"]].notna().all().all()
    assert (tmp_path / "a" / "curve.csv").exists() and (tmp_path / "a" / "state" / "model.safetensors").exists()
    stopped, first = _fit(tmp_path / "b", 3)                # stopped after 3 steps ...
    resumed, curve_b = _fit(tmp_path / "b", 6)              # ... and resumed to 6, in a fresh Trainer
    assert first.steps == [1, 2, 3] and curve_b.resumed_from == 3
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    np.testing.assert_array_equal(curve.frame["loss_g"].to_numpy(), curve_b.frame["loss_g"].to_numpy())
    moved = _fit(tmp_path / "c", 3, seed=1)[0]
    assert not all(torch.equal(a, b) for a, b in zip(stopped.parameters(), moved.parameters())), "the seed does nothing"


def test_a_signal_stops_a_run_after_its_step_checkpointed_and_it_resumes_exactly(tmp_path):
    """SIGTERM between checkpoints (every 100 steps here) stops the run after the step under way with a checkpoint
    there, exit code 143, the handler before put back; resumed, it ends where an uninterrupted run ends.
    Reconstruction only: the stop is the loop's, whatever the step does (adversarial resumption is tested above)."""
    import os
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be set in the main thread")
    recipe = training.Recipe(steps=6, adversarial=False, checkpoint_every=100, log_every=1, lr=1e-3)
    batches, calls = tiny_batches(), []

    def batch(rng):  # the signal arrives during the fourth step
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return batches(rng)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        training.Trainer(tiny_decoder(), batch, recipe, tmp_path / "b", forward=training.decoder_forward, threads=1,
                         progress=None).fit()
    assert stopped.value.code == 143 and signal.getsignal(signal.SIGTERM) is before and len(calls) == 4
    resumed = tiny_decoder(seed=5)
    curve = training.Trainer(resumed, tiny_batches(), recipe, tmp_path / "b", forward=training.decoder_forward,
                             threads=1, progress=None).fit()
    assert curve.resumed_from == 4 and curve.steps == [1, 2, 3, 4, 5, 6]
    full = tiny_decoder()
    training.Trainer(full, tiny_batches(), recipe, tmp_path / "a", forward=training.decoder_forward, threads=1,
                     progress=None).fit()
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_a_state_folder_for_another_model_is_refused(tmp_path):
    _fit(tmp_path / "a", 3)
    from piper.train.vits.models import Generator
    other = Generator(4, "2", (3,), ((1, 2),), (4, 4), 8, (8, 8))
    recipe = training.Recipe(steps=6, discriminators=("mpd",), checkpoint_every=3)
    with pytest.raises(ValueError, match="written for another model"):
        training.Trainer(other, tiny_batches(), recipe, tmp_path / "a", forward=training.decoder_forward,
                         progress=None).fit()


def test_recipe_names_bad_settings():
    with pytest.raises(ValueError, match="discriminators"):
        training.Recipe(steps=1, discriminators=("msd",))
    with pytest.raises(ValueError, match="mixed_precision"):
        training.Recipe(steps=1, mixed_precision="int8")





def test_every_named_discriminator_judges_with_pipers_interface_and_losses():
    """Each lighter discriminator returns piper's four lists, so piper's LSGAN and feature losses apply; fewer
    periods means piper's own period discriminators, fewer of them and no scale one; the Wave-U-Net judges every
    sample, whatever the length."""
    from piper.train.vits import losses, models
    from lib.training import discriminators as discs
    torch.manual_seed(0)
    y, y_hat = torch.randn(2, 1, 2000) * 0.1, torch.randn(2, 1, 2000) * 0.1
    for name in ("mrd", "mpd-235", "mpd-2", "wave-unet-small"):
        d = training.make_discriminators((name,))[name]
        real, fake, fmap_r, fmap_g = d(y, y_hat)
        assert len(real) == len(fake) == len(fmap_r) == len(fmap_g) >= 1, name
        for value in (losses.discriminator_loss(real, fake)[0], losses.generator_loss(fake)[0],
                      losses.feature_loss(fmap_r, fmap_g)):
            assert torch.isfinite(value) and value > 0, name
    fewer = training.make_discriminators(("mpd-235",))["mpd-235"]
    assert isinstance(fewer, models.MultiPeriodDiscriminator)
    assert [type(d).__name__ for d in fewer.discriminators] == ["DiscriminatorP"] * 3
    assert [d.period for d in fewer.discriminators] == [2, 3, 5]
    unet = discs.WaveUNetDiscriminator((4, 8))
    logits, fmap = unet.judge(torch.randn(3, 1, 1000))
    assert logits.shape == (3, 1000) and len(fmap) == 2 + 2 + 1
    assert discs.global_norm(torch.randn(2, 3, 50) * 7).pow(2).mean(dim=(1, 2)).sub(1).abs().max() < 1e-4


def test_the_discriminators_window_is_the_same_in_both_waveforms():
    torch.manual_seed(0)
    y = torch.arange(2 * 100, dtype=torch.float32).reshape(2, 1, 100)
    a, b = training.disc_window(y, y + 1000, 30)
    assert a.shape == (2, 1, 30) and torch.equal(b - a, torch.full_like(a, 1000))
    assert torch.equal(a[:, :, 1:] - a[:, :, :-1], torch.ones(2, 1, 29)), "a contiguous window of each item"
    assert training.disc_window(y, y, 0)[0] is y and training.disc_window(y, y, 100)[0] is y


def _fit_light(work, steps, **kw):
    recipe = training.Recipe(steps=steps, warmup_steps=1, discriminators=("wave-unet-small", "mpd-2"),
                             disc_segment=256, checkpoint_every=2, log_every=1, lr=1e-3, lr_d=1e-3, **kw)
    gen = tiny_decoder()
    trainer = training.Trainer(gen, tiny_batches(), recipe, work, forward=training.decoder_forward, threads=1,
                               progress=None)
    return gen, trainer, trainer.fit()


def test_light_discriminators_on_a_window_train_and_resume_exactly(tmp_path):
    """A lighter set on a random window of each segment: the adversarial terms appear after the warm-up, the
    discriminators are trainable again after the generator's step (which froze them), and a stopped run resumed
    equals an uninterrupted one (the window's random draws included)."""
    full, trainer, curve = _fit_light(tmp_path / "a", 4)
    assert np.isfinite(curve.frame.loc[curve.frame["step"] > 1, ["loss_d", "loss_adv", "loss_fm"]]).all().all()
    assert all(p.requires_grad for p in trainer.disc.parameters())
    _fit_light(tmp_path / "b", 2)
    resumed, _, curve_b = _fit_light(tmp_path / "b", 4)
    assert curve_b.resumed_from == 2
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name


def test_the_gan_objective_drops_the_regression_terms_once_the_discriminators_start(tmp_path):
    """With gan_objective the generator's loss is HiFi-GAN's once the discriminators are on (mel x45, adversarial,
    feature matching): the waveform term counts before the warm-up ends and not after."""
    _, _, curve = _fit_light(tmp_path / "a", 4, wave_weight=50.0, gan_objective=True)
    f = curve.frame.set_index("step")
    assert np.isfinite(f.loc[1, "loss_wave"]) and np.isnan(f.loc[1, "loss_adv"])
    late = f.loc[f.index > 1]
    assert late["loss_wave"].isna().all()
    assert np.allclose(late["loss_g"], 45.0 * late["loss_mel"] + late["loss_adv"] + late["loss_fm"], rtol=1e-4)
    _, _, kept = _fit_light(tmp_path / "b", 4, wave_weight=50.0)
    k = kept.frame[kept.frame["step"] > 1]  # the recipe's default keeps them, beside the adversarial terms
    assert np.allclose(k["loss_g"], 45.0 * k["loss_mel"] + 50.0 * k["loss_wave"] + k["loss_adv"] + k["loss_fm"],
                       rtol=1e-4)
    with pytest.raises(ValueError, match="gan_objective"):  # no discriminator ever starts: the switch would do nothing
        training.Recipe(steps=4, warmup_steps=4, gan_objective=True)


def test_bf16_discriminators_need_native_bf16(tmp_path, monkeypatch):
    """bf16 autocast of the discriminators is refused on a CPU that would emulate it, naming the CPU; where the
    CPU has it (AMX, AVX-512 BF16), the steps run."""
    from lib.core import machine
    monkeypatch.setattr(machine, "has_native_bf16", lambda: False)
    with pytest.raises(machine.PrecisionUnavailable, match="bf16"):
        _fit_light(tmp_path / "a", 2, disc_bf16=True)
    monkeypatch.undo()
    if not machine.has_native_bf16():
        pytest.skip(f"no native bf16 here ({machine.feature_line()})")
    _, _, curve = _fit_light(tmp_path / "b", 2, disc_bf16=True)
    assert np.isfinite(curve.frame["loss_d"].dropna()).all() and len(curve.frame["loss_d"].dropna())


def test_recipe_names_bad_window():
    with pytest.raises(ValueError, match="disc_segment"):
        training.Recipe(steps=1, disc_segment=-1)


def _harmonic_and_noisy(g: torch.Generator, samples: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Four voiced-like waveforms (19 harmonics of a random f0) and the same under white noise at 0 dB SNR."""
    t = torch.arange(samples) / 22050
    f0 = 100 + 100 * torch.rand(4, 1, generator=g)
    y = sum(torch.sin(2 * torch.pi * k * f0 * t + 6 * torch.rand(4, 1, generator=g)) / k for k in range(1, 20))
    y = (0.1 * y).unsqueeze(1)
    return y, y + y.std() * torch.randn(y.shape, generator=g)


@pytest.mark.parametrize("name", [
    "mpd-2",  # the arm's; mrd passes too, at 120 steps (a minute of CI: left out)
    pytest.param("wave-unet-small", marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        "at the recipe's discriminator lr (1e-4) our Wave-U-Net stays at chance (LSGAN loss 0.50), here and over "
        "the 10,008-step CPU arm of issue 39; at 1e-3 it learns: a discriminator the arms cannot use as it is"))),
])
def test_a_cheap_discriminator_learns_to_tell_clean_audio_from_noisy_at_the_recipes_rate(name):
    """The least an adversarial arm needs: with the recipe's own optimiser settings, the discriminator separates
    clean harmonic audio from the same at 0 dB SNR within 80 steps: its LSGAN loss under half of chance (0.5 for
    each of its outputs, the loss of a constant guess)."""
    from piper.train.vits.losses import discriminator_loss
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    torch.set_num_threads(1)
    recipe = training.Recipe(steps=80)
    d = training.make_discriminators((name,))[name]
    opt = torch.optim.AdamW(d.parameters(), lr=recipe.lr_d, betas=recipe.betas, eps=recipe.eps)
    losses, outputs = [], 0
    for _ in range(recipe.steps):
        y, noisy = _harmonic_and_noisy(g)
        real, fake = d(y, noisy)[:2]
        loss, outputs = discriminator_loss(real, fake)[0], len(real)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    chance = 0.5 * outputs
    assert np.mean(losses[-10:]) < chance / 2, \
        f"{name}: LSGAN loss {np.mean(losses[-10:]):.3f} after {recipe.steps} steps (chance {chance})"


def test_non_finite_gradients_skip_the_step_and_a_diverged_run_stops_with_finite_weights(tmp_path):
    """A step whose gradients are not finite is skipped, so the weights never turn NaN (issue 39's bf16 MRD arm
    did, at its first adversarial step); 21 in a row stop the run with an error naming it."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    steps = {"n": 0}

    def loss_fn(m, b):
        steps["n"] += 1
        loss = m(b[0]).pow(2).mean()
        return loss * float("nan") if steps["n"] > 2 else loss  # two good steps, then a diverged recipe

    recipe = training.Recipe(steps=100, adversarial=False, ema_decay=0, checkpoint_every=1000, log_every=1000)
    trainer = training.Trainer(net, lambda rng: (torch.randn(4, 3, generator=torch.Generator().manual_seed(0)),),
                               recipe, tmp_path, loss_fn=loss_fn, threads=1, progress=None)
    with pytest.raises(FloatingPointError, match="21 steps in a row up to step 22"):
        trainer.fit()
    after = net.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the two good steps did move it


def test_discriminator_only_warmup_holds_the_generator_while_the_discriminators_learn(tmp_path):
    """The adversarial phase's first `disc_warmup_steps` train the discriminators alone: the generator ends them as
    it began them (equal to a run stopped before them), the discriminators move, and the generator's adversarial
    terms start after."""
    _, _, curve = _fit_light(tmp_path / "a", 4, disc_warmup_steps=2)
    f = curve.frame.set_index("step")  # step 1 regression (warmup_steps=1), 2-3 discriminators only, 4 adversarial
    assert f.loc[[2, 3], "loss_d"].notna().all() and f.loc[[2, 3], ["loss_adv", "loss_fm"]].isna().all().all()
    assert f.loc[4, ["loss_adv", "loss_fm"]].notna().all()
    gen_b, trainer_b, _ = _fit_light(tmp_path / "b", 3, disc_warmup_steps=2)
    gen_c, _, _ = _fit_light(tmp_path / "c", 1)  # the same first regression step, no more
    for (name, b), c in zip(gen_b.named_parameters(), gen_c.parameters()):
        assert torch.equal(b, c), f"{name} moved during the discriminator-only steps"
    training.set_seed(0)  # as the trainer seeds them: the discriminators it started from
    fresh = training.make_discriminators(("wave-unet-small", "mpd-2"))
    trained = trainer_b.acc.unwrap_model(trainer_b.disc)
    assert all(a.shape == b.shape for a, b in zip(fresh.parameters(), trained.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(fresh.parameters(), trained.parameters())), "they never learned"


def test_stop_step_ends_a_run_checkpointed_before_its_schedule_does(tmp_path):
    """stop_step stops at that step with a checkpoint, the cosine still counting to `steps`; the same run resumed
    with a later stop goes on from there exactly as one run would."""
    def fit(work, stop):
        recipe = training.Recipe(steps=8, adversarial=False, schedule="cosine", stop_step=stop, checkpoint_every=100,
                                 log_every=1, lr=1e-3)
        gen = tiny_decoder()
        return gen, training.Trainer(gen, tiny_batches(), recipe, work, forward=training.decoder_forward, threads=1,
                                     progress=None).fit()
    _, curve = fit(tmp_path / "a", 3)
    assert curve.steps == [1, 2, 3] and (tmp_path / "a" / "state" / "model.safetensors").exists()
    full, whole = fit(tmp_path / "b", 5)
    resumed, rest = fit(tmp_path / "a", 5)
    assert rest.resumed_from == 3 and whole.frame["lr"].iloc[-1] > 1e-3 * 0.01, \
        "the cosine ends at `steps`, not at the stop"
    for (name, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="stop_step"):
        training.Recipe(steps=8, stop_step=-1)


def _held_generator_run(work, steps, disc_init=None, seed=0):
    """Discriminators (mpd-2, at 1e-3) learning alone against a held tiny generator: every step a discriminator
    step, so their loss falls step by step from chance."""
    recipe = training.Recipe(steps=steps, warmup_steps=0, disc_warmup_steps=steps, discriminators=("mpd-2",),
                             lr_d=1e-3, checkpoint_every=steps, log_every=1, seed=seed)
    trainer = training.Trainer(tiny_decoder(), tiny_batches(frames=64), recipe, work,
                               forward=training.decoder_forward, threads=1, progress=None, disc_init=disc_init)
    return trainer, trainer.fit().frame


def test_discriminators_resumed_from_a_pack_go_on_where_they_stopped_not_at_chance(tmp_path):
    """Issue 66: a run saves its discriminators and their AdamW moments as safetensors (no pickle), and a new run
    given them (`disc_init`, as a run started from a pack is) starts at the loss they had reached, while fresh ones
    start at chance; the weights and moments it loads are those saved, and its discriminator steps are counted."""
    from lib.training import disc_state
    first, a = _held_generator_run(tmp_path / "a", 30)
    chance = disc_state.chance_loss(first.acc.unwrap_model(first.disc))
    assert chance == 0.5 and a["disc_steps"].iloc[-1] == 30
    assert a["loss_d"].iloc[:3].mean() > 0.8 * chance > a["loss_d"].iloc[-3:].mean() * 2, "they never learned"
    meta = disc_state.info(tmp_path / "a")
    assert meta["discriminators"] == ["mpd-2"] and meta["disc_steps"] == 30
    resumed, b = _held_generator_run(tmp_path / "b", 3, disc_init=tmp_path / "a")
    fresh, c = _held_generator_run(tmp_path / "c", 3)
    assert resumed.disc_resumed["loaded"] == ["mpd-2"] and fresh.disc_resumed == {}
    assert b["loss_d"].iloc[0] < a["loss_d"].iloc[:3].mean() / 2 and c["loss_d"].iloc[0] > 0.8 * chance
    assert abs(b["loss_d"].iloc[0] - a["loss_d"].iloc[-1]) < 0.25 * (c["loss_d"].iloc[0] - a["loss_d"].iloc[-1])
    saved = disc_state.load(tmp_path / "a", training.make_discriminators(("mpd-2",)),
                            opt := torch.optim.AdamW(training.make_discriminators(("mpd-2",)).parameters()))
    assert saved["loaded"] == ["mpd-2"] and all(float(s["step"]) == 30 for s in opt.state.values())


def test_a_pack_keeps_the_discriminators_that_fit_and_says_which_it_left_out(tmp_path):
    """disc_state.copy packs the discriminators under the size limit (at float16 if asked) with the steps counted
    from the packed start, and names those left out with their size."""
    from lib.training import disc_state
    _held_generator_run(tmp_path / "a", 2)
    kept = disc_state.copy(tmp_path / "a", tmp_path / "pack", 102, limit_mb=200, dtype=torch.float16)
    assert kept == {"packed": ["mpd-2"], "left_out": {}}
    meta = disc_state.info(tmp_path / "pack")
    assert meta["disc_steps"] == 102 and meta["dtype"] == "float16"
    d = training.make_discriminators(("mpd-2",))
    assert disc_state.load(tmp_path / "pack", d, torch.optim.AdamW(d.parameters()))["loaded"] == ["mpd-2"]
    none = disc_state.copy(tmp_path / "a", tmp_path / "small", 2, limit_mb=1)
    assert none["packed"] == [] and "over 1 MB" in none["left_out"]["mpd-2"]
    assert not (tmp_path / "small" / disc_state.WEIGHTS).exists()
