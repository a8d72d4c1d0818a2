"""Adaptation to a speaker's own recordings as long runs: the posterior encoder's bootstrap (`PosteriorRun`) and one
adaptation method on an LJSpeech folder (`SpeakerRun`), on the inference path with the recordings' own durations
(found here, lib.harness.durations, and handed to training as arrays) or on piper's posterior path. A run's config
is written to `config.json` when it starts and read back by `pack`; the full state stays in `work`, the pack
(weights, card, curve, env) goes to `out` with a ledger row (held-out SECS and WER on the speaker's validation
split)."""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from lib.core import text
from lib.core.results import atomic_write_json, local, portable_fields, write_env
from lib.data import ljspeech
from lib.harness import durations, metrics
from lib.harness.bench import environment
from lib.jobs.run_state import HELDOUT_LISTS, accounted_hours, packed_count
from lib.jobs.speaker_judge import stale_packs, validation_quality, validation_score
from lib.jobs.speaker_options import FOLDER_DURATIONS, TARGET_LISTS, PosteriorRun, SpeakerRun
from lib.techniques import speaker_adapt
from lib.training import ledger, posterior
from lib.training import vits_objective as vo
from lib.training.loop import Trainer
from lib.voices import piper_torch
from lib.voices import synth as voices
from lib.voices.artefacts import file_identity
from lib.voices.teacher_bundle import sentence_ids

_LOGGER = logging.getLogger(__name__)

CONFIG = "config.json"
# fields a run's config.json may lack (written before they existed), with the value such a run had: a run is read
# back, and resumed, as it was trained
LEGACY = {"path": "posterior", "durations": "mas"}


def start(config, work: Path, extra: dict | None = None) -> dict:
    """Write `config` (with `extra`, such as the teacher's identity) to work/config.json at the start, or read the
    one there and refuse a different one."""
    work.mkdir(parents=True, exist_ok=True)
    mine = {"kind": type(config).__name__, **asdict(config), **(extra or {})}
    path = work / CONFIG
    if path.exists():
        kept = json.loads(path.read_text())
        kept.update({k: v for k, v in LEGACY.items() if k in mine and k not in kept and mine["kind"] == "SpeakerRun"})
        # a field added since the run started is taken at its default (LEGACY's fields at the value the run had)
        changed = sorted(k for k in mine if k in kept and k not in ("work", "out", "threads", "init_from")
                         and kept[k] != mine[k])
        if changed:
            moved = ', '.join(f'{k}: {kept.get(k)!r} -> {mine[k]!r}' for k in changed[:3])
            raise ValueError(f"{path} was written for another run ({moved}): "
                             "use a fresh --work folder for a different setup")
    atomic_write_json(path, {**mine, "cores": os.cpu_count(), "started": kept.get("started") if path.exists() else
                             datetime.now(timezone.utc).isoformat(timespec="seconds")})
    return json.loads(path.read_text())


def check_voice(config: dict, onnx: Path) -> None:
    """ValueError naming both where the run in `config` adapted another voice than the file `onnx` now is."""
    mine, now = config.get("teacher"), file_identity(onnx)
    if mine and mine.get("sha256") != now["sha256"]:
        raise ValueError(f"the run adapted {mine.get('voice')} (sha256 {str(mine.get('sha256'))[:12]}), not "
                         f"{now['voice']} (sha256 {now['sha256'][:12]}): give it the voice it trained with (--voice)")


def read_config(work: Path, kind: type):
    """The run's config as its dataclass, read back from work/config.json (never guessed from the folder)."""
    path = Path(work) / CONFIG
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: the run's config cannot be read ({type(exc).__name__}: {exc})") from None
    if raw.get("kind") != kind.__name__:
        raise ValueError(f"{path} is a {raw.get('kind')!r} run, not a {kind.__name__}")
    return config_from(raw, kind)


def config_from(raw: dict, kind: type):
    """`kind` from a config's fields as written (a run's config.json, or a pack card's `run`): fields it lacks at
    their defaults (LEGACY's at the value older speaker runs had), keys it no longer has left out."""
    if kind is SpeakerRun:
        raw = {**LEGACY, **raw}
    # paths a pack wrote portable (~, $TMPDIR) read as this machine's
    raw = {k: local(v) if isinstance(v, str) else v for k, v in raw.items()}
    return kind(**{f.name: raw[f.name] for f in fields(kind) if f.name in raw})


