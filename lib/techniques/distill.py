"""Distillation from synthetic data only: smaller students of the teacher's decoder (where most compute is) and of
its flow, trained on the teacher's own latents and audio, as a progressive chain in which each student learns
from the one before it (after the progressive distillation of TorToiSe; here the cost halved is width)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from lib.techniques.compress import prune_structured
from lib.training.batches import Latents
from lib.training.loop import Trainer, train_decoder
from lib.voices.artefacts import ArtefactError, gpu_of_hours, load_part, save_part
from lib.voices.frontend import with_frontend
from lib.voices.parts import build_part, decoder_build, flow_build, fold_weight_norm
from lib.voices.spec import Part, VoiceSpec
from lib.voices.synth import NOISE_SCALE


def decoder_width(decoder) -> int:
    return int(decoder.conv_pre.out_channels)


def decoder_student(teacher_model, width: int, init: str = "scratch", parent=None, example_z=None):
    """A HiFi-GAN decoder like the teacher's with `width` initial channels (every later stage halves it as in
    the teacher). `init='prune'` takes `parent`'s (default: the teacher decoder's) L2-strongest channels with
    torch-pruning; `init='scratch'` starts from random weights (weight-normed, as VITS trains them)."""
    hp = teacher_model.hparams
    parent = parent if parent is not None else teacher_model.dec
    if init == "prune":
        if example_z is None:
            example_z = torch.zeros(1, hp["inter_channels"], 32)
        ratio = 1.0 - width / decoder_width(parent)
        if not 0 < ratio < 1:
            raise ValueError(f"a pruned student must be narrower than its parent ({decoder_width(parent)}), "
                             f"not {width}")
        return prune_structured(parent, ratio, example_z)
    if init != "scratch":
        raise ValueError(f"init {init!r}: use 'prune' or 'scratch'")
    return build_part("decoder", decoder_build(teacher_model, width))


def relabel(lat: Latents, decoder) -> Latents:
    """The same latents with `decoder`'s audio as the target: how the next student in the chain learns from
    this one rather than from the teacher."""
    decoder.eval()
    with torch.no_grad():
        wavs = [decoder(z) for z in lat.z]
    return Latents(lat.ids, lat.z, wavs, lat.hop)


def with_parts(model, decoder=None, flow=None, frontend=None):
    """A copy of the full voice with its decoder, flow and/or front end (text encoder + duration predictor, a
    `voices.frontend.FrontEnd`) replaced by copies of students (whose weight normalisation is folded first, in
    place: they are done training)."""
    out = copy.deepcopy(model)
    if frontend is not None:
        out = with_frontend(out, frontend)
    if decoder is not None:
        out.dec = copy.deepcopy(fold_weight_norm(decoder))
    if flow is not None:
        out.flow = copy.deepcopy(fold_weight_norm(flow))
    return out.eval()


@dataclass
class FlowPairs:
    """Per utterance: the prior sample z_p, its mask, and the teacher flow's output z = flow^-1(z_p)."""
    z_p: list
    mask: list
    z: list


def flow_pairs(model, phoneme_ids: Sequence[list[int]], noise_scale: float = NOISE_SCALE, noise_w: float = 0.0,
               draws: int = 2, seed: int = 0) -> FlowPairs:
    """Teacher flow inputs and outputs on the synthetic sentences, `draws` prior samples each (with sampling
    noise, so the student sees the spread it will meet at inference)."""
    torch.manual_seed(seed)
    zp, masks, zs = [], [], []
    with torch.no_grad():
        for ids in phoneme_ids:
            for _ in range(draws):
                # max_len=1: the decoder speaks one frame, not the sentence (a third of the time; z is drawn before)
                _, _, y_mask, (z, z_p, _, _) = model.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                                           noise_scale=noise_scale, noise_scale_w=noise_w, max_len=1)
                zp.append(z_p.clone())
                masks.append(y_mask.clone())
                zs.append(z.clone())
    return FlowPairs(zp, masks, zs)


