"""A posterior encoder for a voice that ships without one (a piper ONNX export): piper's PosteriorEncoder fitted to
the teacher's own (audio, latent) pairs, so that teacher audio -> posterior -> teacher decoder gives that audio
back. Adaptation with piper's objective needs it: MAS aligns its latents with the text."""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from lib.training.batches import Latents, teacher_latents
from lib.training.loop import Curve, Recipe, Trainer
from lib.training.losses import mel_l1
from lib.training.vits_objective import TrainPath, Utterances, batch_of, linear_spectrogram, posterior_encoder
from lib.voices.artefacts import check_teacher
from lib.voices.cards import posterior_card
from lib.voices.parts import fold_weight_norm
from lib.voices.scales import NOISE_SCALE, NOISE_W

_LOGGER = logging.getLogger(__name__)

TEACHER_NOISE = (NOISE_SCALE, NOISE_W)  # piper's default noises: the latents the teacher really samples


@dataclass
class Pairs:
    """The teacher's latents z [1, C, T], its audio for them and that audio's linear spectrogram [513, T]."""
    latents: Latents
    spec: list

    @classmethod
    def of_teacher(cls, teacher, phoneme_ids: Sequence[list[int]], draws: int = 1, seed: int = 0) -> "Pairs":
        """`draws` noisy syntheses of each utterance (piper's default noise), as the teacher speaks."""
        names = [str(i) for i in range(len(phoneme_ids))]
        lat = [teacher_latents(teacher, phoneme_ids, names, noise_scale=TEACHER_NOISE[0], noise_w=TEACHER_NOISE[1],
                               seed=seed + d) for d in range(draws)]
        merged = Latents([n for lt in lat for n in lt.ids], [z for lt in lat for z in lt.z],
                         [w for lt in lat for w in lt.wav], lat[0].hop)
        return cls(merged, [linear_spectrogram(w.reshape(-1)[: z.shape[-1] * merged.hop], merged.hop,
                                               teacher.sample_rate)
                            for z, w in zip(merged.z, merged.wav)])

    def with_pitch_shifts(self, semitones: Sequence[float], sample_rate: int) -> "Pairs":
        """These pairs plus, for each shift, every recording pitch-shifted (formants with it, length kept) beside the
        same latent: an encoder fitted on them reads content, not the teacher's pitch and timbre, so that MAS aligns
        another speaker's recordings with the text as it aligns the teacher's."""
        import librosa  # heavy (numba): only a posterior fitted with shifts needs it
        lat, spec = self.latents, list(self.spec)
        z, wav, names = list(lat.z), list(lat.wav), list(lat.ids)
        for step in map(float, semitones):
            for name, zi, w in zip(lat.ids, lat.z, lat.wav):
                frames = zi.shape[-1] * lat.hop
                shifted = librosa.effects.pitch_shift(w.reshape(-1).numpy()[:frames], sr=sample_rate, n_steps=step)
                shifted = torch.from_numpy(np.ascontiguousarray(shifted, dtype=np.float32))
                names.append(f"{name}{step:+g}st")
                z.append(zi)
                wav.append(shifted.reshape(1, 1, -1))
                spec.append(linear_spectrogram(shifted, lat.hop, sample_rate))
        return Pairs(Latents(names, z, wav, lat.hop), spec)

    def batch(self, picks: Sequence[int]):
        """(spectrograms [B, 513, T], frames, latents [B, C, T]) padded to the longest."""
        t = max(self.spec[i].shape[-1] for i in picks)
        pad = torch.nn.functional.pad
        spec = torch.stack([pad(self.spec[i], (0, t - self.spec[i].shape[-1])) for i in picks])
        z = torch.stack([pad(self.latents.z[i][0], (0, t - self.latents.z[i].shape[-1])) for i in picks])
        return spec, torch.tensor([self.spec[i].shape[-1] for i in picks]), z


def latent_nll(enc_q, batch) -> torch.Tensor:
    """Gaussian negative log-likelihood (per latent value, constant dropped) of the teacher's z under the
    posterior q(z | spectrogram): its mean learns z, its scale how sure it can be."""
    spec, lengths, z = batch
    _, m_q, logs_q, mask = enc_q(spec, lengths)
    nll = (logs_q + 0.5 * (z - m_q) ** 2 * torch.exp(-2 * logs_q)) * mask
    return nll.sum() / (mask.sum() * z.shape[1])