def latest_steps(work: Path) -> tuple[pd.DataFrame, dict, int]:
    """(the run's curve, what it went on from (before.json, else nothing), the steps its latest state holds in all)."""
    frame = pd.read_csv(Path(work) / "train" / "curve.csv")
    before = json.loads((Path(work) / BEFORE).read_text()) if (Path(work) / BEFORE).exists() else packed_count({})
    return frame, before, int(frame["step"].iloc[-1]) + before["steps"]


def run_posterior(cfg: PosteriorRun) -> Path | None:
    """Fit the posterior encoder (resumable), then pack it with its round-trip check when `cfg.out` is set."""
    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work)
    start(cfg, work)
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0])
    sents = text.harvard_sentences(cfg.corpus_lists)[: cfg.corpus_limit or None]
    held = text.harvard_sentences(HELDOUT_LISTS)
    started = time.time()
    pairs = posterior.Pairs.of_teacher(teacher, sentence_ids(sents), draws=cfg.draws)
    if cfg.pitch_shifts:
        pairs = pairs.with_pitch_shifts(cfg.pitch_shifts, teacher.sample_rate)
    heldout = posterior.Pairs.of_teacher(teacher, sentence_ids(held), draws=1, seed=1000)
    _LOGGER.info("posterior pairs: %d training, %d held out (%.0f s)", len(pairs.spec), len(heldout.spec),
                 time.time() - started)
    enc_q, curve = posterior.bootstrap(teacher.hparams, pairs, cfg.recipe(), work / "posterior", batch=cfg.batch,
                                       heldout=heldout, threads=cfg.threads, progress=None)
    duration = fit_durations(cfg, teacher, sents)
    if not cfg.out:
        return None
    out = pack_posterior(cfg, teacher, enc_q, heldout)
    posterior.save_duration_parts(duration, out)
    return out


def fit_durations(cfg: PosteriorRun, teacher, sentences) -> dict:
    """The duration predictor's training-only parts fitted on the teacher's own durations of `sentences`."""
    pairs = posterior.teacher_durations(teacher, sentence_ids(sentences), draws=cfg.draws)
    return posterior.fit_duration_parts(teacher, pairs, cfg.recipe(cfg.duration_steps), Path(cfg.work) / "duration",
                                        batch=cfg.batch, threads=cfg.threads)


def pack_posterior(cfg: PosteriorRun, teacher, enc_q, heldout) -> Path:
    """The fitted encoder as a pack, with its round trip on the held-out list (teacher audio -> posterior -> the
    teacher's decoder: mel L1, beside a decoder fed zeros) in its config, and a ledger-style curve."""
    import pandas as pd
    from lib.harness.bench import environment
    work = Path(cfg.work)
    frame = pd.read_csv(work / "posterior" / "curve.csv")
    info = json.loads((work / CONFIG).read_text())
    hours, _, where = accounted_hours({"threads": cfg.threads, "cores": info.get("cores", 1), "device": "cpu"}, {},
                                      float(frame["seconds"].iloc[-1]), {}, "cpu")
    check = posterior.round_trip(enc_q, teacher.dec, heldout, teacher.sample_rate)
    env = environment(device="cpu")
    out = posterior.save(enc_q, Path(cfg.out), teacher.hparams, {
        "steps": int(frame["step"].iloc[-1]), "hours": round(hours, 4), "device": where,
        "cpu_model": env.get("cpu_model"),
        "round_trip_mel_l1": round(check["mel_l1"], 4), "zeros_mel_l1": round(check["mel_l1_silence"], 4),
        "heldout_lists": HELDOUT_LISTS, "run": portable_fields(asdict(cfg)),
        **({"teacher": info["teacher"]} if info.get("teacher") else {})})
    (out / "curve.csv").write_text((work / "posterior" / "curve.csv").read_text())
    write_env(out / "env.json", env)
    _LOGGER.info("posterior packed to %s: round-trip mel L1 %.3f (zeros %.3f), %.2f machine-hours", out,
                 check["mel_l1"], check["mel_l1_silence"], hours)
    return out


def default_speaker_folder(folder: Path, threads: int = 2, lists: list[int] | None = None, timed: bool = False,
                           speaker: str = "jf_alpha") -> Path:
    """Kokoro-82M's `speaker` (jf_alpha: the lab's target) reading Harvard `lists` (TARGET_LISTS when None) in that
    order at its own timing, as an LJSpeech folder (kept once written); the last VALIDATION recordings are a run's
    validation split. `timed`: through Kokoro's graph with its durations, which the folder then keeps (durations
    'folder': the true ones)."""
    lists = list(lists or TARGET_LISTS)
    if timed:
        from lib.voices.kokoro_timed import timed_folder  # deferred: onnx, to write the graph with durations once
        return timed_folder(speaker, target_sentences(lists), folder,
                            voices.PiperFrontend(voices.piper_paths()[1]), threads=threads)
    voice = voices.load_voice("kokoro-82m", speaker=speaker, threads=threads)
    return speaker_adapt.speaker_folder(voice, target_sentences(lists), folder)


