"""What the training loop eats for decoder students: the teacher's own latents and waveforms (`Latents`) and the
random aligned segments a batch is cut from (adaptation's batches: lib.training.vits_objective)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
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
                    noise_scale: float = 0.0, noise_w: float = 0.0, seed: int = 0,
                    cache: Path | None = None) -> Latents:
    """Run the teacher's text-to-latent path (enc_p, dp, flow) and its decoder once per utterance, noise off by
    default, so a student decoder can learn the teacher's exact mapping z -> waveform. With `cache` (a folder), the
    result is kept there under a key of the model's weights, the ids and the settings, and read back by the next call
    that asks for the same: notebooks 03 and 04 of one run learn from the same sentences of the same teacher."""
    import torch
    settings = dict(length_scale=length_scale, noise_scale=noise_scale, noise_w=noise_w, seed=seed)
    stored = Path(cache) / f"{_latents_key(model, phoneme_ids, names, settings)}.safetensors" if cache else None
    if stored is not None and stored.is_file():
        return _read_latents(stored)
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
    lat = Latents(list(names), zs, wavs, hop)
    if stored is not None:
        _write_latents(stored, lat)
    return lat


def _latents_key(model, phoneme_ids: Sequence[list[int]], names: Sequence[str], settings: dict) -> str:
    """What teacher latents depend on: the model's class and weights, the utterances and the sampling settings (and
    torch's version, whose kernels made them)."""
    import hashlib

    import torch
    h = hashlib.sha256(json.dumps([type(model).__module__, type(model).__qualname__, torch.__version__,
                                   [list(map(int, i)) for i in phoneme_ids], list(names), settings]).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def _write_latents(path: Path, lat: Latents) -> None:
    from safetensors.torch import save

    from lib.core.results import atomic_write_bytes  # deferred: pandas, which a bare GPU machine may lack
    tensors = {**{f"z.{i}": z.contiguous() for i, z in enumerate(lat.z)},
               **{f"wav.{i}": w.contiguous() for i, w in enumerate(lat.wav)}}
    atomic_write_bytes(path, save(tensors, metadata={"ids": json.dumps(lat.ids), "hop": str(lat.hop)}))


def _read_latents(path: Path) -> Latents:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
        ids = json.loads(meta["ids"])
        return Latents(ids, [fh.get_tensor(f"z.{i}") for i in range(len(ids))],
                       [fh.get_tensor(f"wav.{i}") for i in range(len(ids))], int(meta["hop"]))


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



