"""`tts-lab voice optimize`: the fastest (or smallest) variant of a piper voice that stays within the study's
quality bounds on this machine, written as one piper voice with its card and the results it was chosen by.

The candidates are ONNX Runtime's int8 conversions of the voice's file and the committed student packs trained
from this voice (each in the voice in place of its part, and the whole student voices they make together). Each is
timed interleaved with the voice itself (the harness, one thread) and judged noise-free on held-out sentences by
DNSMOS, Distill-MOS and Whisper; a candidate is within the bounds where, for each bound, the 95 % interval of its
mean per-sentence difference to the voice lies inside it (lib.core.bounds). Where none beats the voice within
them, nothing is shipped and the run says so.

    tts-lab voice optimize --out /tmp/fast           # the lab's voice
    tts-lab voice optimize --voice my/en_GB-alba-medium.onnx --objective size --out /tmp/small
    piper -m /tmp/fast/<name>.onnx -f out.wav <<< "The birch canoe slid on the smooth planks."
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lib.core import bounds, machine, registry, text
from lib.core.results import ResultWriter, atomic_write_json, atomic_write_text
from lib.core.subject import Technique
from lib.harness import bench, confirm, evaluate
from lib.harness.judges import Judges, judge_seconds, worker_count
from lib.techniques import compress, export, packs
from lib.voices import cards, piper_torch, synth as voices
from lib.voices.artefacts import file_identity
from lib.voices.spec import VoiceSpec
from lib.studies.optimize_options import CALIBRATION_LISTS, JUDGED_LISTS, Optimize

_LOGGER = logging.getLogger(__name__)

PACK_BUILD_S, STATIC_BUILD_S, CONVERT_BUILD_S = 15.0, 45.0, 5.0  # rough seconds to export or convert one (2 cores)


@dataclass
class Candidate:
    """One way to make the voice cheaper: `make(work)` builds its ONNX file (piper's interface) and returns it;
    `relation` is how it stands to the voice on the Hub (a card's base_model_relation)."""
    name: str
    technique: Technique
    make: Callable[[Path], Path]
    build_s: float  # rough seconds to build it here (2 cores)
    relation: Literal["quantized", "finetune"] = "quantized"


def compression_candidates(names, onnx: Path, calibration) -> list[Candidate]:
    """The ONNX Runtime int8 conversions in `names` (compress.CONVERSIONS, as notebook 03 judges them); ValueError
    naming one it does not know."""
    unknown = [n for n in names if n not in compress.CONVERSIONS]
    if unknown:
        raise ValueError(f"--compressions: {unknown} unknown; choose from {sorted(compress.CONVERSIONS)}")

    def candidate(c: compress.OnnxConversion) -> Candidate:
        return Candidate(c.name, c.technique, lambda work: c.convert(onnx, work, calibration),
                         STATIC_BUILD_S if c.kind == "static" else CONVERT_BUILD_S)
    return [candidate(compress.CONVERSIONS[n]) for n in names]


def pack_candidates(teacher, runs, config: Path, writer: ResultWriter) -> list[Candidate]:
    """Each pack of `runs` in the voice, and the whole student voices they make (lib.techniques.packs); a pack that
    cannot be loaded or was trained from another voice becomes absent rows naming why."""
    if not runs:
        return []
    long, absent, info, specs = packs.one_part_voices(teacher, runs)
    whole, whole_specs = packs.whole_voices(long, info, specs)
    for name, reason in absent.items():
        _LOGGER.warning("skipped %s: %s", name, reason)
        writer.about(name, Technique.DISTILLATION, backend="ort-cpu").absent(["rtf_ratio", "dnsmos_p808"], reason)
    built, all_specs = {**whole, **long}, {**whole_specs, **specs}  # whole voices first: the likelier picks

    def exporter(name: str) -> Callable[[Path], Path]:
        return lambda work: export.export_voice(built[name], work / all_specs[name].folder, config,
                                                speaker_id=voices.default_speaker())
    return [Candidate(all_specs[n].on("ort-cpu").name, Technique.DISTILLATION, exporter(n), PACK_BUILD_S, "finetune")
            for n in built]


def estimate_s(candidates: list[Candidate], sentences: int, audio_s: float, rtf: float, judge_rate: float,
               workers: int, repeats: int) -> list[float]:
    """Seconds each candidate will take here: building it, speaking the sentences to be judged and timed (at the
    voice's own RTF, an upper bound for a student) and judging them (`judge_rate`: judge seconds per second of
    audio, shared by `workers` processes)."""
    speak = audio_s * rtf * (sentences * (1 + repeats) + 1)  # the judged pass, the timed passes, one warm-up call
    judge = sentences * audio_s * judge_rate / max(1, workers)
    return [c.build_s + speak + judge for c in candidates]


def within_budget(candidates: list[Candidate], seconds: list[float], base_s: float, budget_s: float) -> list[Candidate]:
    """The leading candidates whose estimated seconds, with the voice's own `base_s`, fit `budget_s` (0: all)."""
    if budget_s <= 0:
        return candidates
    total, kept = base_s, []
    for c, s in zip(candidates, seconds):
        if total + s > budget_s:
            break
        kept.append(c)
        total += s
    return kept


OBJECTIVE_COLUMN = {"speed": "rtf_ratio", "size": "size_ratio"}


def choose(table: pd.DataFrame, judged: pd.DataFrame, objective: str) -> pd.Series | None:
    """The candidate the objective ranks first among those that meet every bound sentence by sentence (`judged`,
    bounds.quality_bounds) and beat the voice (`rtf_ratio`, or `size_ratio` for size, below 1); None where none
    (a contended timing's ratio is NaN: never a pick)."""
    column = OBJECTIVE_COLUMN[objective]
    ok = set(judged.loc[judged["bounds"] == "met", "variant"])
    rows = table[table["variant"].isin(ok) & (table[column] < 1.0)] if column in table else table[:0]
    return None if rows.empty else rows.sort_values(column).iloc[0]


def calibrate(voice_onnx: Path, asr: str, threads: int) -> dict:
    """The voice's RTF here on ONNX Runtime and the judges' seconds per second of audio, from one held-out sentence."""
    voice = voices.load_voice(model_path=str(voice_onnx), threads=threads)
    sentence = text.harvard_sentences(list(JUDGED_LISTS))[0].text
    voice.synthesize(sentence)  # warm-up
    start = time.perf_counter()
    clip = voice.synthesize(sentence)
    rtf = (time.perf_counter() - start) / clip.duration
    return {"rtf": rtf, "audio_s": clip.duration, "judge_rate": judge_seconds(clip, asr) / clip.duration}


def run(cfg: Optimize, command: str = "") -> dict:
    """Build, time and judge the candidates, pick one, and write it with its card; returns optimize.json's content."""
    voices.use_voice(cfg.voice)
    onnx, config = voices.piper_paths()
    label = onnx.name.removesuffix(".onnx")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    # outputs/optimize/<voice>-<objective>/
    writer = ResultWriter("optimize", f"{label}-{cfg.objective}", voices.piper_label())
    work = writer.dir / "candidates"
    work.mkdir(parents=True, exist_ok=True)
    teacher = piper_torch.load_piper_torch(onnx)
    frontend = voices.PiperFrontend(config)
    sentences, confirmation = text.screen_and_confirmation(list(JUDGED_LISTS), cfg.sentences, cfg.confirm_sentences)
    calibration = frontend.sentence_ids(text.harvard_sentences(list(CALIBRATION_LISTS))[:8])
    check_out(out, onnx)
    packs = cfg.packs or tuple(registry.load().packs(cfg.pack_set))  # the registry's set where none are given
    candidates = (pack_candidates(teacher, packs, config, writer)  # the whole student voices first
                  + compression_candidates(cfg.compressions, onnx, calibration))
    cal = calibrate(onnx, cfg.asr, cfg.threads)
    workers = worker_count(cfg.workers)
    seconds = estimate_s(candidates, len(sentences), cal["audio_s"], cal["rtf"], cal["judge_rate"], workers,
                         cfg.repeats)
    base_s = estimate_s([Candidate("voice", "baseline", lambda w: w, 0.0)], len(sentences), cal["audio_s"], cal["rtf"],
                        cal["judge_rate"], workers, cfg.repeats)[0]
    kept = within_budget(candidates, seconds, base_s, cfg.budget_minutes * 60)
    confirm_s = (1 + cfg.confirm_tries) * (len(confirmation) + cfg.confirm_prose) * cal["audio_s"] * (
        cal["rtf"] + cal["judge_rate"] / workers) if confirmation else 0.0
    _LOGGER.info("estimate: about %.1f minutes for %d candidate(s) of %s, and up to %.1f to confirm the best, on "
                 "this %s (%s; RTF %.3f, judges %.2f s per second of audio)%s",
                 (base_s + sum(seconds[: len(kept)])) / 60, len(kept), label, confirm_s / 60, machine.cpu_model(),
                 machine.feature_line(), cal["rtf"], cal["judge_rate"],
                 f"; dropped to fit {cfg.budget_minutes:g} minutes: {', '.join(c.name for c in candidates[len(kept):])}"
                 if len(kept) < len(candidates) else "")
    base = VoiceSpec(backend="ort-cpu").name
    variants = [evaluate.onnx_variant(base, Technique.BASELINE, onnx, parent="")]
    for c in tqdm(kept, desc="building candidates", unit="candidate"):
        try:
            variant = evaluate.onnx_variant(c.name, c.technique, c.make(work), parent=base)
            variant.make(threads=1).synthesize("Test.")  # one that ONNX Runtime cannot open stops here, not later
            variants.append(variant)
        except Exception as exc:  # one candidate that cannot be built must not cost the others
            _LOGGER.warning("could not build %s: %s: %s", c.name, type(exc).__name__, exc)
            writer.about(c.name, c.technique, backend="ort-cpu").absent(
                ["rtf_ratio", "dnsmos_p808"], f"could not be built: {type(exc).__name__}: {exc}")
    judges = Judges(asr=cfg.asr, workers=workers, cache_path=writer.dir.parent / "judge_cache.sqlite")
    settings = json.loads(config.read_text()).get("inference", {})
    writer.scalars.update(config=asdict(cfg), command=command, candidates=[c.name for c in kept])
    env = bench.environment(threads=cfg.threads)
    try:
        per_clip, _ = evaluate.evaluate_variants(
            variants, sentences, judges, writer, baseline=base, threads=cfg.threads, paired=True,
            settings={k: settings[k] for k in ("noise_scale", "noise_w", "length_scale") if k in settings},
            speed_sentences=len(sentences), repeats=cfg.repeats, memory=False)
    finally:  # what was measured before a failure is kept
        record = writer.write(env)
    table = bounds.deltas(writer.frame(), base, cfg.max_dnsmos_drop, cfg.max_wer_increase)
    confirmed = confirm.confirm(variants, per_clip, table[table["variant"] != base], base,
                                [confirm.Objective(OBJECTIVE_COLUMN[cfg.objective])], confirmation, cfg.confirm_prose,
                                judges, writer, settings={k: settings[k] for k in ("length_scale",) if k in settings},
                                threads=cfg.threads, max_dnsmos_drop=cfg.max_dnsmos_drop,
                                max_wer_increase=cfg.max_wer_increase, tries=cfg.confirm_tries)
    judged = confirmed.judged
    summary = candidates_table(table, judged)
    writer.write(env, extra_tables={"per_clip": per_clip, "per_clip_confirm": confirmed.clips,
                                    "per_clip_varied": confirmed.varied, "candidates": summary})
    if table[OBJECTIVE_COLUMN[cfg.objective]].drop(index=table.index[table["variant"] == base]).isna().all():
        raise ValueError(f"no candidate has a {OBJECTIVE_COLUMN[cfg.objective]} (timings contended or absent: "
                         f"{record / 'results.csv'}); rerun on a quiet machine -- {out} is left as it was")
    pick = choose(table, judged, cfg.objective)
    result = ship(pick, summary, next((c for c in kept if pick is not None and c.name == pick["variant"]), None),
                  variants, onnx, config, out, cfg, record)
    _LOGGER.info("%s\n%s", result["verdict"], summary.round(3).to_string(index=False))
    return result


def candidates_table(table: pd.DataFrame, judged: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: speed and size against the voice, the quality deltas with their intervals and words."""
    cols = [c for c in ("variant", "technique", "rtf_ratio", "size_ratio", "dnsmos_p808", "dnsmos_drop", "wer",
                        "wer_increase") if c in table]
    rows = table[cols].merge(judged, on="variant", how="left")
    for key in ("dnsmos_drop_judged", "wer_rise_judged"):
        if key in rows:
            stem = key.removesuffix("_judged")
            rows[f"{stem}_mean"] = [j["mean"] if isinstance(j, dict) else np.nan for j in rows[key]]
            rows[f"{stem}_lo"] = [j["lo"] if isinstance(j, dict) else np.nan for j in rows[key]]
            rows[f"{stem}_hi"] = [j["hi"] if isinstance(j, dict) else np.nan for j in rows[key]]
            rows[f"{stem}_word"] = [j["word"] if isinstance(j, dict) else "" for j in rows[key]]
            rows[f"{stem}_n"] = [j["n"] if isinstance(j, dict) else 0 for j in rows[key]]
            rows = rows.drop(columns=key)
    return rows.sort_values("rtf_ratio" if "rtf_ratio" in rows else "variant").reset_index(drop=True)


def times(ratio: float) -> str:
    """A ratio to the voice as a factor ('1.10x'), or why there is none."""
    return f"{1 / ratio:.2f}x" if ratio == ratio and ratio > 0 else "(not measured)"


def check_out(out: Path, voice: Path) -> None:
    """ValueError where `out` holds the voice itself or files an earlier optimize run did not write: the run
    replaces only what its own optimize.json names."""
    if (out / voice.name).resolve() == voice.resolve():
        raise ValueError(f"--out {out} holds the voice itself ({voice.name}): give an empty folder")
    ours = {"optimize.json", "README.md", "results.csv", "candidates.csv", *shipped_files(out)}
    stray = sorted(p.name for p in out.iterdir() if p.name not in ours) if out.is_dir() else []
    if stray:
        raise ValueError(f"--out {out} holds files optimize did not write ({', '.join(stray[:3])}): give an empty "
                         "folder or the one an earlier optimize run wrote")


def shipped_files(out: Path) -> list[str]:
    """The voice files an earlier run wrote into `out` (its optimize.json's voice and the .json beside it)."""
    try:
        voice = json.loads((out / "optimize.json").read_text()).get("voice")
    except (OSError, ValueError):
        return []
    return [voice, f"{voice}.json"] if voice else []


def ship(pick: pd.Series | None, summary: pd.DataFrame, candidate: Candidate | None, variants, onnx: Path,
         config: Path, out: Path, cfg: Optimize, record: Path) -> dict:
    """Write the chosen variant as a piper voice (checked by piper's runtime before it replaces an earlier run's)
    with its card beside results.csv, candidates.csv and optimize.json; where there is no pick, only those and the
    verdict (an earlier run's voice is removed: the folder says what this run found)."""
    shutil.copyfile(record / "results.csv", out / "results.csv")
    atomic_write_text(out / "candidates.csv", summary.to_csv(index=False))
    cpu = f"{machine.cpu_model()} ({machine.feature_line()}), {cfg.threads} thread(s)"
    goal = "fastest" if cfg.objective == "speed" else "smallest"
    result = {"objective": cfg.objective, "cpu": cpu, "record": str(record.relative_to(record.parents[2])), "bounds": {
        "max_dnsmos_drop": cfg.max_dnsmos_drop, "max_wer_increase": cfg.max_wer_increase}, "voice": None}
    earlier = shipped_files(out)
    if pick is None:
        for name in earlier:
            (out / name).unlink(missing_ok=True)
        result["verdict"] = (f"No candidate beats {onnx.name} within the quality bounds on this machine ({cpu}): "
                             "nothing shipped; candidates.csv says by how much each misses.")
        atomic_write_text(out / "README.md", f"# No voice shipped\n\n{result['verdict']}\n")
        atomic_write_json(out / "optimize.json", result)
        return result
    name = cards.piper_name(onnx, pick["variant"])
    source = next(v.artefact for v in variants if v.name == pick["variant"])
    staged = out / ".staged"
    staged.mkdir(exist_ok=True)
    shutil.copyfile(source, staged / f"{name}.onnx")
    shutil.copyfile(config, staged / f"{name}.onnx.json")
    spoke = export.piper_runtime_check(staged / f"{name}.onnx")  # ArtefactError: the folder keeps what it had
    for old in earlier:
        (out / old).unlink(missing_ok=True)
    for f in (f"{name}.onnx", f"{name}.onnx.json"):
        (staged / f).replace(out / f)
    staged.rmdir()
    row = summary.set_index("variant").loc[pick["variant"]]
    card = cards.voice_card(name=name, variant=pick["variant"], technique=str(pick["technique"]),
                            relation=candidate.relation if candidate else "quantized", teacher=file_identity(onnx),
                            row=row.to_dict(), objective=goal, cpu=cpu, asr=cfg.asr,
                            bounds=result["bounds"])
    card.save(out / "README.md")
    result.update(voice=f"{name}.onnx", variant=pick["variant"], piper_runtime=spoke,
                  verdict=(f"Shipped {name}.onnx: the {goal} candidate within the quality bounds, "
                           f"{times(pick['rtf_ratio'])} the speed of {onnx.name} and {times(pick['size_ratio'])} "
                           f"smaller, on this {cpu}."))
    atomic_write_json(out / "optimize.json", result)
    return result