def target_sentences(lists: list[int] | None = None) -> list:
    """The Harvard sentences a speaker folder reads (TARGET_LISTS when none are given); ValueError naming any judged
    list (1-10)."""
    lists = list(lists or TARGET_LISTS)
    judged = sorted(set(lists) & set(range(1, 11)))
    if judged:
        raise ValueError(f"speaker folder: Harvard lists {judged} are judged sentences; "
                         f"a speaker folder reads lists 11-72")
    return text.harvard_sentences(lists)


def speaker_data(cfg: SpeakerRun, teacher) -> tuple:
    """(training Utterances, validation recordings) of the run's folder at the voice's rate."""
    recs = ljspeech.read_folder(Path(cfg.dataset), teacher.sample_rate)
    train, val = ljspeech.split(recs, cfg.validation, cfg.clips)
    fe = voices.PiperFrontend(voices.piper_paths()[1])
    return vo.from_recordings(train, fe, piper_torch.hop_length(teacher)), val




def folder_durations(folder: Path, data: vo.Utterances) -> list[np.ndarray]:
    """Frames per phoneme id of each utterance from the folder's own durations (ljspeech.read_durations), each id
    at least one frame as the aligners give them; DatasetError naming a clip they do not fit."""
    own = ljspeech.read_durations(folder)
    out = []
    for uid, ids, frames in zip(data.ids, data.phonemes, data.frames):
        if uid not in own:
            raise ljspeech.DatasetError(f"{folder / ljspeech.DURATIONS} has no durations of {uid!r}")
        if len(own[uid]) != ids.numel():
            raise ljspeech.DatasetError(f"{uid}: {len(own[uid])} durations for {ids.numel()} phoneme ids of the voice "
                                        "(durations written for another voice's phonemes?)")
        out.append(durations.at_least_one(ljspeech.frames_of(own[uid], int(frames), data.sample_rate, data.hop, uid)))
    return out


def speaker_durations(cfg: SpeakerRun, teacher, data: vo.Utterances) -> vo.Utterances:
    """`data` with each recording's frames per phoneme id by `cfg.durations` (lib.harness.durations; found once per
    folder and method, in the lab's cache, whichever method's run trains on them)."""
    if cfg.durations == FOLDER_DURATIONS:
        return vo.with_durations(data, folder_durations(Path(cfg.dataset), data), FOLDER_DURATIONS)
    enc_q = posterior.load(Path(cfg.posterior), teacher.hparams, teacher).eval() if cfg.durations == "mas" else None
    return vo.with_durations(data, durations.cached_durations(data, teacher, cfg.durations, enc_q=enc_q,
                                                              threads=cfg.threads), cfg.durations)


def prepare_run(cfg: SpeakerRun, teacher) -> "speaker_adapt.Prepared":
    """The voice set up for the run's method on the run's path (the posterior encoder loaded for the posterior path
    only; the duration predictor's fitted training-only parts from the posterior pack where it has them)."""
    enc_q = posterior.load(Path(cfg.posterior), teacher.hparams, teacher) if cfg.path == "posterior" else None
    return speaker_adapt.prepare(teacher, speaker_adapt.Method.parse(cfg.method), enc_q, device=cfg.device,
                                 duration=posterior.load_duration_parts(Path(cfg.posterior)),
                                 train_posterior=cfg.train_posterior, prior_mel=cfg.prior_mel, path=cfg.path,
                                 noise_scale=cfg.noise_scale)


