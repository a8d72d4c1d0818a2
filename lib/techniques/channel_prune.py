"""Channel pruning of a HiFi-GAN decoder (piper's Generator) that keeps the teacher's own channels and refits them:

1. choose, in each stage's residual stream, the channels with the largest activations (RMS) on the teacher's data;
2. slice every layer to those channels (a student of the same build at a smaller `upsample_initial_channel`);
3. refit each sliced layer, in forward order, by ridge least squares from the student's own input (every earlier
   layer already refitted) to the teacher's output on the kept channels (He et al. 2017, arXiv 1707.06168).

Because the student keeps a subset of the teacher's channels, the teacher's stage outputs on those channels are
direct targets for the student's (`stage_outputs`), with no adapter. Written here because torch-pruning ranks
channels by weights and has no least-squares reconstruction step."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from lib.core.pause import yield_point
from lib.techniques.distill import decoder_student
from lib.voices.hybrid_decoder import run_stages
from lib.voices.parts import build_part, fold_weight_norm, hybrid_build

def stage_outputs(dec, z) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """piper's Generator.forward, step by step: (waveform, [conv_pre output, each stage's output]); the last
    activation before conv_post is F.leaky_relu's default slope, as piper's."""
    x, feats = run_stages(dec, z)
    return torch.tanh(dec.conv_post(F.leaky_relu(x))), feats


def stage_widths(dec) -> list[int]:
    return [dec.conv_pre.out_channels] + [up.out_channels for up in dec.ups]


@torch.no_grad()
def choose_channels(dec, zs, width: int) -> list[torch.Tensor]:
    """Per stream (conv_pre output, then each stage), the indices of the `width // 2**i` channels of largest RMS
    over the latents `zs`, sorted."""
    sums = None
    for z in zs:
        _, feats = stage_outputs(dec, z)
        sq = [f.pow(2).mean(dim=(0, 2)) for f in feats]
        sums = sq if sums is None else [a + b for a, b in zip(sums, sq)]
    keep = []
    for i, s in enumerate(sums):
        k = width // 2 ** i
        if not 0 < k <= s.numel():
            raise ValueError(f"stage {i} has {s.numel()} channels: cannot keep {k}")
        keep.append(torch.sort(torch.topk(s, k).indices).values)
    return keep


def _layers(dec, stages: int | None = None):
    """(name, module, input stream, output stream) in forward order; a stream index says which kept set applies,
    None for the latent input and the waveform output. With `stages`, only conv_pre and the first `stages` stages."""
    out = [("conv_pre", dec.conv_pre, None, 0)]
    for i, up in enumerate(dec.ups[:stages]):
        out.append((f"ups.{i}", up, i, i + 1))
        for j in range(dec.num_kernels):
            b = i * dec.num_kernels + j
            for c, conv in enumerate(dec.resblocks[b].convs):
                out.append((f"resblocks.{b}.convs.{c}", conv, i + 1, i + 1))
    if stages is None or stages >= len(dec.ups):
        out.append(("conv_post", dec.conv_post, len(dec.ups), None))
    return out


@torch.no_grad()
def slice_decoder(teacher_dec, student, keep) -> None:
    """Copy the teacher's weights on the kept channels into `student` (same build, narrower; weight norm folded
    in both)."""
    t_layers, s_layers = _layers(teacher_dec), _layers(student)
    for (name, t, i_in, i_out), (_, s, _, _) in zip(t_layers, s_layers):
        w = t.weight
        transposed = isinstance(t, torch.nn.ConvTranspose1d)
        in_dim, out_dim = (0, 1) if transposed else (1, 0)
        if i_in is not None:
            w = w.index_select(in_dim, keep[i_in])
        if i_out is not None:
            w = w.index_select(out_dim, keep[i_out])
        if w.shape != s.weight.shape:
            raise ValueError(f"{name}: sliced {tuple(w.shape)} does not fit the student's {tuple(s.weight.shape)}")
        s.weight.copy_(w)
        if t.bias is not None:
            s.bias.copy_(t.bias if i_out is None else t.bias.index_select(0, keep[i_out]))


def design(layer, x) -> torch.Tensor:
    """The rows [B*T_out, C_in*k] whose product with the layer's weights (as `as_matrix` lays them out) is its
    output: a Conv1d's unfolded input, or for a ConvTranspose1d the unfolded zero-stuffed input."""
    if isinstance(layer, torch.nn.ConvTranspose1d):
        s, k, p = layer.stride[0], layer.kernel_size[0], layer.padding[0]
        u = torch.zeros(x.shape[0], x.shape[1], (x.shape[2] - 1) * s + 1, dtype=x.dtype)
        u[..., ::s] = x
        x, dil = F.pad(u, (k - 1 - p, k - 1 - p + layer.output_padding[0])), 1
    else:
        k, dil, p = layer.kernel_size[0], layer.dilation[0], layer.padding[0]
        x = F.pad(x, (p, p))
    t_out = x.shape[2] - dil * (k - 1)
    cols = torch.stack([x[..., j * dil:j * dil + t_out] for j in range(k)], dim=2)  # [B, C, k, T]
    return cols.permute(0, 3, 1, 2).reshape(-1, x.shape[1] * k)


