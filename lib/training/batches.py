"""What the training loop eats: the teacher's own latents and waveforms (`Latents`, for decoder students) and its
alignment with a target waveform (`AlignedSet`, for adaptation), and the random segments a batch is cut from."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core.audio import DEFAULT_SAMPLE_RATE


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
    from lib.core.pause import yield_point
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


@dataclass
class AlignedSet:
    """Per utterance: phoneme ids, the teacher's alignment (latent frames x phonemes, so its durations stay fixed)
    and the target waveform, aligned with the teacher's latent frames."""
    ids: list[str]
    phonemes: list  # LongTensor [T_x]
    attn: list  # FloatTensor [T_y, T_x]
    wav: list  # FloatTensor [1, 1, T_y * hop]
    hop: int

    def save(self, path: Path) -> Path:
        """One safetensors file (tensors per utterance; ids and hop in its metadata), never a pickle."""
        import json
        from safetensors.torch import save_file
        tensors = {f"{k}.{i}": t.contiguous() for k in ("phonemes", "attn", "wav") for i, t in enumerate(getattr(self, k))}
        tmp = Path(path).with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"ids": json.dumps(self.ids), "hop": str(self.hop)})
        tmp.replace(path)
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> "AlignedSet":
        import json
        from safetensors import safe_open
        with safe_open(str(path), "pt") as f:
            meta = f.metadata()
            ids = json.loads(meta["ids"])
            parts = {k: [f.get_tensor(f"{k}.{i}") for i in range(len(ids))] for k in ("phonemes", "attn", "wav")}
        return cls(ids, parts["phonemes"], parts["attn"], parts["wav"], int(meta["hop"]))


def aligned_set(model, phoneme_ids: Sequence[list[int]], names: Sequence[str], target=None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                progress: str | None = "targets", texts: Sequence[str] | None = None) -> AlignedSet:
    """Run the teacher noise-free on each utterance; keep its alignment and its waveform passed through `target`
    (a callable audio, sr -> audio of the same length, e.g. VoiceShift; a SpeakerTarget also gets the utterance's
    text from `texts`; None keeps the teacher's own)."""
    if getattr(target, "needs_text", False) and (texts is None or len(texts) != len(phoneme_ids)):
        raise ValueError("a SpeakerTarget needs the text of every utterance (texts=...)")
    import torch
    from tqdm.auto import tqdm
    from lib.core.pause import yield_point
    hop = int(np.prod(model.hparams["upsample_rates"]))
    phon, attns, wavs = [], [], []
    model.eval()
    with torch.no_grad():
        for k, ids in enumerate(tqdm(phoneme_ids, desc=progress, disable=progress is None, leave=False)):
            yield_point()  # a long run's setup waits too while anything is timed
            x = torch.tensor([ids], dtype=torch.long)
            o, attn, _, _ = model.infer(x, torch.tensor([len(ids)]), noise_scale=0.0, noise_scale_w=0.0)
            a = attn[0, 0].float()
            y = o.reshape(-1).numpy()[: a.shape[0] * hop]
            if target is not None:
                y = target(y, sample_rate, texts[k] if texts is not None else None)
            phon.append(x[0])
            attns.append(a)
            wavs.append(torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).reshape(1, 1, -1))
    return AlignedSet(list(names), phon, attns, wavs, hop)


def aligned_segments(data: AlignedSet, batch: int, frames: int, rng: np.random.Generator):
    """A batch of random `frames`-frame segments: phonemes [B, T_x] (zero-padded), their lengths, the alignment
    rows of the segment [B, frames, T_x] and the target waveform [B, 1, frames * hop]."""
    import torch
    picks = [int(rng.integers(len(data.ids))) for _ in range(batch)]
    tx = max(data.phonemes[i].numel() for i in picks)
    xs, lens, attns, ys = [], [], [], []
    for i in picks:
        a, n = data.attn[i], data.attn[i].shape[0]
        s = int(rng.integers(max(1, n - frames + 1)))
        seg = a[s:s + frames]
        y = data.wav[i][..., s * data.hop:(s + seg.shape[0]) * data.hop]
        xs.append(torch.nn.functional.pad(data.phonemes[i], (0, tx - data.phonemes[i].numel())))
        lens.append(data.phonemes[i].numel())
        attns.append(torch.nn.functional.pad(seg, (0, tx - seg.shape[1], 0, frames - seg.shape[0])))
        ys.append(torch.nn.functional.pad(y, (0, frames * data.hop - y.shape[-1])))
    return torch.stack(xs), torch.tensor(lens), torch.stack(attns), torch.cat(ys)
