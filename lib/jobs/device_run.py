"""The GPU part of notebook 05 on a machine with no internet, from the teacher bundle and its pre-phonemized queries:
every torch engine (precisions, CUDA graphs, compiled decoder, bitsandbytes with --bnb) through the harness's
scenarios; writes results under $TTS_LAB_OUTPUTS/<profile>/05_hardware_benchmark. The suite's sizes are the GPU
ones below unless --params names a profile whose notebook-05 parameters to use; either way metrics.json keeps them.
On a bare GPU machine it runs through lib.jobs.device_launch, which brings what the machine lacks:

    python3 -m lib.jobs.device_launch .devrun lib.jobs.device_run --profile h100 --bnb

It reads the bundle TTS_LAB_TEACHER_BUNDLE names (float16 weights: the fp32 voice does not fit the 64 MiB a lent
machine takes) and the bundle's queries.json, unless --model and --queries name others; env.json records which
weights were timed."""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.core import params
from lib.core.results import ResultWriter
from lib.core.subject import Technique
from lib.harness import bench
from lib.harness.queries import NOTEBOOK
from lib.harness.scenarios import SuiteConfig, run_suite
from lib.jobs.device_launch import QUERIES
from lib.runtimes.backends import probe_all, probes_frame
from lib.runtimes.bench_engines import TorchEngine
from lib.techniques.compress import bnb_convert
from lib.voices.piper_torch import load_piper_torch
from lib.voices import teacher_bundle
from lib.voices.synth import piper_label

_LOGGER = logging.getLogger(__name__)

# A GPU runs a hundred queries and batches up to 256 in the time a CPU runs a few: its own suite, unless --params.
GPU_SUITE = SuiteConfig(min_queries=100, min_seconds=0, batch_sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                        offline_seconds=1.5, energy_seconds=5.0)
QUICK_SUITE = SuiteConfig(min_queries=4, min_seconds=0, batch_sizes=(1, 2), offline_seconds=0.2, energy_seconds=0.3,
                          fidelity_queries=2, warmup=1)


def main(argv: Sequence[str] | None = None) -> int:
    """The GPU part of notebook 05 on a machine with no internet."""
    import argparse

    from lib.core import quiet  # the known noise by name, as everywhere in the lab
    quiet.silence_known()
    ap = argparse.ArgumentParser(prog="python3 -m lib.jobs.device_launch BUNDLE lib.jobs.device_run",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="the voice's ONNX file (default: the teacher bundle)")
    ap.add_argument("--queries", type=Path, help="the query lists (default: the teacher bundle's queries.json)")
    ap.add_argument("--profile", default="recorded-gpu")
    ap.add_argument("--budget-s", type=float, default=480)
    ap.add_argument("--bnb", action="store_true", help="also bitsandbytes int8/NF4 on the 1x1 convolutions")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="a few queries per scenario (to check the script)")
    ap.add_argument("--only", choices=["latent-graphs"], help="run only these engines")
    ap.add_argument("--params", metavar="PROFILE", help="take the suite's sizes from params/PROFILE's notebook-05 "
                                                        "parameters instead of the GPU suite")
    args = ap.parse_args(argv)
    bundle = teacher_bundle.bundle_dir()
    queries_file = args.queries or (bundle / QUERIES if bundle else None)
    if queries_file is None or not queries_file.is_file():
        ap.error(f"no query lists at {queries_file or '--queries'}: write them with `tts-lab train bundle --queries "
                 "PROFILE` (into the bundle) or name a file with --queries")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    probes = probe_all()
    import pandas as pd
    import torch
    q = json.loads(queries_file.read_text())
    queries, ttfa_queries = q["queries"], q["ttfa_queries"]
    model = load_piper_torch(args.model) if args.model else teacher_bundle.teacher()
    writer = ResultWriter(args.profile, NOTEBOOK, piper_label())
    cfg = SuiteConfig.from_params(params.resolved(args.params, NOTEBOOK)) if args.params else GPU_SUITE
    if args.quick:
        cfg = QUICK_SUITE
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    specs = [dict(precision="fp32"), dict(precision="fp16"), dict(precision="bf16"),
             dict(precision="fp16", cuda_graphs=True), dict(precision="fp16", compile_decoder=True),
             dict(precision="fp32", cuda_graphs=True, graph_latent=True),
             dict(precision="fp16", cuda_graphs=True, graph_latent=True)]
    if args.device != "cuda":
        specs = [dict(precision="fp32")]
    if args.only:
        specs = [sp for sp in specs if sp.get("graph_latent")] if args.only == "latent-graphs" else specs
    if args.bnb:
        specs += [dict(precision="fp16", bnb="int8"), dict(precision="fp16", bnb="nf4")]
    start = time.perf_counter()
    throughput, clips, env = [], {}, bench.environment(device=args.device)
    env.update(cudnn_allow_tf32=False, matmul_allow_tf32=False, suite=dataclasses.asdict(cfg),
               suite_source=f"params/{args.params}/{NOTEBOOK}.yaml" if args.params and not args.quick
               else ("quick" if args.quick else "GPU_SUITE (lib/jobs/device_run.py)"),
               weights=args.model.name if args.model else model.onnx_source,
               noise="timed runs draw it on the device (torch.randn, seeded); clips.npz uses host noise (numpy, seed "
                     "(query, item)), identical to the CPU engines', for paired comparison")
    for spec in specs:
        if time.perf_counter() - start > args.budget_s:
            _LOGGER.info("budget spent; skipping %s", spec)
            continue
        spec = dict(spec)
        mode = spec.pop("bnb", None)
        try:
            m = model
            if mode:
                m, names = bnb_convert(model, mode, args.device, scope=("enc_p", "flow"), compute_dtype=torch.float16)
            engine = TorchEngine(m, device=args.device, window=cfg.chunk_frames + 2 * cfg.context_frames, **spec)
            if mode:
                engine.label += f"-bnb-{mode}"
            t0 = time.perf_counter()
            throughput += run_suite(engine, queries, ttfa_queries, cfg, writer,
                                    technique=Technique.BITSANDBYTES if mode else Technique.of_precision(
                                        spec.get("precision", "fp32")))
            clips[engine.label] = [engine.synth([ids], seed=i, host_noise=True)[0].astype(np.float16)
                                   for i, ids in enumerate(ttfa_queries[:5])]
            _LOGGER.info("%s: %.0f s", engine.label, time.perf_counter() - t0)
        except Exception as exc:
            label = f"torch-{args.device}-{spec.get('precision')}" + (f"-bnb-{mode}" if mode else "")
            _LOGGER.warning("%s failed: %s: %s", label, type(exc).__name__, exc)
            writer.about(label, backend=f"torch-{args.device}", device=args.device).add(
                "rtf", None, status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            writer.write(env, extra_tables={"throughput_by_batch": pd.DataFrame(throughput),
                                            "backends": probes_frame(probes)})
            if mode:
                del m
                torch.cuda.empty_cache()
    np.savez_compressed(writer.dir / "clips.npz", **{k: np.concatenate(v) for k, v in clips.items()},
                        **{f"{k}__lengths": np.array([c.size for c in v]) for k, v in clips.items()})
    _LOGGER.info("%s", writer.frame().pivot_table(index="variant", columns="metric", values="value").T.to_string())
    return 0
