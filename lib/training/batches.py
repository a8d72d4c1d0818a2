"""What the training loop eats for decoder students: the teacher's own latents and waveforms (`Latents`) and the
random aligned segments a batch is cut from (adaptation's batches: lib.training.vits_objective)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lib.core.pause import yield_point
from lib.voices import piper_torch


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
    hop = piper_torch.hop_length(model)
    with torch.no_grad():
        for ids in phoneme_ids:
            yield_point()  # a long run's setup waits too while anything is timed
            x = torch.tensor([ids], dtype=torch.long)
            o, _, y_mask, (z, _, _, _) = model.infer(x, torch.tensor([len(ids)]), noise_scale=noise_scale,
                                                     length_scale=length_scale, noise_scale_w=noise_w)
            zs.append((z * y_mask).clone())
            wavs.append(o.clone())
    return Latents(list(names), zs, wavs, hop)


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



