"""Notebook 04's steps: the synthetic corpus the teacher speaks, the students it teaches (the decoder chain, the
frame-rate decoder, the flow and the front end), the student voices built from them and handed to the one harness,
the frame-rate decoder's width scan, and the values its verdicts and closing findings state."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core import text
from lib.core import bounds
from lib.core.results import ResultWriter
from lib.core.subject import Technique
from lib.core.text import Sentence
from lib.harness import bench, evaluate
from lib.studies import common
from lib.techniques import distill, export, frontend_student, packs
from lib.techniques.packs import LONG_ROOT  # noqa: F401 (notebook 04 reads it as study.LONG_ROOT)
from lib.training import batches, loop as training
from lib.voices import istft_decoder, parts, synth as voices
from lib.voices.spec import BACKEND_TAG, Part, Source, VoiceSpec

_LOGGER = logging.getLogger(__name__)

TORCH_STUDENTS = ("links", "chain+flow", "frontend", "whole", "istft", "5x")  # the voices `torch_students` may name
ORT_STUDENTS = ("chain", "chain+flow", "whole", "5x")  # the student voices `ort_students` may name
ABSENT_METRICS = ["rtf_ratio", "dnsmos_p808", "wer"]  # what an absent student's rows name




def check_settings(widths: Sequence[int], decoder_steps: Sequence[int], device: str, torch_students: Sequence[str],
                   ort_students: Sequence[str]) -> None:
    """Refuse parameters that cannot work together, naming them: one step budget per chain link, CUDA where there is
    none, a student voice `torch_students` or `ort_students` does not know."""
    if len(decoder_steps) != len(widths):
        raise ValueError(f"decoder_steps has {len(decoder_steps)} entries, widths {len(widths)}: one per student")
    common.check_device(device)
    unknown = sorted(set(ort_students) - set(ORT_STUDENTS))
    if unknown or "whole" not in ort_students:
        raise ValueError(f"ort_students {list(ort_students)}: use some of {list(ORT_STUDENTS)}, 'whole' among them "
                         "(piper's own runtime opens the whole student voice)")
    unknown = sorted(set(torch_students) - set(TORCH_STUDENTS))
    if unknown:
        raise ValueError(f"torch_students: unknown {unknown}; use some of {list(TORCH_STUDENTS)}")




@dataclass
class Corpus:
    """What the students learn from: the synthetic training sentences' phoneme ids and the teacher's latents and
    waveforms for them, and the same for the held-out sentences of the training check (never trained on or judged)."""
    train: list
    train_ids: list
    latents: batches.Latents
    held: list
    held_ids: list
    heldout: batches.Latents

    def describe(self, teacher, n_eval: int) -> str:
        return (f"teacher decoder width {distill.decoder_width(teacher.dec)}; {len(self.train)} synthetic training "
                f"sentences ({sum(z.shape[-1] for z in self.latents.z)} latent frames), {n_eval} evaluation sentences "
                "(never trained on)")


def synthetic_corpus(teacher, frontend, corpus_lists: Sequence[int], heldout_lists: Sequence[int],
                     heldout_limit: int, cache: Path | None = None) -> Corpus:
    """The teacher speaks Harvard lists `corpus_lists` (training) and the first `heldout_limit` sentences of
    `heldout_lists` (the held-out check), noise off: the only data any student sees (kept in `cache`)."""
    train, held = text.harvard_sentences(corpus_lists), text.harvard_sentences(heldout_lists)[:heldout_limit]
    train_ids, held_ids = frontend.sentence_ids(train), frontend.sentence_ids(held)
    return Corpus(train, train_ids, batches.teacher_latents(teacher, train_ids, [s.id for s in train], cache=cache),
                  held, held_ids, batches.teacher_latents(teacher, held_ids, [s.id for s in held], cache=cache))


def decoder_recipe(steps: int, *, lr: float, adversarial_steps: int, discriminators: Sequence[str], eval_every: int,
                   checkpoint_every: int) -> training.Recipe:
    """A decoder student's recipe: mel L1 for all but the last `adversarial_steps` steps,
    which add the discriminators."""
    return training.Recipe.adversarial_tail(steps, adversarial_steps, lr=lr, discriminators=tuple(discriminators),
                                            eval_every=eval_every, checkpoint_every=checkpoint_every)


def train_decoders(teacher, data: Corpus, widths: Sequence[int], decoder_steps: Sequence[int], work: Path, *,
                   compare_scratch: bool, batch: int, frames: int, eval_every: int, device: str, threads: int,
                   **recipe) -> tuple[dict, dict, str]:
    """The decoder chain (`distill.train_chain`), one recipe per link, with the held-out mel and PESQ check every
    `eval_every` steps: (students by name, curves by name, the chain end's name)."""
    recipes = [decoder_recipe(s, eval_every=eval_every, **recipe) for s in decoder_steps]
    return distill.train_chain(teacher, data.latents, widths, recipes, work, compare_scratch=compare_scratch,
                               batch=batch, frames=frames, heldout=data.heldout, device=device, threads=threads,
                               eval_fn=(evaluate.heldout_pesq(data.heldout, limit=len(data.held)) if eval_every
                                        else None))


def chain_table(curves: dict) -> pd.DataFrame:
    """Each decoder link's final mel L1 and steps."""
    return pd.DataFrame([{"student": n, "final mel L1": distill.final_mel(c), "steps": c.steps_done}
                         for n, c in curves.items()])


def train_istft(teacher, data: Corpus, work: Path, *, dim: int, blocks: int, steps: int, batch: int, frames: int,
                eval_every: int, device: str, threads: int, **recipe):
    """The frame-rate (iSTFT) decoder from scratch, with the decoders' recipe: (name, decoder on the CPU, curve)."""
    name = f"istft{dim}x{blocks}"
    voc = istft_decoder.FrameRateDecoder(teacher.hparams["inter_channels"], dim, blocks)
    curve = training.train_decoder(voc, data.latents, decoder_recipe(steps, eval_every=eval_every, **recipe),
                                   work / name, batch=batch, frames=frames, heldout=data.heldout, device=device,
                                   threads=threads,
                                   eval_fn=(evaluate.heldout_pesq(data.heldout, limit=len(data.held)) if eval_every
                                            else None))
    voc = voc.cpu().eval()
    _LOGGER.info("%s: %s parameters, final mel L1 %.3f", name, f"{sum(p.numel() for p in voc.parameters()):,}",
                 distill.final_mel(curve))
    return name, voc, curve


def train_flow(teacher, data: Corpus, work: Path, *, hidden: int, steps: int, lr: float, noise_scale: float,
               checkpoint_every: int, device: str, threads: int):
    """The flow student of `hidden` channels fitted to the teacher flow's output for prior samples drawn with
    `noise_scale`: (name, weight-norm-folded flow, curve)."""
    name = f"flow{hidden}"
    flow = distill.flow_student(teacher, hidden)
    curve = distill.train_flow(flow, distill.flow_pairs(teacher, data.train_ids, noise_scale=noise_scale),
                               training.Recipe(steps=steps, lr=lr, checkpoint_every=checkpoint_every), work / name,
                               device=device, threads=threads)
    return name, parts.fold_weight_norm(flow.cpu()), curve


def train_frontend(teacher, data: Corpus, work: Path, *, hidden: int, filter_channels: int, steps: int, lr: float,
                   eval_every: int, checkpoint_every: int, device: str, threads: int):
    """The front-end student (text encoder + deterministic duration predictor), regressed on the teacher's prior
    statistics and durations, held-out loss every `eval_every` steps: (name, student on the CPU, curve)."""
    name = f"fe{hidden}"
    fe = frontend_student.frontend_student(teacher, hidden, filter_channels)
    curve = frontend_student.train_frontend(
        fe, frontend_student.teacher_targets(teacher, data.train_ids),
        training.Recipe(steps=steps, lr=lr, eval_every=eval_every, checkpoint_every=checkpoint_every), work / name,
        device=device, threads=threads, heldout=frontend_student.teacher_targets(teacher, data.held_ids))
    return name, fe.cpu().eval(), curve


def training_summary(curves: dict, final_loss_steps: int) -> pd.DataFrame:
    """Steps, seconds per step, minutes and the loss averaged over the last `final_loss_steps` steps, per student."""
    return pd.DataFrame([{"student": n, "steps": lg.steps_done, "s_per_step": lg.s_per_step, "minutes": lg.seconds / 60,
                          "final loss": float(np.mean(lg.loss[-final_loss_steps:]))} for n, lg in curves.items()])


def training_minutes(curves: dict) -> float:
    """Minutes of training this run spent, all students together."""
    return sum(lg.seconds for lg in curves.values()) / 60


@dataclass
class Voices:
    """The voices built from this run's students (`built`, the teacher first), those judged in PyTorch (`judged`) and
    in ONNX Runtime (`ort`), the names of the composed ones, and the recorded students (GPU runs and long CPU runs)
    with what is absent and where each trained; `specs` says what each voice is (its name is rendered from it)."""
    built: dict
    judged: list
    best: str
    whole: str
    five: str
    frontend_only: str
    ort: dict
    recorded: dict
    absent: dict
    info: dict
    specs: dict = field(default_factory=dict)

    def costed(self) -> dict:
        """The voices whose parameters and GFLOP are counted: those judged, exported or broken down by module."""
        names = set(self.judged) | set(self.ort) | {"teacher", self.whole, self.five}
        return {**{n: m for n, m in self.built.items() if n in names}, **self.recorded}

    def decoders_alone(self, backend: str = "torch-cpu") -> list:
        """The names, on `backend`, of the voices whose one student part is a decoder (the teacher's flow and front
        end): where a decoder's own quality is judged."""
        return [sp.on(backend).name for sp in self.specs.values() if [p.role for p in sp.parts] == ["decoder"]]

    def fives(self, backend: str = "torch-cpu") -> list:
        """The names, on `backend`, of the 5x voices among this run's and the recorded ones: a frame-rate decoder with
        a front-end student (known by their parts, not their names)."""
        names = [n for n, m in {**self.built, **self.recorded}.items()
                 if isinstance(m.dec, istft_decoder.FrameRateDecoder) and not getattr(m, "use_sdp", True)]
        return names if backend == "torch-cpu" else [self.specs[n].on(backend).name for n in names]


def part_width(module, kind: str) -> int:
    """The channels of a student part: a decoder's first convolution, a frame-rate decoder's or front end's width,
    the flow's hidden channels."""
    if kind == "decoder":
        return distill.decoder_width(module)
    if kind == "flow":
        return module.flows[0].enc.hidden_channels
    return module.config["dim" if kind == "istft_decoder" else "hidden_channels"]


def student_voices(teacher, students: dict, chain_end: str, *, flow, flow_name: str, fe, fe_name: str, voc,
                   istft_name: str) -> tuple[dict, dict, dict]:
    """The voices built from this run's students, the teacher first: each decoder link alone, then the composed ones.
    Returns ({name: voice}, {role: the names of its voices} for the roles of TORCH_STUDENTS and ORT_STUDENTS,
    {name: spec})."""
    here = {Part(n, "decoder", part_width(d, "decoder")): d for n, d in students.items()}
    here.update({Part(flow_name, "flow", part_width(flow, "flow")): flow,
                 Part(fe_name, "frontend", part_width(fe, "frontend")): fe,
                 Part(istft_name, "istft_decoder", part_width(voc, "istft_decoder")): voc})
    by_name = {p.name: p for p in here}
    chain, flow_p, fe_p, voc_p = by_name[chain_end], by_name[flow_name], by_name[fe_name], by_name[istft_name]
    roles = {"links": [VoiceSpec((by_name[n],)) for n in students], "chain": [VoiceSpec((chain,))],
             "chain+flow": [VoiceSpec((chain, flow_p))], "frontend": [VoiceSpec((fe_p,))],
             "whole": [VoiceSpec((chain, flow_p, fe_p))], "istft": [VoiceSpec((voc_p,))],
             "5x": [VoiceSpec((voc_p, flow_p, fe_p))]}
    specs = {"teacher": VoiceSpec()}
    for role in ("links", "chain+flow", "frontend", "whole", "istft", "5x"):  # the order the voices are judged in
        specs.update({sp.name: sp for sp in roles[role]})
    vs = {n: teacher if not sp.parts else packs.voice_of(teacher, sp, here) for n, sp in specs.items()}
    return vs, {r: [sp.name for sp in sps] for r, sps in roles.items()}, specs


def recorded_specs(teacher, roots: dict) -> tuple[dict, dict, dict, dict]:
    """The students recorded on GPUs (`roots`: device -> folder; distill.recorded_voices), each with its spec read
    from its pack's config: ({name: voice}, {name: reason it is absent}, {name: config}, {name: spec})."""
    voices_, absent, info, specs = {}, {}, {}, {}
    for dev, root in roots.items():
        rec, bad, cfg = distill.recorded_voices(teacher, {dev: root})
        for n, c in cfg.items():
            packed = [Part.of_pack(c["decoder"], dev)] if "decoder" in c else []
            specs[n] = VoiceSpec(tuple(packed + [Part.of_pack(c, dev)]))
        voices_, absent, info = {**voices_, **rec}, {**absent, **bad}, {**info, **cfg}
    return voices_, absent, info, specs


def all_voices(teacher, students: dict, chain_end: str, *, recorded_roots: dict, long_runs: Sequence[str],
               torch_students: Sequence[str], ort_students: Sequence[str], writer: ResultWriter,
               **parts_) -> Voices:
    """This run's student voices (those of the roles in `torch_students` judged in PyTorch, with the teacher; those
    in `ort_students` exported), the students recorded on GPUs (`recorded_roots`: device -> folder) and the long CPU
    runs' packs; a recorded 5x voice gets this run's front end, and a long regression-first run's decoder is also
    judged with a flow (the first long flow run's, else this run's) and this run's front end: a whole student voice,
    the 5x voice for a frame-rate decoder. What cannot be loaded becomes absent rows naming why."""
    vs, roles, specs = student_voices(teacher, students, chain_end, **parts_)
    fe_part = specs[roles["frontend"][0]].part("frontend")
    judged = [n for n in vs if n == "teacher" or any(n in roles[r] for r in torch_students)]
    rec, absent, info, rec_specs = recorded_specs(teacher, recorded_roots)
    # a recorded 5x voice (frame-rate decoder and flow), with this run's front end
    for n, sp in list(rec_specs.items()):
        if sp.part("decoder").kind == "istft_decoder" and sp.part("flow") is not None:
            five = sp.with_part(fe_part)
            rec[five.name], rec_specs[five.name] = distill.with_parts(rec[n], frontend=parts_["fe"]), five
    long, long_absent, long_info, long_specs = packs.one_part_voices(teacher, long_runs)
    whole, whole_specs = packs.whole_voices(long, long_info, long_specs, parts_["flow"],
                                           specs[roles["chain+flow"][0]].part("flow"), parts_["fe"], fe_part)
    rec, absent, info = {**rec, **long, **whole}, {**absent, **long_absent}, {**info, **long_info}
    for name, reason in absent.items():
        writer.about(name, Technique.DISTILLATION, backend="ort-cpu").absent(ABSENT_METRICS, reason)
    ort = {roles[r][0]: vs[roles[r][0]] for r in ORT_STUDENTS if r in ort_students}
    return Voices(vs, judged, roles["chain+flow"][0], roles["whole"][0], roles["5x"][0], roles["frontend"][0], ort, rec,
                  absent, info, {**specs, **rec_specs, **long_specs, **whole_specs})


def harness_variants(v: Voices, costs: dict, onnx_fp32: Path, config: Path, work: Path) -> tuple[list, dict]:
    """The variants handed to the harness: every PyTorch voice (parent: the teacher), the shipped file in ONNX
    Runtime and each ONNX student (this run's `ort` voices and the recorded ones, exported with piper's interface;
    parent: the shipped file), with their cost rows. Returns (variants, {student: onnx path})."""
    onnx = {n: export.export_voice(m, work / "onnx" / v.specs[n].folder, config)
            for n, m in {**v.ort, **v.recorded}.items()}
    extra = {n: {k: x for k, x in c.items() if k != "params"} for n, c in costs.items()}
    teacher, shipped = VoiceSpec().name, VoiceSpec(backend="ort-cpu").name
    out = [evaluate.torch_variant(n, Technique.BASELINE if n == teacher else Technique.DISTILLATION, m, work / "torch",
                                  parent="" if n == teacher else teacher, extra=extra[n]) for n, m in v.built.items()
           if n in v.judged]
    out += [evaluate.onnx_variant(shipped, Technique.BASELINE, onnx_fp32, parent="")]
    out += [evaluate.onnx_variant(v.specs[n].on("ort-cpu").name, Technique.DISTILLATION, path, parent=shipped,
                                  artefact=path.parent, extra=extra[n] | {"params": costs[n]["params"]})
            for n, path in onnx.items()]
    return out, onnx


def duration_rows(v: Voices, teacher, ids: Sequence[list[int]], writer: ResultWriter) -> None:
    """A front-end student's durations against the teacher's, for this run's voices that speak through it and for
    each long front-end run's pack (the teacher with it: the long whole voices share its durations; rows to
    `writer`)."""
    voices_ = {**{n: v.built[n] for n in (v.frontend_only, v.whole, v.five)},
               **{n: m for n, m in v.recorded.items() if v.info.get(n, {}).get("kind") == "frontend"}}
    for n, voice in voices_.items():
        writer.about(n, Technique.DISTILLATION, parent="teacher", backend="torch-cpu").add_many(
            evaluate.duration_error(voice, teacher, ids), reference="teacher", n=len(ids))


DELTA_COLUMNS = ["variant", "backend", "rtf", "rtf_ratio", "gflop_per_audio_s", "dec_gflop_per_audio_s",
                 "duration_mae_frames", "params", "size_mb", "dnsmos_p808", "dnsmos_drop", "wer", "wer_increase",
                 "pesq_wb", "mcd_db", "f0_rmse_cents", "within_quality_bounds"]


def compute_by_module(v: Voices, costs: dict, ids: Sequence[list[int]], threads: int) -> pd.DataFrame:
    """Parameters, GFLOP and PyTorch time per second of audio by module (`threads` threads), for the teacher, the
    whole student voice and the 5x voice."""
    pair = {n: v.built[n] for n in ("teacher", v.whole, v.five)}
    return bench.module_breakdown(pair, costs,
                                  {n: bench.module_times(m, ids, threads=threads) for n, m in pair.items()})


def width_scan(teacher, flow, fe, widths: Sequence[int], work: Path, *, blocks: int, flow_name: str, fe_name: str,
               onnx_fp32: Path, config: Path, sentences: Sequence[Sentence], writer: ResultWriter, threads: int,
               warmup: int) -> pd.DataFrame:
    """The 5x voice rebuilt with an untrained frame-rate decoder of each width, exported and timed interleaved with
    the shipped file in ONNX Runtime, noise off (rows `architecture scan`, parent `fp32-ort`)."""
    quiet = dict(backend="ort-cpu", threads=threads, noise_scale=0.0, noise_w=0.0)
    shipped = VoiceSpec(backend="ort-cpu").name
    timed = {shipped: voices.load_voice(model_path=onnx_fp32, **quiet)}
    untrained = Source(trained=False)
    for d in widths:
        dec = istft_decoder.FrameRateDecoder(teacher.hparams["inter_channels"], d, blocks)
        spec = VoiceSpec((Part(f"istft{d}x{blocks}", "istft_decoder", d, untrained),
                          Part(flow_name, "flow", part_width(flow, "flow")),
                          Part(fe_name, "frontend", part_width(fe, "frontend"))))
        path = export.export_voice(distill.with_parts(teacher, decoder=dec, flow=flow, frontend=fe),
                                   work / "scan" / spec.folder, config)
        timed[spec.name] = voices.load_voice(model_path=path, **quiet)
    subjects = {n: writer.about(n, Technique.ARCHITECTURE_SCAN, backend="ort-cpu", threads=threads,
                                parent=shipped).subject for n in timed}
    return evaluate.measure_speed(timed, sentences, writer, baseline=shipped, warmup=warmup, subjects=subjects,
                                  record=[n for n in timed if n != shipped])


def judged_table(frame: pd.DataFrame, per_clip: pd.DataFrame, varied: pd.DataFrame | None, max_dnsmos_drop: float,
                 max_wer_increase: float, confirmed: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the deltas table, its ONNX Runtime students' rows): each student against its parent (the ONNX ones against
    `fp32-ort`, the PyTorch ones against the teacher), within the bounds sentence by sentence on the Harvard lists,
    those the confirmation judged (`confirmed`) decided there and on the varied set (lib.core.bounds.within: as the
    verdicts and the report judge it)."""
    table = bounds.deltas(frame, "teacher", max_dnsmos_drop, max_wer_increase, per_clip=per_clip, varied=varied,
                          by_parent=True, confirmed=confirmed)
    return table, onnx_rows(table)


def onnx_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the students in ONNX Runtime (judged against the shipped file there, `fp32-ort`)."""
    return table[(table["backend"] == "ort-cpu") & (table["technique"] == Technique.DISTILLATION)]


def fast_decoders(ort_rows: pd.DataFrame, v: Voices, max_rtf_ratio: float) -> dict[str, float]:
    """The decoders alone (the teacher's flow and front end) in ONNX Runtime at most `max_rtf_ratio`:
    {name: rtf_ratio}."""
    rows = ort_rows[ort_rows["variant"].isin(v.decoders_alone("ort-cpu")) & (ort_rows["rtf_ratio"] <= max_rtf_ratio)]
    return dict(zip(rows["variant"], rows["rtf_ratio"]))


def five_x_rows(ort_rows: pd.DataFrame, fives: Sequence[str]) -> pd.DataFrame:
    """The rows of the 5x voices among them (`fives`: Voices.fives('ort-cpu'), their names in ONNX Runtime)."""
    return ort_rows[ort_rows["variant"].isin(fives)]


def budgets(voices: Voices, where: pd.DataFrame, device: str) -> dict:
    """Each voice's training budget (VoiceSpec.budget) by its name on every back-end it runs on, for the verdict
    lines that judge it: a long pack's hours, not this run's minutes."""
    here = {r.student: r.hours * 60 for r in where.itertuples() if r.where == device}
    return {spec.on(backend).name: spec.budget(here, device) for spec in voices.specs.values()
            for backend in BACKEND_TAG}


def record(writer: ResultWriter, env: dict, *, curves: dict, tables: dict, **scalars) -> Path:
    """Write results.csv, metrics.json (`scalars`, with every student's curve in `training_curves`) and the tables."""
    writer.scalars.update(scalars)
    frame = pd.concat([lg.frame.assign(student=n) for n, lg in curves.items()], ignore_index=True)
    return writer.write(env, extra_tables={**tables, "training_curves": frame})


def findings_facts(ort_rows: pd.DataFrame, scan: pd.DataFrame, equal_hours: pd.DataFrame) -> dict:
    """The values the closing findings state: each ONNX student's speed and quality deltas (fastest first), the
    untrained widths' speed, and the long runs at equal machine time (empty lists where there is none)."""
    return {"ort": [(r.variant, r.rtf_ratio, r.dnsmos_drop, r.wer_increase)
                    for r in ort_rows.sort_values("rtf_ratio").itertuples()],
            "scan": [(r.name, r.rtf_ratio)
                     for r in scan[scan["name"] != VoiceSpec(backend="ort-cpu").name].itertuples()],
            "hours": equal_hours["budget_hours"].iloc[0] if len(equal_hours) else None,
            "long": [(r.recipe, r.run, r.heldout_pesq, r.steps) for r in equal_hours.itertuples()]}