def run_speaker(cfg: SpeakerRun, ledger_path: Path | None = ledger.LEDGER) -> Path:
    """Train `cfg.method` on the folder (resumable from `work`), then pack it (with a row in `ledger_path`) when
    `cfg.out` is set. On the inference path the recordings' durations are found first (speaker_durations)."""
    torch.set_num_threads(cfg.threads)
    work = Path(cfg.work)
    voices.use_voice(cfg.voice)
    start(cfg, work, {"teacher": file_identity(voices.piper_paths()[0])})
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0])
    data, val = speaker_data(cfg, teacher)
    held_data = vo.from_recordings(val, voices.PiperFrontend(voices.piper_paths()[1]), data.hop)
    if cfg.path == "inference":
        data = speaker_durations(cfg, teacher, data)
        held_data = speaker_durations(cfg, teacher, held_data)
    prepared = prepare_run(cfg, teacher)
    held = [vo.batch_of(held_data, list(range(len(val))))]
    _LOGGER.info("%s on the %s path: %d training recordings, %d validation; %s trainable parameters", cfg.method,
                 cfg.path, len(data.ids), len(val), f"{prepared.trainable_params():,}")
    before = packed_before(cfg, prepared, work)
    Trainer(prepared.path, lambda rng: vo.random_batch(data, cfg.batch, rng), cfg.recipe(before["steps"]),
            work / "train", forward=prepared.forward, eval_batches=held, sample_rate=teacher.sample_rate,
            threads=cfg.threads, device=cfg.device, progress=None, should_stop=lambda: early_stop_reason(work)).fit()
    return pack_speaker(work, ledger_path=ledger_path) if cfg.out else work


@dataclass
class LoadedRun:
    """A speaker run's latest state, or a committed pack's, in the voice: its config, the teacher and the prepared
    voice (load_run)."""
    cfg: SpeakerRun
    teacher: torch.nn.Module
    prepared: "speaker_adapt.Prepared"
    steps: int


def load_run(work: Path) -> LoadedRun:
    """The latest checkpoint of the run in `work`, or the pack `work` (its card holds the run's config), on the CPU."""
    state = work / "train" / "state" / "model.safetensors"
    card = json.loads((work / "config.json").read_text())
    packed = not state.exists() and "run" in card
    cfg = config_from(card["run"], SpeakerRun) if packed else read_config(work, SpeakerRun)
    voices.use_voice(cfg.voice)
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0])
    prepared = prepare_run(replace(cfg, device="cpu"), teacher)
    if packed:
        speaker_adapt.load_into(prepared, work)
        return LoadedRun(cfg, teacher, prepared, int(card["steps"]))
    load_state(prepared, state)
    return LoadedRun(cfg, teacher, prepared, latest_steps(work)[2])


BEFORE = "before.json"
SPENT = "spent.json"  # beside a pack: the steps and hours the run has spent, the chosen checkpoint's or later


def load_state(prepared, path: Path) -> None:
    """The trainer's saved weights (accelerate's model.safetensors) into `prepared`; a ValueError names the file
    when a weight is missing or foreign (bitsandbytes' quantization state aside)."""
    state = {k.removeprefix("module."): v for k, v in load_file(str(path)).items()}
    result = prepared.path.load_state_dict(state, strict=False)
    bnb = ("absmax", "quant_map", "quant_state", "nested_")
    bad = [k for k in [*result.missing_keys, *result.unexpected_keys] if not any(b in k for b in bnb)]
    if bad:
        raise ValueError(f"{path}: weights {bad[:3]} are missing or belong to no layer of a {prepared.method.name} run")


def packed_before(cfg: SpeakerRun, prepared, work: Path) -> dict:
    """What the run counts on from: its committed pack (`cfg.init_from`) loaded into `prepared` when `work` holds no
    state yet, its steps and hours kept in work/before.json; zeros for a run that started here."""
    path = Path(work) / BEFORE
    if cfg.init_from and not path.exists() and not (Path(work) / "train" / "state").exists():
        info = speaker_adapt.load_into(prepared, Path(cfg.init_from))
        spent = Path(cfg.init_from) / SPENT  # hours count everything spent, steps go on from the chosen checkpoint
        hours = json.loads(spent.read_text()) if spent.exists() else info
        atomic_write_json(path, {**packed_count(info), "hours": float(hours.get("hours", 0.0)),
                                 "device_hours": float(hours.get("device_hours", 0.0))})
        _LOGGER.info("%s goes on from %s (%s steps, %.2f machine-hours)", cfg.method, cfg.init_from, info.get("steps"),
                     info.get("hours", 0.0))
    return json.loads(path.read_text()) if path.exists() else packed_count({})


def train_from_spec(spec: dict) -> None:
    """Train a SpeakerRun given as a dict, without packing: the body of the process whose peak memory the harness
    measures (bench.training_peak_mb)."""
    run_speaker(SpeakerRun(**{**spec, "out": ""}), ledger_path=None)


EARLY_STOP = "early_stop.json"


def early_stop_reason(work: Path) -> str | None:
    """Why the run in `work` should stop (pack_speaker wrote EARLY_STOP), or None."""
    path = Path(work) / EARLY_STOP
    return json.loads(path.read_text())["why"] if path.exists() else None


