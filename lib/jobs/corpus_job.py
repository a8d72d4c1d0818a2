"""`tts-lab corpus`: the teacher speaks the corpus's text (lib.data.corpus_text) into float16 shards on local disk
(lib.data.corpus_shards), once, resumably, at low priority, and writes the manifest that a commit keeps.

Every item is the voice's own sampling around its defaults: noise_scale, noise_w and length_scale drawn per item from
the seed and the item's index, so the same text and seed give the same items (bit for bit on the same CPU kind; a
kernel of another CPU may round the audio differently). Shards are claimed by a file, so two processes of the same
command share the work; a shard is written atomically, so an interrupted run keeps every shard it finished.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lib.core.pause import yield_point
from lib.core.results import atomic_write_json, file_sha256
from lib.data import corpus_shards as shards_io
from lib.data import corpus_text
from lib.voices import piper_torch
from lib.jobs.run_configs import CorpusRun

_LOGGER = logging.getLogger(__name__)
SPREAD = {"noise_scale": 0.25, "noise_w": 0.25, "length_scale": 0.15}  # each drawn uniformly within ± this share


def sampling(seed: int, index: int, defaults: dict) -> dict:
    """Item `index`'s noise_scale, noise_w and length_scale: uniform within SPREAD around the voice's `defaults`."""
    rng = np.random.default_rng([seed, index])
    return {k: float(defaults[k] * (1 + rng.uniform(-s, s))) for k, s in SPREAD.items()}


def _claim(path: Path) -> bool:
    """Claim a shard for this process (a claim file holding its pid); a claim of a dead process is taken over."""
    claim = path.with_suffix(".claim")
    for _ in range(2):
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                os.kill(int(claim.read_text() or 0), 0)
                return False
            except (ProcessLookupError, ValueError):
                claim.unlink(missing_ok=True)
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


def speak_shard(teacher, items: list, ids: list, seed: int, first: int, defaults: dict) -> tuple[dict, list[str]]:
    """The teacher's phonemes, durations, latents and audio for `items` (corpus_text.CorpusSentence), as the shard's
    tensors (on the CPU, wherever the teacher speaks), and their ids."""
    import torch
    device = next(teacher.parameters()).device
    phon, durs, lat, audio, samp, p_off, f_off = [], [], [], [], [], [0], [0]
    with torch.no_grad():
        for k, x_ids in enumerate(ids):
            yield_point()  # waits while anything on the machine is timed
            s = sampling(seed, first + k, defaults)
            torch.manual_seed(seed * 1_000_003 + first + k)
            x = torch.tensor([x_ids], dtype=torch.long, device=device)
            out = teacher.infer(x, torch.tensor([len(x_ids)], device=device), noise_scale=s["noise_scale"],
                                length_scale=s["length_scale"], noise_scale_w=s["noise_w"])
            o, attn, y_mask, (z, _, _, _) = (t.cpu() if torch.is_tensor(t) else tuple(u.cpu() for u in t) for t in out)
            x = x.cpu()
            d = attn[0, 0].sum(0).round().to(torch.int32)  # frames per phoneme
            phon.append(x[0].to(torch.int32))
            durs.append(d)
            lat.append((z * y_mask)[0].half())
            audio.append(o.flatten().half())
            samp.append([s["noise_scale"], s["noise_w"], s["length_scale"]])
            p_off.append(p_off[-1] + len(x_ids))
            f_off.append(f_off[-1] + z.shape[-1])
    tensors = {"phonemes": torch.cat(phon), "durations": torch.cat(durs),
               "phoneme_offsets": torch.tensor(p_off, dtype=torch.int64), "latents": torch.cat(lat, dim=1),
               "frame_offsets": torch.tensor(f_off, dtype=torch.int64), "audio": torch.cat(audio),
               "sampling": torch.tensor(samp, dtype=torch.float32)}
    return tensors, [c.sentence.id for c in items]


def write(cfg: CorpusRun) -> Path:
    """Speak every shard not yet written (or claimed by a live process), then write the manifest; returns its path."""
    import torch
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from lib.voices import synth as voices
    from lib.voices.teacher_bundle import sentence_ids, teacher as load_teacher, voice_inference
    torch.set_num_threads(cfg.threads)
    voices.use_voice(cfg.voice)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sentences = corpus_text.corpus_sentences(cfg.seed, cfg.templated)[: cfg.limit or None]
    teacher = load_teacher().to(cfg.device)
    defaults = voice_defaults(voice_inference())
    started = time.time()
    n_shards = -(-len(sentences) // cfg.shard_items)
    todo = [k for k in range(n_shards) if not (out / _shard_name(k)).is_file()]
    _LOGGER.info("corpus %s: %d sentences in %d shards, %d to speak (about %.0f min at this CPU's last rate of "
                 "13 h of audio per thread-hour)", out, len(sentences), n_shards, len(todo),
                 len(todo) * cfg.shard_items * 5.0 / 13 / 60)
    for k in tqdm(todo, desc="corpus shards", unit="shard"):
        if cfg.seconds and time.time() - started > cfg.seconds:
            _LOGGER.info("corpus: %.0f s spent, no new shard claimed (--seconds %g)", time.time() - started,
                         cfg.seconds)
            break
        path = out / _shard_name(k)
        if path.is_file() or not _claim(path):
            continue
        try:
            first = k * cfg.shard_items
            items = sentences[first: first + cfg.shard_items]
            t0 = time.time()
            tensors, names = speak_shard(teacher, items, sentence_ids([c.sentence for c in items]), cfg.seed, first,
                                         defaults)
            seconds = tensors["audio"].numel() / teacher.sample_rate
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp), metadata={"ids": json.dumps(names), "first": str(first)})
            tmp.replace(path)
            entry = {"file": path.name, "first": first, "items": len(items), "seconds": round(seconds, 3),
                     "frames": int(tensors["frame_offsets"][-1]), "sha256": file_sha256(path)}
            atomic_write_json(path.with_suffix(".json"), entry)
            _LOGGER.info("%s: %d items, %.0f s of audio in %.0f s", path.name, len(items), seconds, time.time() - t0)
        finally:
            path.with_suffix(".claim").unlink(missing_ok=True)
        if k % 8 == 7:  # a growing prefix is a corpus already: a run may start on its first hours
            write_manifest(cfg, sentences, n_shards, teacher, defaults)
    return write_manifest(cfg, sentences, n_shards, teacher, defaults)


def _shard_name(k: int) -> str:
    return f"shard_{k:05d}.safetensors"


def voice_defaults(inference: dict) -> dict:
    """The voice's own sampling defaults from its .onnx.json `inference` section (piper's where it has none)."""
    return {"noise_scale": float(inference.get("noise_scale", 0.667)),
            "noise_w": float(inference.get("noise_w", 0.8)),
            "length_scale": float(inference.get("length_scale", 1.0))}


def write_manifest(cfg: CorpusRun, sentences: list, n_shards: int, teacher, defaults: dict) -> Path:
    """The manifest of the shards written so far, in order up to the first missing one (a prefix is a corpus):
    families with licences and counts, sentences, hours, seed, sampling, the text's and the shards' hashes."""
    from lib.harness.bench import environment
    from lib.voices.teacher_bundle import teacher_identity
    out = Path(cfg.out)
    entries = []
    for k in range(n_shards):
        side = out / _shard_name(k).replace(".safetensors", ".json")
        if not side.is_file():
            break
        entries.append(json.loads(side.read_text()))
    used = sentences[: sum(e["items"] for e in entries)]
    voice = teacher_identity()  # the voice file's, or the one a bundle's weights are a rounding of
    manifest = {
        "name": out.name, "seed": cfg.seed, "complete": len(entries) == n_shards,
        "voice": {"file": voice["voice"], "sha256": voice["sha256"]},
        "teacher": Path(str(getattr(teacher, "onnx_source", None) or voice["voice"])).name,  # a bundle: its rounding
        "sampling": {"defaults": defaults, "spread": SPREAD},
        "families": [{"family": f.value, "licence": f.licence,
                      "sentences": sum(c.family is f for c in used)} for f in corpus_text.Family],
        "sentences": len(used), "hours": round(sum(e["seconds"] for e in entries) / 3600, 4),
        "text_hash": corpus_text.text_hash(sentences),
        "options": {k: v for k, v in asdict(cfg).items()
                    if k not in ("out", "manifest_out", "voice", "seconds")},  # no local paths
        "hop": piper_torch.hop_length(teacher), "sample_rate": int(teacher.sample_rate),
        "channels": int(teacher.hparams["inter_channels"]), "dtype": "float16", "shards": entries,
        "environment": environment(cfg.threads, device=cfg.device),
    }
    manifest["hash"] = shards_io.summarize(manifest, entries).hash
    path = out / shards_io.MANIFEST
    atomic_write_json(path, manifest)
    if cfg.manifest_out:
        atomic_write_json(Path(cfg.manifest_out), manifest)
    _LOGGER.info("manifest: %d sentences, %.2f h of audio in %d shards%s", manifest["sentences"], manifest["hours"],
                 len(entries), "" if manifest["complete"] else " (incomplete: run the command again to go on)")
    return path
