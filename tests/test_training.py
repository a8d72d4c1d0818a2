"""The shared training stack: piper's discriminators and GAN losses (no copies here), a few adversarial steps on a
tiny decoder on CPU, and a stopped-and-resumed run that equals an uninterrupted one."""
import re
from pathlib import Path

import numpy as np
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
    src = training.Trainer._step.__code__.co_names
    assert {"discriminator_loss", "feature_loss", "generator_loss"} <= set(src)
    assert losses.feature_loss  # imported from piper at call time
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



