"""Training the voice's waveform path offline: teacher latents from the synthetic corpus, mel + multi-resolution
STFT losses, and a decoder training loop that checkpoints, resumes and logs its curve."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .results import atomic_write_json


@dataclass
class Latents:
    """Per utterance: the flow's output z (the decoder's input) and the teacher decoder's waveform for it."""
    ids: list[str]
    z: list  # torch tensors [1, C, frames]
    wav: list  # torch tensors [1, 1, frames * hop]
    hop: int


def teacher_latents(model, phoneme_ids: Sequence[list[int]], names: Sequence[str], length_scale: float = 1.0,
                    noise_scale: float = 0.0, noise_w: float = 0.0, seed: int = 0) -> Latents:
    """Run the teacher's text-to-latent path (enc_p, dp, flow) and its decoder once per utterance, noise off by
    default, so a student decoder can learn the teacher's exact mapping z -> waveform."""
    import torch
    torch.manual_seed(seed)
    zs, wavs = [], []
    hop = int(np.prod(model.hparams["upsample_rates"]))
    with torch.no_grad():
        for ids in phoneme_ids:
            x = torch.tensor([ids], dtype=torch.long)
            o, _, y_mask, (z, _, _, _) = model.infer(x, torch.tensor([len(ids)]), noise_scale=noise_scale,
                                                     length_scale=length_scale, noise_scale_w=noise_w)
            zs.append((z * y_mask).clone())
            wavs.append(o.clone())
    return Latents(list(names), zs, wavs, hop)


def _stft_mag(x, n_fft: int, hop: int, win: int):
    import torch
    spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft, hop, win, window=torch.hann_window(win, device=x.device),
                      return_complex=True)
    return spec.abs().clamp_min(1e-7)


def mr_stft_loss(y_hat, y, resolutions=((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))):
    """Multi-resolution STFT loss (Parallel WaveGAN): spectral convergence + log-magnitude L1, averaged."""
    import torch
    total = 0.0
    for n_fft, hop, win in resolutions:
        a, b = _stft_mag(y_hat, n_fft, hop, win), _stft_mag(y, n_fft, hop, win)
        sc = torch.linalg.norm(b - a) / torch.linalg.norm(b).clamp_min(1e-7)
        mag = torch.nn.functional.l1_loss(torch.log(a), torch.log(b))
        total = total + sc + mag
    return total / len(resolutions)


class MelLoss:
    """L1 between log-mel spectrograms (80 bands, VITS's analysis settings)."""

    def __init__(self, sample_rate: int = 22050, n_fft: int = 1024, hop: int = 256, n_mels: int = 80):
        import librosa
        import torch
        self.n_fft, self.hop = n_fft, hop
        self.fb = torch.from_numpy(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)).float()

    def mel(self, x):
        import torch
        mag = _stft_mag(x, self.n_fft, self.hop, self.n_fft)
        return torch.log(torch.matmul(self.fb.to(x.device), mag).clamp_min(1e-5))

    def __call__(self, y_hat, y):
        import torch
        return torch.nn.functional.l1_loss(self.mel(y_hat), self.mel(y))


def random_segments(lat: Latents, batch: int, frames: int, rng: np.random.Generator):
    """A batch of aligned (z, waveform) segments of `frames` latent frames."""
    import torch
    zb, yb = [], []
    for _ in range(batch):
        i = int(rng.integers(len(lat.z)))
        z, y = lat.z[i], lat.wav[i]
        n = z.shape[-1]
        if n <= frames:
            pad = frames - n
            zb.append(torch.nn.functional.pad(z, (0, pad)))
            yb.append(torch.nn.functional.pad(y, (0, pad * lat.hop)))
            continue
        s = int(rng.integers(n - frames))
        zb.append(z[..., s:s + frames])
        yb.append(y[..., s * lat.hop:(s + frames) * lat.hop])
    return torch.cat(zb), torch.cat(yb)


@dataclass
class TrainLog:
    steps: list
    loss: list
    seconds: float
    resumed_from: int

    @property
    def s_per_step(self) -> float:
        """Wall seconds per training step, over every call that trained this checkpoint."""
        return self.seconds / max(1, len(self.steps))


def train_loop(module, next_batch, loss_fn, steps: int, ckpt_dir: Path, lr: float = 2.0e-4, seed: int = 0,
               checkpoint_every: int = 50, threads: int = 2, progress: str | None = "train",
               device: str = "cpu") -> TrainLog:
    """AdamW on `loss_fn(module, *next_batch(rng))` for `steps` steps, with gradient clipping.

    Checkpoints model, optimiser and loss curve to ckpt_dir every `checkpoint_every` steps and at the end; a
    second call with the same ckpt_dir resumes where the first stopped (and does nothing if it had finished)."""
    import torch
    from tqdm.auto import tqdm
    if device == "cpu":
        torch.set_num_threads(threads)
    module.to(device)
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt = ckpt_dir / "checkpoint.pt"
    opt = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.8, 0.99))
    log = {"steps": [], "loss": [], "seconds": 0.0}
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        module.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        log, start = state["log"], state["step"]
    resumed_from = start
    rng = np.random.default_rng(seed + start)
    module.train()
    t0 = time.perf_counter()
    saved_at = [0.0]

    def save(step):
        log["seconds"] = log.get("seconds", 0.0) + time.perf_counter() - t0 - saved_at[0]
        saved_at[0] = time.perf_counter() - t0
        tmp = ckpt_dir / ".checkpoint.pt.tmp"
        torch.save({"model": module.state_dict(), "opt": opt.state_dict(), "log": log, "step": step}, tmp)
        tmp.replace(ckpt)
        atomic_write_json(ckpt_dir / "curve.json", log)

    for step in tqdm(range(start, steps), desc=progress, disable=progress is None, initial=start, total=steps):
        batch = [b.to(device) for b in next_batch(rng)]
        loss = loss_fn(module, *batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 10.0)
        opt.step()
        log["steps"].append(step + 1)
        log["loss"].append(float(loss.detach()))
        if (step + 1) % checkpoint_every == 0:
            save(step + 1)
    if steps > start:
        save(steps)
    module.eval()
    return TrainLog(log["steps"], log["loss"], log.get("seconds", 0.0), resumed_from)


def train_decoder(decoder, lat: Latents, steps: int, ckpt_dir: Path, lr: float = 2.0e-4, batch: int = 4,
                  frames: int = 32, mel_weight: float = 1.0, stft_weight: float = 1.0, seed: int = 0,
                  checkpoint_every: int = 50, threads: int = 2, progress: str | None = "train",
                  device: str = "cpu") -> TrainLog:
    """Fit `decoder` so that decoder(z) matches the teacher waveform for z, with mel L1 + MR-STFT, on random
    aligned segments; checkpoints and resumes as `train_loop`."""
    mel_loss = MelLoss(hop=lat.hop)

    def loss(dec, z, y):
        y_hat = dec(z)
        return mel_weight * mel_loss(y_hat, y) + stft_weight * mr_stft_loss(y_hat, y)

    return train_loop(decoder, lambda rng: random_segments(lat, batch, frames, rng), loss, steps, ckpt_dir, lr=lr,
                      seed=seed, checkpoint_every=checkpoint_every, threads=threads, progress=progress, device=device)