def _packed_already(out: Path, run: str, steps: int, ledger_path: Path | None) -> bool:
    """Whether `out` has judged the run at `steps` (its spent.json) and the ledger, if one is kept, has that row."""
    if not (out / SPENT).exists() or json.loads((out / SPENT).read_text())["steps"] != steps:
        return False
    return ledger_path is None or ledger.has_row(ledger_path, run, steps)


def pack_speaker(work: Path, ledger_path: Path | None = None) -> Path:
    """Judge the run's latest state on the speaker's validation split and add a ledger row (validation WER and
    SECS) when the ledger has not seen its steps; the method's files (speaker_adapt.save) under the run's `out`, with
    curve and env, are replaced only by a checkpoint whose validation_score beats theirs (checkpoint choice by the
    targets: the highest SECS with WER within the bound)."""
    cfg = read_config(work, SpeakerRun)
    info = json.loads((Path(work) / CONFIG).read_text())
    frame, before, steps = latest_steps(work)
    out = Path(cfg.out)
    run = f"{out.parent.name}/{out.name}"
    if _packed_already(out, run, steps, ledger_path):  # e.g. packing again after a run that trained no new step
        _LOGGER.info("%s at %d steps is packed and judged already: nothing to do", cfg.method, steps)
        return out
    voices.use_voice(cfg.voice)
    check_voice(info, voices.piper_paths()[0])
    teacher = piper_torch.load_piper_torch(voices.piper_paths()[0])
    prepared = prepare_run(replace(cfg, device="cpu"), teacher)
    load_state(prepared, Path(work) / "train" / "state" / "model.safetensors")
    env = environment(device=cfg.device)
    hours, device_hours, where = accounted_hours({"threads": cfg.threads, "cores": info.get("cores", 1),
                                                  "device": cfg.device}, before, float(frame["seconds"].iloc[-1]), env,
                                                 cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    _, val = speaker_data(cfg, teacher)
    quality = validation_quality(prepared.merged(), val, metrics.WhisperAsr("base", threads=cfg.threads))
    kept = json.loads((out / CONFIG).read_text()).get("judged") if (out / CONFIG).exists() else None
    if kept is None or validation_score(quality) > validation_score(kept, quality["speaker_wer"]):
        speaker_adapt.save(prepared, out, base=voices.piper_base_id(), card={
            "data": f"{cfg.clips or len(ljspeech.read_metadata(Path(cfg.dataset))) - cfg.validation} recordings of "
                    f"the folder {Path(cfg.dataset).name}",  # no local path in what ships
            "steps": steps, "hours": round(hours, 4), "device": where, "cpu_model": env.get("cpu_model"),
            "device_hours": round(device_hours, 4), "recipe": asdict(cfg.recipe(before["steps"])),
            "run": portable_fields(asdict(cfg)),
            "judged": {k: round(v, 4) for k, v in quality.items()}}, with_posterior=True)
        (out / "curve.csv").write_text((Path(work) / "train" / "curve.csv").read_text())
        write_env(out / "env.json", env)
        _LOGGER.info("packed %s: %d steps, %.2f machine-hours, %s -> %s", cfg.method, steps, hours, quality, out)
    else:
        _LOGGER.info("%s at %d steps (%s) does not beat the packed checkpoint (%s): kept", cfg.method, steps, quality,
                     kept)
    # what the run has spent, whichever checkpoint the folder keeps; written once judged (_packed_already reads it)
    atomic_write_json(out / SPENT, {"steps": steps, "hours": round(hours, 4), "device_hours": round(device_hours, 4)})
    if ledger_path is not None:
        if not ledger.has_row(ledger_path, run, steps):
            ledger.append(ledger_path, {
                "run": run, "part": "adapter", "recipe": cfg.recipe_name, "device": where,
                "cpu_model": env.get("cpu_model"), "steps": steps, "hours": round(hours, 4), "heldout_pesq": np.nan,
                "heldout_mel_l1": (round(float(frame["heldout_mel"].dropna().iloc[-1]), 4) if "heldout_mel" in frame
                                   else np.nan),
                "heldout_secs": round(quality["heldout_secs"], 4), "heldout_wer": round(quality["heldout_wer"], 4),
                "commit": env.get("git"), "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        book = ledger.read(ledger_path)
        stale = stale_packs(book[book["run"] == run], quality["speaker_wer"])
        if cfg.patience and stale >= cfg.patience:
            atomic_write_json(Path(work) / EARLY_STOP, {"why": f"{stale} packs since the best validation score",
                                                        "steps": steps})
            _LOGGER.info("%s: %d packs without a better validation score: the run stops early", cfg.method, stale)
    return out
