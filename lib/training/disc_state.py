"""The discriminators' state as files others can load: their weights and their AdamW moments as safetensors beside a
generator, so that an adversarial run started from a pack resumes its discriminators instead of warming fresh ones
up (a CPU run continues a GPU slot's GAN, and the other way round). accelerate's own checkpoint pickles the
optimiser, so the pack keeps this form (no pickle ships).

- `discriminators.safetensors`: `<name>.<parameter>` for each discriminator by its registry name, with metadata
  (names, the discriminators' steps, their learning rate, the dtype written);
- `discriminators.optim.safetensors`: `exp_avg.`, `exp_avg_sq.` and `step.` of each parameter under the same keys.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

_LOGGER = logging.getLogger(__name__)
WEIGHTS, MOMENTS = "discriminators.safetensors", "discriminators.optim.safetensors"
MOMENT_KEYS = ("exp_avg", "exp_avg_sq", "step")


def chance_loss(disc: torch.nn.ModuleDict) -> float:
    """The LSGAN discriminator loss of a constant guess of 0.5 for real and fake (0.25 + 0.25 per sub-discriminator
    output), summed over `disc`: what its loss reads while it tells nothing apart (piper's MPD + MRD: 4.5)."""
    return 0.5 * sum(len(getattr(d, "discriminators", [d])) for d in disc.values())


def save(folder: Path, disc: torch.nn.ModuleDict, opt: torch.optim.Optimizer, disc_steps: int,
         dtype: torch.dtype = torch.float32) -> None:
    """Write the weights and moments of `disc` (trained by `opt`) to `folder`, atomically (each file written beside
    and swapped in); `disc_steps`: the discriminators' optimiser steps the metadata records."""
    folder = Path(folder)
    names = {id(p): n for n, p in disc.named_parameters()}
    weights = {n: p.detach().to("cpu", dtype).contiguous() for n, p in disc.named_parameters()}
    moments = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if key in MOMENT_KEYS:
                    moments[f"{key}.{names[id(p)]}"] = torch.as_tensor(value).detach().to(
                        "cpu", torch.float32 if key == "step" else dtype).contiguous()
    meta = {"discriminators": json.dumps(list(disc)), "disc_steps": str(int(disc_steps)),
            "lr": repr(float(opt.param_groups[0]["lr"])), "dtype": str(dtype).removeprefix("torch.")}
    for name, tensors in ((WEIGHTS, weights), (MOMENTS, moments)):
        tmp = folder / f".{name}.tmp"
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(folder / name)


def info(folder: Path) -> dict | None:
    """The metadata of the discriminators packed in `folder` (names, disc_steps, lr, dtype); None where none are."""
    path = Path(folder) / WEIGHTS
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return {"discriminators": json.loads(meta.get("discriminators", "[]")),
            "disc_steps": int(meta.get("disc_steps", 0)), "lr": float(meta.get("lr", "nan")),
            "dtype": meta.get("dtype", "float32")}


def load(folder: Path, disc: torch.nn.ModuleDict, opt: torch.optim.Optimizer) -> dict:
    """Load into `disc` and `opt` every discriminator of `disc` that `folder` holds (weights in float32, and their
    moments where packed), setting the learning rate to the packed one; the others stay fresh. Returns what was
    loaded and what stayed fresh. ValueError names a tensor whose shape differs."""
    folder, meta = Path(folder), info(folder)
    if meta is None:
        return {"loaded": [], "fresh": list(disc)}
    loaded = [n for n in disc if n in meta["discriminators"]]
    params = dict(disc.named_parameters())
    with safe_open(str(folder / WEIGHTS), "pt") as f:
        for key, p in params.items():
            if key.split(".", 1)[0] in loaded:
                value = f.get_tensor(key)
                if value.shape != p.shape:
                    raise ValueError(f"{folder / WEIGHTS}: {key} is {tuple(value.shape)}, this run's {tuple(p.shape)}")
                with torch.no_grad():
                    p.copy_(value.float())
    moments = folder / MOMENTS
    if moments.exists() and loaded:
        with safe_open(str(moments), "pt") as f:
            keys = set(f.keys())
            for key, p in params.items():
                if key.split(".", 1)[0] in loaded and f"exp_avg.{key}" in keys:
                    opt.state[p] = {k: f.get_tensor(f"{k}.{key}").float() for k in MOMENT_KEYS}
    if loaded and meta["lr"] == meta["lr"]:  # not NaN: the packed rate goes on decaying from where it was
        for group in opt.param_groups:
            group["lr"] = meta["lr"]
    _LOGGER.info("discriminators %s resumed from %s (%d steps, %s)%s", loaded, folder, meta["disc_steps"],
                 meta["dtype"], f"; fresh: {[n for n in disc if n not in loaded]}" if set(disc) - set(loaded) else "")
    return {"loaded": loaded, "fresh": [n for n in disc if n not in loaded], "disc_steps": meta["disc_steps"]}


def copy(src: Path, dest: Path, total_steps: int, limit_mb: float, dtype: torch.dtype = torch.float32) -> dict:
    """Copy the discriminators a run folder `src` saved into the pack `dest`, at `dtype`, keeping only those whose
    weights and moments together fit in `limit_mb` (piper's MPD, 47 M parameters, does not fit a commit: it stays in
    the run's local state); `total_steps`: the discriminators' steps the pack records (its start's counted).
    Returns {"packed": names, "left_out": {name: why}}."""
    meta = info(src)
    if meta is None:
        return {"packed": [], "left_out": {}}
    bytes_per = torch.tensor([], dtype=dtype).element_size()
    with safe_open(str(Path(src) / WEIGHTS), "pt") as f:
        sizes = {}
        for key in f.keys():
            shape = f.get_slice(key).get_shape()
            sizes[key.split(".", 1)[0]] = sizes.get(key.split(".", 1)[0], 0) + int(torch.tensor(shape).prod())
    keep = [n for n in meta["discriminators"] if 0 < limit_mb and sizes.get(n, 0) * bytes_per * 3 / 2 ** 20 <= limit_mb]
    left = {n: f"{sizes.get(n, 0) * bytes_per * 3 / 2 ** 20:.0f} MB of weights and moments at {dtype}, over "
               f"{limit_mb:g} MB" for n in meta["discriminators"] if n not in keep}
    if keep:
        with safe_open(str(Path(src) / WEIGHTS), "pt") as f:
            weights = {k: f.get_tensor(k).to(dtype) for k in f.keys() if k.split(".", 1)[0] in keep}
        moments = {}
        if (Path(src) / MOMENTS).exists():
            with safe_open(str(Path(src) / MOMENTS), "pt") as f:
                moments = {k: f.get_tensor(k).to(torch.float32 if k.startswith("step.") else dtype)
                           for k in f.keys() if k.split(".", 2)[1] in keep}
        out = {"discriminators": json.dumps(keep), "disc_steps": str(int(total_steps)), "lr": repr(meta["lr"]),
               "dtype": str(dtype).removeprefix("torch.")}
        Path(dest).mkdir(parents=True, exist_ok=True)
        for name, tensors in ((WEIGHTS, weights), (MOMENTS, moments)):
            if tensors:
                tmp = Path(dest) / f".{name}.tmp"
                save_file(tensors, str(tmp), metadata=out)
                tmp.replace(Path(dest) / name)
    for name, why in left.items():
        _LOGGER.info("discriminator %s not packed: %s", name, why)
    return {"packed": keep, "left_out": left}
