import numpy as np
import torch

from lib import finetune


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
    return finetune.Latents([f"u{i}" for i in range(4)], zs, wavs, hop=64)


def test_losses_are_zero_for_identical_and_positive_otherwise():
    y = torch.randn(1, 1, 4096)
    assert float(finetune.mr_stft_loss(y, y)) < 1e-5
    assert float(finetune.MelLoss(hop=256)(y, y)) == 0.0
    assert float(finetune.mr_stft_loss(0.5 * y, y)) > 0.1


def test_segments_stay_aligned():
    lat = _latents()
    z, y = finetune.random_segments(lat, 3, 10, np.random.default_rng(0))
    assert z.shape == (3, 8, 10) and y.shape == (3, 1, 640)


def test_train_decoder_learns_checkpoints_and_resumes(tmp_path):
    lat = _latents()
    student = _tiny()
    log = finetune.train_decoder(student, lat, 30, tmp_path, lr=2e-3, batch=2, frames=40, checkpoint_every=10,
                                 progress=None)
    assert len(log.loss) == 30 and np.mean(log.loss[-5:]) < np.mean(log.loss[:5])
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "curve.json").exists()
    assert log.s_per_step > 0
    again = finetune.train_decoder(_tiny(), lat, 40, tmp_path, lr=2e-3, batch=2, frames=40, progress=None)
    assert again.resumed_from == 30 and len(again.loss) == 40 and again.loss[:30] == log.loss
    done = finetune.train_decoder(_tiny(), lat, 40, tmp_path, progress=None)
    assert done.resumed_from == 40 and done.s_per_step > 0, "a finished run still reports its speed"
