"""Why 02's teacher and full time 14% slower than every merged/packed variant (runs 57, 59): interleaved, one thread."""
import copy, json, sys
import numpy as np, torch
from lib.core import text
from lib.harness import bench
from lib.voices import synth as voices
from lib.voices.piper_torch import load_piper_torch
from lib.voices.engine import PiperTorch
from lib.techniques import speaker_adapt
torch.set_num_threads(1)
t = load_piper_torch(voices.piper_paths()[0])
R = "outputs/recorded/training/speaker-infer/"
mods = {"teacher-copy": copy.deepcopy(t), "teacher-fresh": load_piper_torch(voices.piper_paths()[0]),
        "full-acoustic@long": speaker_adapt.load(t, R + "full-acoustic"), "lora-r8@long": speaker_adapt.load(t, R + "lora-r8")}
if len(sys.argv) > 1 and sys.argv[1] == "fold":
    from lib.voices.parts import fold_weight_norm
    for m in mods.values(): fold_weight_norm(m)
for n, m in mods.items():
    hooks = sum(len(x._forward_pre_hooks) for x in m.modules()); wn = sum(hasattr(x, "weight_g") for x in m.modules())
    print(n, "pre-hooks", hooks, "weight_g", wn, "enc_q", hasattr(m, "enc_q"), "training", m.training, flush=True)
fe = voices.PiperFrontend(voices.piper_paths()[1])
ids = fe.sentence_ids(text.harvard_sentences([1])[:3])
fns = {n: (lambda q, e=PiperTorch(m, 1, "cpu", False, None, "torch-cpu"): e.synth([q], seed=0)[0]) for n, m in mods.items()}
tm = bench.time_interleaved(fns, ids, lambda a: len(a) / 22050, warmup=2, repeats=3, threads=1)
base = np.median(tm["teacher-copy"].latencies_s / tm["teacher-copy"].audio_s)
for n, x in tm.items():
    r = np.median(x.latencies_s / x.audio_s); print(n, round(r, 4), round(r / base, 3), x.status)