def bootstrap(hp: dict, pairs: Pairs, recipe: Recipe, work_dir: Path, *, batch: int = 8, heldout: Pairs | None = None,
              threads: int = 2, progress: str | None = "posterior") -> tuple[torch.nn.Module, Curve]:
    """piper's PosteriorEncoder for architecture `hp`, fitted to `pairs` (resumable in `work_dir`); the held-out
    NLL on `heldout` every `recipe.eval_every` steps."""
    torch.manual_seed(recipe.seed)
    enc_q = posterior_encoder(hp)
    held = [heldout.batch(list(range(i, min(i + batch, len(heldout.spec)))))
            for i in range(0, len(heldout.spec), batch)] \
        if heldout is not None else []
    n = len(pairs.spec)
    curve = Trainer(enc_q, lambda rng: pairs.batch([int(rng.integers(n)) for _ in range(batch)]), recipe, work_dir,
                    loss_fn=latent_nll, eval_batches=held, threads=threads, progress=progress).fit()
    return enc_q.eval(), curve


@torch.no_grad()
def alignment_agreement(teacher, enc_q, utterances: Utterances, limit: int = 12) -> list[float]:
    """Per utterance, the correlation of MAS's frames per phoneme (the recording's posterior latents against the
    text, as adaptation aligns them) with the teacher's own durations for that text (noise off, rescaled to the
    recording's length): near the teacher's own audio's where MAS aligns a recording as it should."""
    path = TrainPath(copy.deepcopy(teacher).eval(), copy.deepcopy(enc_q).eval())
    out = []
    for i in range(min(limit, len(utterances.ids))):
        x, x_len, spec, spec_len = batch_of(utterances, [i])[:4]
        mas = path(x, x_len, spec, spec_len)[2][0, 0].sum(0).numpy()
        # the durations only: max_len=1 decodes one frame, not the sentence
        ref = teacher.infer(x, x_len, noise_scale=0.0, noise_scale_w=0.0, max_len=1)[1][0, 0].sum(0).numpy()
        out.append(float(np.corrcoef(mas, ref * mas.sum() / max(ref.sum(), 1e-9))[0, 1]))
    return out


@torch.no_grad()
def round_trip(enc_q, decoder, pairs: Pairs, sample_rate: int, limit: int = 8) -> dict:
    """The check that the posterior works: each teacher clip -> posterior mean -> the teacher's decoder, against the
    clip (mel L1, and the same for a decoder fed zeros as the floor of nonsense). Returns the means and the clips."""
    out = {"mel_l1": [], "mel_l1_silence": [], "clips": []}
    for i in range(min(limit, len(pairs.spec))):
        spec, lengths, _ = pairs.batch([i])
        _, m_q, _, mask = enc_q(spec, lengths)
        y = pairs.latents.wav[i].reshape(1, 1, -1)[..., : spec.shape[-1] * pairs.latents.hop]
        y_hat = decoder(m_q * mask)[..., : y.shape[-1]]
        out["mel_l1"].append(float(mel_l1(y_hat, y, sample_rate)))
        out["mel_l1_silence"].append(float(mel_l1(decoder(torch.zeros_like(m_q))[..., : y.shape[-1]], y, sample_rate)))
        out["clips"].append((y.flatten().numpy(), y_hat.flatten().numpy()))
    return {"mel_l1": float(np.mean(out["mel_l1"])), "mel_l1_silence": float(np.mean(out["mel_l1_silence"])),
            "clips": out["clips"]}


def save(enc_q, folder: Path, hp: dict, info: dict) -> Path:
    """The fitted posterior encoder as model.safetensors (float16: 14 MB, under the repository's 20 MiB per file;
    loading casts back) + config.json (its architecture and how it was fitted)."""
    from safetensors.torch import save_file
    from lib.core.results import atomic_write_json
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / ".model.tmp.safetensors"
    save_file({k: v.detach().to(torch.float16).contiguous()
               for k, v in fold_weight_norm(copy.deepcopy(enc_q)).state_dict().items()},
              str(tmp), metadata={"stored": "float16"})
    tmp.replace(folder / "model.safetensors")
    config = {"kind": "posterior_encoder", "hparams": hp, **info}
    atomic_write_json(folder / "config.json", config)
    posterior_card(config).save(folder / "README.md")
    return folder


