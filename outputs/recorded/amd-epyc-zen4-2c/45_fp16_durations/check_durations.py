"""Run from the checkout's root: .venv/bin/python outputs/recorded/amd-epyc-zen4-2c/45_fp16_durations/check_durations.py
Does fp16 flip duration ceilings between the eager (unpadded) and the graph (bucket-padded, static frames) shapes?"""
import numpy as np, torch
from lib.core import text
from lib.voices import piper_torch, synth as voices
from lib.techniques.export import latent_with_noise, frames_budget, make_noise, pad_batch, StaticSplines
from lib.voices.synth import SCALES
torch.set_num_threads(1)
model = piper_torch.load_piper_torch(voices.joe_paths()[0]).eval()
fe = voices.PiperFrontend(voices.joe_paths()[1])
sents = text.harvard_sentences([1, 2])
ids_all = fe.sentence_ids(sents)
def durations(ids, dtype, bucket):
    t = len(ids); tb = -(-t // bucket) * bucket if bucket else t
    x = torch.zeros(1, tb, dtype=torch.long); x[0, :t] = torch.tensor(ids)
    n = torch.tensor([t])
    dp, zn = make_noise([ids], model.hparams["inter_channels"] if hasattr(model, "hparams") else 192, 0)
    dpb = torch.zeros(1, 2, tb); dpb[:, :, :t] = torch.from_numpy(dp)
    frames = frames_budget(tb) if bucket else None
    znb = torch.zeros(1, zn.shape[1], frames_budget(tb)); znb[:, :, :zn.shape[2]] = torch.from_numpy(zn)
    with torch.inference_mode(), torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        if bucket:
            with StaticSplines():
                z, y = latent_with_noise(model, x, n, SCALES, dpb, znb, frames=frames)
        else:
            z, y = latent_with_noise(model, x, n, SCALES, dpb, znb)
    return int(y[0]), z[..., :int(y[0])].float()
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    flips, snrs = 0, []
    for ids in ids_all:
        ye, ze = durations(ids, dtype, 0)
        yg, zg = durations(ids, dtype, 32)
        flips += ye != yg
        if ye == yg:
            snrs.append(float(10 * np.log10((ze ** 2).sum() / max(((ze - zg) ** 2).sum(), 1e-12))))
    print(dtype, f"length differs in {flips}/{len(ids_all)}; latent SNR where equal: median {np.median(snrs) if snrs else float('nan'):.1f} dB, min {min(snrs) if snrs else float('nan'):.1f}")