def flow_student(teacher_model, hidden: int, n_layers: int | None = None):
    """The teacher's flow (residual coupling layers, reverse direction at inference) at `hidden` channels."""
    build = flow_build(teacher_model, hidden)
    return build_part("flow", {**build, "n_layers": n_layers or build["n_layers"]})


def flow_batch(pairs: FlowPairs, batch: int, frames: int, rng):
    """`batch` random windows of `frames` latent frames (zero-padded where an utterance is shorter): (z_p, mask, z)."""
    zp, mk, zz = [], [], []
    for _ in range(batch):
        i = int(rng.integers(len(pairs.z)))
        n = pairs.z[i].shape[-1]
        s = int(rng.integers(max(1, n - frames + 1)))
        pad = max(0, frames - n)
        cut = lambda t: torch.nn.functional.pad(t[..., s:s + frames], (0, pad))
        zp.append(cut(pairs.z_p[i]))
        mk.append(cut(pairs.mask[i]))
        zz.append(cut(pairs.z[i]))
    return torch.cat(zp), torch.cat(mk), torch.cat(zz)


@torch.no_grad()
def flow_batch_of_latents(teacher_flow, z: torch.Tensor):
    """(z_p, mask, z) for latent segments `z` [B, C, frames] (zero past an utterance's end): the teacher flow's
    forward pass gives the prior sample its reverse pass maps back to exactly `z`, on the teacher flow's device."""
    z = z.to(next(teacher_flow.parameters()).device)
    mask = (z.abs().sum(1, keepdim=True) > 0).to(z.dtype)
    return teacher_flow(z, mask, g=None, reverse=False), mask, z


def flow_loss(flow, batch):
    """Masked L1 between the student flow's reverse pass and the teacher's output for the same prior sample."""
    z_p, mask, z = batch
    out = flow(z_p, mask, g=None, reverse=True)
    return (out - z).abs().mul(mask).sum() / (mask.sum() * z.shape[1]).clamp_min(1.0)


def train_flow(student, pairs: FlowPairs, recipe, ckpt_dir: Path, batch: int = 8, frames: int = 128,
               threads: int = 2, progress: str | None = "flow", device: str = "cpu"):
    """Fit the student flow's reverse pass to the teacher's with the shared training stack (regression: no
    discriminator acts on a latent); resumes from `ckpt_dir`."""
    return Trainer(student, lambda rng: flow_batch(pairs, batch, frames, rng), recipe, ckpt_dir, loss_fn=flow_loss,
                   device=device, threads=threads, progress=progress).fit()


# --- the whole study's training, shared by notebook 04 and the GPU job -----------------------------------------

def train_chain(teacher_model, latents: Latents, widths: Sequence[int], recipes: Sequence, work: Path,
                compare_scratch: bool = True, batch: int = 4, frames: int = 32, heldout: Latents | None = None,
                eval_fn=None, device: str = "cpu", threads: int = 2, progress: bool = True, prepare=None):
    """The decoder chain: link i trains a student of widths[i] with recipes[i] on the previous network's audio
    (the teacher's for the first); the first link is also trained from scratch when `compare_scratch`; the student
    with the lower final mel loss teaches the next. Returns (students by name, folded; curves by name; the
    chain's last student's name). Each run resumes from work/<name>; `prepare(name, module)`, when given, sees
    each student before it trains (the GPU job loads committed weights there)."""
    students, curves, parent, targets = {}, {}, teacher_model.dec, latents
    best = None
    for i, (width, recipe) in enumerate(zip(widths, recipes)):
        inits = ["prune", "scratch"] if i == 0 and compare_scratch else ["prune"]
        for init in inits:
            name = f"dec{width}-{init}" if i == 0 else f"dec{width}-chain"
            dec = decoder_student(teacher_model, width, init, parent=parent, example_z=latents.z[0])
            if prepare is not None:
                prepare(name, dec)
            curves[name] = train_decoder(dec, targets, recipe, Path(work) / name, batch=batch, frames=frames,
                                         heldout=heldout, eval_fn=eval_fn, device=device, threads=threads,
                                         progress=name if progress else None)
            students[name] = fold_weight_norm(dec.cpu())
        best = min((n for n in students if n.startswith(f"dec{width}-")), key=lambda n: final_mel(curves[n]))
        parent = students[best]
        targets = relabel(latents, parent)
    return students, curves, best