def load(folder: Path, hp: dict, teacher=None) -> torch.nn.Module:
    """A posterior encoder saved by `save` for the architecture `hp`; a ValueError names the folder when it was
    fitted for another architecture or its files are missing or cut short, and an ArtefactError names both voices
    where `teacher` (the voice it is loaded for) is another than the one it was fitted on."""
    import json
    from safetensors.torch import load_file
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
        state = load_file(str(folder / "model.safetensors"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"posterior encoder {folder}: {type(exc).__name__}: {exc}") from None
    check_teacher(config, folder, teacher)
    keys = ("spec_channels", "inter_channels", "hidden_channels", "gin_channels")
    if {k: config.get("hparams", {}).get(k) for k in keys} != {k: hp[k] for k in keys}:
        raise ValueError(f"posterior encoder {folder} was fitted for another voice architecture")
    weight_normed = any(k.endswith("weight_g") for k in state)  # a pack saved before the encoder was folded
    enc_q = posterior_encoder(hp, folded=not weight_normed)
    enc_q.load_state_dict(state)
    return fold_weight_norm(enc_q)


# --- the duration predictor's training-only parts ------------------------------------------------------------

DURATION = "duration_posterior.safetensors"  # beside the posterior encoder in its pack
DURATION_PARTS = ("post_", "flows.1.")  # of piper's StochasticDurationPredictor: absent from the ONNX voice


class DurationPath(torch.nn.Module):
    """The text encoder (frozen) and the stochastic duration predictor, whose training-only parts learn."""

    def __init__(self, enc_p, dp):
        super().__init__()
        self.enc_p, self.dp = enc_p, dp


def duration_nll(path: DurationPath, batch) -> torch.Tensor:
    """piper's duration loss (the SDP's variational bound) of the teacher's own durations, per phoneme."""
    x, lengths, w = batch
    with torch.no_grad():
        h, _, _, mask = path.enc_p(x, lengths)
    return path.dp(h, mask, w).sum() / mask.sum()


def teacher_durations(teacher, phoneme_ids: Sequence[list[int]], draws: int = 1, seed: int = 0) -> list:
    """(phoneme ids, frames per phoneme) as the teacher speaks, `draws` duration samples of each (its noise_w)."""
    torch.manual_seed(seed)
    out = []
    with torch.no_grad():
        for _ in range(draws):
            for ids in phoneme_ids:
                x = torch.tensor([ids])
                _, attn, _, _ = teacher.infer(x, torch.tensor([len(ids)]), noise_scale=0.0,
                                              noise_scale_w=TEACHER_NOISE[1])
                out.append((x[0], attn[0, 0].sum(0)))
    return out


def fit_duration_parts(teacher, pairs: list, recipe: Recipe, work_dir: Path, *, batch: int = 8,
                       threads: int = 2) -> dict:
    """Fit the SDP's training-only parts (its posterior flows and the flow inference skips) to the teacher's own
    durations with everything else frozen, so that fine-tuning the durations starts from a bound that fits the
    voice rather than from random weights. Returns those parts' weights (`DURATION_PARTS`, keys without `dp.`)."""
    dp = copy.deepcopy(teacher.dp).train()
    for name, p in dp.named_parameters():
        p.requires_grad_(name.startswith(DURATION_PARTS))
    path = DurationPath(copy.deepcopy(teacher.enc_p).eval().requires_grad_(False), dp)

    def batch_of(rng):
        picks = [pairs[int(rng.integers(len(pairs)))] for _ in range(batch)]
        t = max(p[0].numel() for p in picks)
        pad = torch.nn.functional.pad
        return (torch.stack([pad(x, (0, t - x.numel())) for x, _ in picks]),
                torch.tensor([x.numel() for x, _ in picks]),
                torch.stack([pad(w, (0, t - w.numel())) for _, w in picks]).unsqueeze(1))
    Trainer(path, batch_of, recipe, work_dir, loss_fn=duration_nll, threads=threads, progress=None).fit()
    return {k: v.detach().clone() for k, v in dp.state_dict().items() if k.startswith(DURATION_PARTS)}


def save_duration_parts(parts: dict, folder: Path) -> Path:
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in parts.items()}, str(Path(folder) / DURATION))
    return Path(folder) / DURATION


def load_duration_parts(folder: Path) -> dict:
    """The SDP's fitted training-only parts from a posterior pack ({} where it holds none: they stay random)."""
    from safetensors.torch import load_file
    path = Path(folder) / DURATION
    return load_file(str(path)) if path.exists() else {}