def as_matrix(layer) -> torch.Tensor:
    """The layer's weights as [C_in*k, C_out] for `design`'s rows (a transposed conv's kernel is flipped)."""
    w = layer.weight
    if isinstance(layer, torch.nn.ConvTranspose1d):
        w = w.flip(-1).transpose(0, 1)  # [C_out, C_in, k] of the equivalent convolution
    return w.reshape(w.shape[0], -1).t()


def _set_matrix(layer, m: torch.Tensor) -> None:
    w = m.t().reshape(layer.weight.shape[1] if isinstance(layer, torch.nn.ConvTranspose1d) else layer.weight.shape[0],
                      -1, layer.kernel_size[0])
    if isinstance(layer, torch.nn.ConvTranspose1d):
        w = w.transpose(0, 1).flip(-1)
    layer.weight.copy_(w)


def _capture(module, store: list, what: str):
    def hook(_, inputs, output):
        store.append((inputs[0] if what == "in" else output).detach())
    return module.register_forward_hook(hook)


@torch.no_grad()
def refit(teacher_dec, student, keep, zs, ridge: float = 1e-3, progress=None,
          stages: int | None = None) -> dict[str, tuple[float, float]]:
    """Refit every sliced layer of `student` (with `stages`, of its first `stages` stages only) in forward order by
    ridge least squares: input = what the student (its earlier layers refitted already) feeds the layer, target =
    the teacher's output of the same layer on the kept channels (the bias stays the teacher's). Returns each layer's
    relative squared error on `zs`, sliced -> refitted, e.g. {'ups.0': (0.41, 0.12)}."""
    errors = {}
    for (name, t, _, i_out), (_, s, _, _) in zip(_layers(teacher_dec, stages), _layers(student, stages)):
        if name == "conv_pre":
            continue  # same input as the teacher's: the slice is already exact
        xtx = xty = None
        yty = 0.0
        for z in zs:
            yield_point()
            ins, outs = [], []
            hooks = [_capture(s, ins, "in"), _capture(t, outs, "out")]
            student(z)
            teacher_dec(z)
            for h in hooks:
                h.remove()
            target = outs[0] if i_out is None else outs[0].index_select(1, keep[i_out])
            if s.bias is not None:
                target = target - s.bias.view(1, -1, 1)
            a = design(s, ins[0]).double()
            y = target.permute(0, 2, 1).reshape(-1, target.shape[1]).double()
            xtx = a.t() @ a if xtx is None else xtx + a.t() @ a
            xty = a.t() @ y if xty is None else xty + a.t() @ y
            yty += float(y.pow(2).sum())

        def rel(m):  # |Am - y|^2 / |y|^2 from the normal equations
            return float((torch.sum(m * (xtx @ m)) - 2 * torch.sum(m * xty) + yty) / max(yty, 1e-12))

        before = rel(as_matrix(s).double())
        lam = ridge * torch.diagonal(xtx).mean()
        m = torch.linalg.solve(xtx + lam * torch.eye(xtx.shape[0], dtype=xtx.dtype), xty)
        _set_matrix(s, m.float())
        errors[name] = (before, rel(m))
        if progress is not None:
            progress.update()
    return errors


def pruned_student(teacher_model, width: int, zs, refit_zs=None, ridge: float = 1e-3, progress: bool = False,
                   stages: int | None = None):
    """The teacher's decoder at `width` initial channels: channels chosen by activation on `zs`, sliced, and (with
    `refit_zs`) refitted by least squares (with `stages`, only the layers up to that stage's output: a hybrid
    decoder keeps no more). Returns (student decoder, kept channel indices per stream)."""
    teacher_dec = fold_weight_norm(copy.deepcopy(teacher_model.dec))
    student = fold_weight_norm(decoder_student(teacher_model, width, "scratch"))
    keep = choose_channels(teacher_dec, zs, width)
    slice_decoder(teacher_dec, student, keep)
    if refit_zs is not None:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(_layers(student, stages)) - 1, desc="least-squares refit", disable=not progress,
                   leave=False)
        refit(teacher_dec, student, keep, refit_zs, ridge, progress=bar, stages=stages)
        bar.close()
    return student.train(), keep


def hybrid_student(teacher_model, width: int, keep_stages: int, calib_latents, n_fft: int | None = None,
                   refit_latents=None, ridge: float = 1e-3, progress: bool = False):
    """A hybrid decoder (voices.hybrid_decoder) whose kept stages start from the teacher's, pruned to `width` as the
    128-channel decoder is (`pruned_student`: channels chosen by activation on `calib_latents`, sliced, and refitted
    by least squares on `refit_latents` where given, up to the last kept stage), its iSTFT head from scratch.
    Returns (hybrid, weight norm folded, in train mode; the kept channel indices of conv_pre's and each kept stage's
    output, the streams whose teacher outputs are its stage targets)."""
    pruned, keep = pruned_student(teacher_model, width, calib_latents, refit_zs=refit_latents, ridge=ridge,
                                  progress=progress, stages=keep_stages)
    hybrid = fold_weight_norm(build_part("hybrid_decoder", hybrid_build(teacher_model, width, keep_stages, n_fft)))
    kept = [(hybrid.conv_pre, pruned.conv_pre)] + list(zip(hybrid.ups, pruned.ups))
    kept += list(zip(hybrid.resblocks, pruned.resblocks))  # the hybrid holds the first keep_stages' blocks only
    for mine, theirs in kept:
        mine.load_state_dict(theirs.state_dict())
    return hybrid.train(), keep[:keep_stages + 1]