def final_mel(curve) -> float:
    """Mean mel L1 over the last logged tenth of a run (the figure links are compared by)."""
    f = curve.frame
    if f.empty or "loss_mel" not in f:
        return float("nan")
    return float(f["loss_mel"].tail(max(1, len(f) // 10)).mean())


def save_students(teacher_model, students: dict, out_root: Path, curves: dict, flow=None, flow_name: str = "",
                  frontend=None, frontend_name: str = "", istft=None, istft_name: str = "",
                  extra: dict | None = None) -> dict[str, Path]:
    """Each student as an artefact folder out_root/<name>/ (model.safetensors, config.json, curve.csv): decoders,
    the flow student, the front-end student (a voices.frontend.FrontEnd) and the frame-rate decoder."""
    out = {}
    if istft is not None:
        out[istft_name] = save_part(istft, Path(out_root) / istft_name, "istft_decoder", istft.config,
                                    extra={"student": istft_name, **(extra or {})})
    if frontend is not None:
        out[frontend_name] = save_part(frontend, Path(out_root) / frontend_name, "frontend", frontend.config,
                                       extra={"student": frontend_name, **(extra or {})})
    for name, dec in students.items():
        out[name] = save_part(dec, Path(out_root) / name, "decoder", decoder_build(teacher_model, decoder_width(dec)),
                              extra={"student": name, **(extra or {})})
    if flow is not None:
        hidden = flow.flows[0].enc.hidden_channels
        out[flow_name] = save_part(flow, Path(out_root) / flow_name, "flow", flow_build(teacher_model, hidden),
                                   extra={"student": flow_name, **(extra or {})})
    for name, path in out.items():
        if name in curves:
            curves[name].frame.to_csv(path / "curve.csv", index=False)
    return out


def recorded_students(root: Path) -> tuple[dict, dict]:
    """Students recorded under `root` (outputs/recorded/<device>/04_distillation): ({name: (module, config)},
    {name: reason}) -- a folder with a missing or corrupt file is named with the reason, never loaded half."""
    loaded, absent = {}, {}
    for cfg in sorted(Path(root).glob("*/config.json")) if Path(root).exists() else []:
        try:
            loaded[cfg.parent.name] = load_part(cfg.parent)
        except ArtefactError as exc:
            absent[cfg.parent.name] = str(exc)
    for folder in sorted(p for p in Path(root).glob("*") if p.is_dir()) if Path(root).exists() else []:
        if folder.name not in loaded and folder.name not in absent and not (folder / "config.json").exists():
            if (folder / "model.safetensors").exists():
                absent[folder.name] = f"recorded artefact incomplete: {folder / 'config.json'} is missing"
    return loaded, absent


def recorded_voices(teacher_model, roots: dict[str, Path]) -> tuple[dict, dict, dict]:
    """Student voices from the artefacts recorded on other machines (`roots`: device -> its 04_distillation
    folder): each decoder in the teacher, and the chain's end with each recorded flow student. Returns ({name@device:
    voice}, {name: reason it is absent}, {name@device: artefact config})."""
    voices, absent, info = {}, {}, {}
    for dev, root in roots.items():
        if not Path(root).exists():
            absent[f"students@{dev}"] = (f"no student recorded on {dev} yet ({root} does not exist): train them on a "
                                         f"GPU with `lib.jobs.device_launch ... lib.jobs.train_job`"
                                         f" and commit what `pack` brings back")
            continue
        loaded, bad = recorded_students(root)
        absent.update({f"{n}@{dev}": r for n, r in bad.items()})
        part = {n: Part.of_pack({**config, "student": n}, dev) for n, (_, config) in loaded.items()}
        decoders = {n: mc for n, mc in loaded.items()
                    if mc[1]["kind"] in ("decoder", "istft_decoder", "hybrid_decoder")}
        for n, (module, config) in decoders.items():
            name = VoiceSpec((part[n],)).name
            voices[name], info[name] = with_parts(teacher_model, decoder=module), config
        chain = sorted((n for n in decoders if n.startswith("dec")), key=lambda n: decoder_width(decoders[n][0]))
        chain = [n for n in decoders if n.startswith("istft")] + chain  # the frame-rate decoder goes furthest
        for n, (flow, config) in loaded.items():
            if config["kind"] == "flow" and chain:
                name = VoiceSpec((part[chain[0]], part[n])).name
                voices[name] = with_parts(teacher_model, decoder=decoders[chain[0]][0], flow=flow)
                info[name] = {**config, "decoder": decoders[chain[0]][1]}
    return voices, absent, info


def student_voice(teacher_model, folder: Path, part_names: Sequence[str]):
    """The teacher with the student parts `part_names` (e.g. ('istft256x6', 'flow96', 'fe96')), each read from
    `folder`/<part> (what `save_students` wrote) and put in the teacher by its kind; ArtefactError names a missing
    or unreadable part."""
    if isinstance(part_names, str):
        raise TypeError(f"student_voice takes the part names, not the name {part_names!r} (names are never parsed)")
    parts = {"decoder": None, "flow": None, "frontend": None}
    for part in part_names:
        module, config = load_part(Path(folder) / part)
        kind = {"istft_decoder": "decoder", "hybrid_decoder": "decoder"}.get(config["kind"], config["kind"])
        if kind not in parts:
            raise ValueError(f"{Path(folder) / part}: a part of kind {config['kind']!r} cannot go into a voice")
        parts[kind] = module
    return with_parts(teacher_model, **parts)


def training_table(curves: dict, recorded_info: dict, device: str, specs: dict[str, VoiceSpec]):
    """Where and how long each student trained: here (`curves`, wall hours) or elsewhere (`recorded_info` configs,
    recorded where their `specs` say: a long CPU run's cumulative machine-hours where its config has them, else its
    wall hours; and the device-hours of a long run's phase on a lent GPU, with the GPU, apart), with its
    discriminator steps (a pack counts them since issue 66; an older one's are unknown, NaN) and, for a run here,
    the adversarial terms' last share of the generator's loss."""
    last = lambda c, col: (float(c.frame[col].dropna().iloc[-1]) if col in c.frame and c.frame[col].notna().any()
                           else float("nan"))
    rows = [{"student": n, "where": device, "steps": c.steps_done, "hours": c.seconds / 3600,
             "s_per_step": c.s_per_step, "device_hours": 0.0, "gpu": "",
             "disc_steps": 0.0 if "disc_steps" not in c.frame else last(c, "disc_steps"),
             "adv_share": last(c, "adv_share")} for n, c in curves.items()]
    for n, cfg in recorded_info.items():
        gpu_h = float(cfg.get("device_hours") or 0.0)
        rows.append({"student": n, "where": specs[n].device, "steps": cfg.get("steps"),
                     "hours": (cfg["hours"] if cfg.get("hours") is not None
                               else (cfg.get("seconds") or float("nan")) / 3600),
                     "s_per_step": (cfg.get("seconds") or float("nan")) / max(1, cfg.get("steps") or 1),
                     "device_hours": gpu_h, "gpu": gpu_of_hours(cfg),
                     "disc_steps": float(cfg.get("disc_steps", float("nan"))), "adv_share": float("nan")})
    return pd.DataFrame(rows)
