"""The teacher corpus on disk and as a stream (issue 49): float16 safetensors shards of what the teacher said (phoneme
ids, durations, the decoder's input latents and the audio they decode to) and the manifest that names them.

Students stream batches from the shards (safetensors slices are read from a memory map, so a corpus of many hours
is never held in memory). A corpus of fewer hours is a prefix of the shards: the first shards mix every family,
so one written corpus gives the 15-minute, 1-hour and 10-hour corpora of a data-scaling curve.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
# The tensors of one shard: flat per-item arrays with offsets (item k spans [offsets[k], offsets[k + 1])).
KEYS = ("phonemes", "durations", "phoneme_offsets", "latents", "frame_offsets", "audio", "sampling")


class CorpusShardError(ValueError):
    """A corpus folder, manifest or shard that cannot be read; the message names the file."""


def read_manifest(root: Path) -> dict:
    """The manifest of a corpus folder (or the manifest file itself); CorpusShardError names what is wrong."""
    path = Path(root) / MANIFEST if Path(root).is_dir() else Path(root)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CorpusShardError(f"{path}: not a corpus manifest ({type(exc).__name__}: {exc}); write the corpus with "
                               f"`tts-lab corpus --out {path.parent}`") from None
    missing = [k for k in ("seed", "text_hash", "shards", "hop", "sample_rate") if k not in data]
    if missing:
        raise CorpusShardError(f"{path}: manifest lacks {missing}")
    return data


def prefix(manifest: dict, hours: float = 0.0) -> list[dict]:
    """The first shards of the manifest that hold at least `hours` of audio (all of them for 0); an error naming
    both where the corpus holds fewer hours than asked."""
    shards, total = [], 0.0
    for s in manifest["shards"]:
        if hours and total >= hours:
            break
        shards.append(s)
        total += s["seconds"] / 3600
    if hours and total + 1e-9 < hours:
        raise CorpusShardError(f"the corpus holds {total:.2f} h of audio, fewer than the {hours:g} h asked for")
    return shards


@dataclass(frozen=True)
class CorpusSummary:
    """What a run records of the corpus it learned from: hours, distinct sentences, the hash of its shards."""
    hours: float
    sentences: int
    hash: str
    shards: int

    def as_dict(self) -> dict:
        return {"corpus_hours": round(self.hours, 4), "corpus_sentences": self.sentences, "corpus_hash": self.hash,
                "corpus_shards": self.shards}


def summarize(manifest: dict, shards: list[dict]) -> CorpusSummary:
    """The summary of a prefix of shards: its hash covers the text's hash and each shard's own."""
    h = hashlib.sha256(manifest["text_hash"].encode())
    for s in shards:
        h.update(s["sha256"].encode())
    return CorpusSummary(sum(s["seconds"] for s in shards) / 3600, sum(s["items"] for s in shards), h.hexdigest(),
                         len(shards))


class CorpusStream:
    """Random aligned (latent, waveform) segments from a prefix of a written corpus, read shard slice by shard slice.
    `random_segments` has the shape of lib.training.batches.random_segments, so a Trainer's batch function is the
    same for the 15-minute in-memory corpus and this one."""

    def __init__(self, root: Path, hours: float = 0.0):
        from safetensors import safe_open
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.shards = prefix(self.manifest, hours)
        self.summary = summarize(self.manifest, self.shards)
        self.hop = int(self.manifest["hop"])
        self._files, self._items = [], []  # open handles; (shard, start frame, frames) per item
        for i, s in enumerate(self.shards):
            path = self.root / s["file"]
            if not path.is_file():
                raise CorpusShardError(f"{path} is missing: the manifest names it (write it with `tts-lab corpus`)")
            handle = safe_open(str(path), framework="pt")
            offsets = handle.get_tensor("frame_offsets").numpy()
            self._files.append(handle)
            self._items += [(i, int(a), int(b - a)) for a, b in zip(offsets[:-1], offsets[1:])]

    def __len__(self) -> int:
        return len(self._items)

    def item(self, k: int):
        """The whole latent [1, C, frames] and waveform [1, 1, frames * hop] of item `k`, as float32."""
        shard, start, n = self._items[k]
        return self._cut(shard, start, n, 0, n)

    def _cut(self, shard: int, start: int, n: int, s: int, frames: int):
        f = self._files[shard]
        z = f.get_slice("latents")[:, start + s: start + s + frames].float()[None]
        y = f.get_slice("audio")[(start + s) * self.hop:(start + s + frames) * self.hop].float()[None, None]
        return z, y

    def random_segments(self, batch: int, frames: int, rng: np.random.Generator):
        """A batch of aligned (z, waveform) segments of `frames` latent frames, zero-padded where an item is
        shorter; items drawn uniformly, as the in-memory corpus draws its utterances."""
        import torch
        zb, yb = [], []
        for _ in range(batch):
            shard, start, n = self._items[int(rng.integers(len(self._items)))]
            s = int(rng.integers(n - frames)) if n > frames else 0
            z, y = self._cut(shard, start, n, s, min(frames, n))
            pad = frames - z.shape[-1]
            zb.append(torch.nn.functional.pad(z, (0, pad)))
            yb.append(torch.nn.functional.pad(y, (0, pad * self.hop)))
        return torch.cat(zb), torch.cat(yb)
