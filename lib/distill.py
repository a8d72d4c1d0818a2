"""Distillation from synthetic data only: smaller students of the teacher's decoder (where most compute is) and of
its flow, trained on the teacher's own latents and audio, as a progressive chain in which each student learns
from the one before it (after the progressive distillation of TorToiSe; here the cost halved is width)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .finetune import Latents, TrainLog, train_loop


def decoder_width(decoder) -> int:
    return int(decoder.conv_pre.out_channels)


def decoder_student(teacher_model, width: int, init: str = "scratch", parent=None, example_z=None):
    """A HiFi-GAN decoder like the teacher's with `width` initial channels (every later stage halves it as in
    the teacher). `init='prune'` takes `parent`'s (default: the teacher decoder's) L2-strongest channels with
    torch-pruning; `init='scratch'` starts from random weights (weight-normed, as VITS trains them)."""
    hp = teacher_model.hparams
    parent = parent if parent is not None else teacher_model.dec
    if init == "prune":
        import torch
        from .compress import prune_structured
        if example_z is None:
            example_z = torch.zeros(1, hp["inter_channels"], 32)
        ratio = 1.0 - width / decoder_width(parent)
        if not 0 < ratio < 1:
            raise ValueError(f"a pruned student must be narrower than its parent ({decoder_width(parent)}), not {width}")
        return prune_structured(parent, ratio, example_z)
    if init != "scratch":
        raise ValueError(f"init {init!r}: use 'prune' or 'scratch'")
    from .artefacts import build_part
    return build_part("decoder", decoder_build(teacher_model, width))


def decoder_build(teacher_model, width: int) -> dict:
    """The arguments that rebuild a decoder student of `width` (artefacts.build_part's 'decoder')."""
    hp = teacher_model.hparams
    keys = ("inter_channels", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
            "upsample_kernel_sizes")
    return {**{k: hp[k] for k in keys}, "upsample_initial_channel": int(width)}


def flow_build(teacher_model, hidden: int) -> dict:
    """The arguments that rebuild a flow student of `hidden` channels (artefacts.build_part's 'flow')."""
    wn = teacher_model.flow.flows[0].enc
    return {"channels": teacher_model.hparams["inter_channels"], "hidden_channels": int(hidden),
            "kernel_size": wn.kernel_size[0], "dilation_rate": wn.dilation_rate, "n_layers": wn.n_layers,
            "n_flows": len(teacher_model.flow.flows) // 2}


def finalize(module):
    """Fold weight normalisation into plain weights (what inference and export want); a no-op when absent."""
    import torch
    for m in module.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    return module.eval()


def relabel(lat: Latents, decoder) -> Latents:
    """The same latents with `decoder`'s audio as the target: how the next student in the chain learns from
    this one rather than from the teacher."""
    import torch
    decoder.eval()
    with torch.no_grad():
        wavs = [decoder(z) for z in lat.z]
    return Latents(lat.ids, lat.z, wavs, lat.hop)


def with_parts(model, decoder=None, flow=None):
    """A copy of the full voice with its decoder and/or flow replaced by copies of students (whose weight
    normalisation is folded first, in place: they are done training)."""
    out = copy.deepcopy(model)
    if decoder is not None:
        out.dec = copy.deepcopy(finalize(decoder))
    if flow is not None:
        out.flow = copy.deepcopy(finalize(flow))
    return out.eval()


@dataclass
class FlowPairs:
    """Per utterance: the prior sample z_p, its mask, and the teacher flow's output z = flow^-1(z_p)."""
    z_p: list
    mask: list
    z: list


def flow_pairs(model, phoneme_ids: Sequence[list[int]], noise_scale: float = 0.667, noise_w: float = 0.0,
               draws: int = 2, seed: int = 0) -> FlowPairs:
    """Teacher flow inputs and outputs on the synthetic sentences, `draws` prior samples each (with sampling
    noise, so the student sees the spread it will meet at inference)."""
    import torch
    torch.manual_seed(seed)
    zp, masks, zs = [], [], []
    with torch.no_grad():
        for ids in phoneme_ids:
            for _ in range(draws):
                _, _, y_mask, (z, z_p, _, _) = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                                           noise_scale=noise_scale, noise_scale_w=noise_w)
                zp.append(z_p.clone())
                masks.append(y_mask.clone())
                zs.append(z.clone())
    return FlowPairs(zp, masks, zs)


def flow_student(teacher_model, hidden: int, n_layers: int | None = None):
    """The teacher's flow (residual coupling layers, reverse direction at inference) at `hidden` channels."""
    from .artefacts import build_part
    build = flow_build(teacher_model, hidden)
    return build_part("flow", {**build, "n_layers": n_layers or build["n_layers"]})


def _flow_batch(pairs: FlowPairs, batch: int, frames: int, rng):
    import torch
    zp, mk, zz = [], [], []
    for _ in range(batch):
        i = int(rng.integers(len(pairs.z)))
        n = pairs.z[i].shape[-1]
        s = int(rng.integers(max(1, n - frames + 1)))
        pad = max(0, frames - n)
        cut = lambda t: torch.nn.functional.pad(t[..., s:s + frames], (0, pad))  # noqa: E731
        zp.append(cut(pairs.z_p[i]))
        mk.append(cut(pairs.mask[i]))
        zz.append(cut(pairs.z[i]))
    return torch.cat(zp), torch.cat(mk), torch.cat(zz)


def train_flow(student, pairs: FlowPairs, steps: int, ckpt_dir: Path, lr: float = 5e-4, batch: int = 8,
               frames: int = 128, seed: int = 0, threads: int = 2, progress: str | None = "flow",
               device: str = "cpu") -> TrainLog:
    """Fit the student flow's reverse pass to the teacher's: masked L1 between student(z_p) and teacher z."""
    def loss(flow, z_p, mask, z):
        out = flow(z_p, mask, g=None, reverse=True)
        return (out - z).abs().mul(mask).sum() / (mask.sum() * z.shape[1]).clamp_min(1.0)

    return train_loop(student, lambda rng: _flow_batch(pairs, batch, frames, rng), loss, steps, ckpt_dir, lr=lr,
                      seed=seed, threads=threads, progress=progress, device=device)


def student_cost(model, ids: Sequence[list[int]]) -> dict[str, float]:
    """Parameters and GFLOP per second of audio of the voice, by module, over a few sentences."""
    import torch
    from . import bench
    flops, audio_s = {}, 0.0
    for x in ids:
        out = []

        def run():
            with torch.no_grad():
                out.append(model.infer(torch.tensor([x]), torch.tensor([len(x)]), noise_scale=0.0, noise_scale_w=0.0)[0])

        for k, v in bench.flops_by_module(run, model).items():
            flops[k] = flops.get(k, 0.0) + v
        audio_s += out[0].numel() / 22050
    return {"params": float(sum(p.numel() for p in model.parameters())),
            "gflop_per_audio_s": flops.get("total", np.nan) / audio_s / 1e9,
            "dec_gflop_per_audio_s": flops.get("dec", np.nan) / audio_s / 1e9,
            "flow_gflop_per_audio_s": flops.get("flow", np.nan) / audio_s / 1e9}
