"""What every long training run shares: the synthetic corpus and the held-out list, its bookkeeping files (read
with the file named in any error), starts from packed files, and the held-out quality that the ledger records for
each packed part."""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from piper.train.vits import commons

from lib.core import text
from lib.data import corpus_text
from lib.data.corpus_shards import CorpusStream, read_manifest
from lib.harness import metrics
from lib.techniques import distill
from lib.techniques.frontend_student import teacher_targets
from lib.training import batches
from lib.training.losses import mel_l1
from lib.voices import piper_torch
from lib.voices import synth as voices
from lib.voices.artefacts import ArtefactError, gpu_of_hours, load_part
from lib.voices.parts import fold_weight_norm
from lib.data.splits import CORPUS_LISTS, HELDOUT_LISTS, JUDGED_SENTENCES
from lib.voices.scales import LONG_RUN_NOISE
from lib.voices.teacher_bundle import sentence_ids

# text only, so more of it: every list no notebook judges (67-72: smoke)
FRONTEND_LISTS = [*range(11, 31), *range(32, 67)]
HELDOUT_SENTENCES = 4  # held-out sentences (list 31) of the ledger's quality figures
HELDOUT_SET = "Harvard list 31 (held out)"  # what a pack's card says it was judged on
# scores only: no step or choice reads them
HELDOUT_JUDGES = ("dnsmos_p808", "dnsmos_sig", "dnsmos_ovrl", "distillmos", "wer")
# the development set: Factbook background sentences after the judged prose (no profile judges more than its first
# corpus_text.JUDGED_VARIED), which no corpus holds: a gate may look at them, no verdict does
DEV_SET = "Factbook backgrounds after the judged prose (development)"
_LOGGER = logging.getLogger(__name__)


def dev_sentences(n: int) -> list:
    """The development set's first `n` sentences (DEV_SET), ids vp_1001 on."""
    from lib.data import prose_text
    return prose_text.factbook_sentences(corpus_text.JUDGED_VARIED + n)[corpus_text.JUDGED_VARIED:]


def read_json(path: Path, default=None):
    """The JSON in `path` (`default` where it does not exist, if one is given); ArtefactError naming the file when it
    is unreadable or cut short."""
    path = Path(path)
    if default is not None and not path.exists():
        return default
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtefactError(f"{path} cannot be read ({type(exc).__name__}: {exc})") from None


def init_from(module, art_dir: Path) -> dict | None:
    """Start a generator from a committed artefact of the same shape, when there is one; returns its config."""
    if not (art_dir / "config.json").exists():
        return None
    try:
        loaded, config = load_part(art_dir)
    except ArtefactError as exc:
        _LOGGER.warning("not resuming from %s: %s", art_dir, exc)
        return None
    fold_weight_norm(module)  # artefacts hold folded weights; the resumed run trains them without weight norm
    missing, unexpected = module.load_state_dict(loaded.state_dict(), strict=False)
    grown = getattr(module, "GROWN", ())  # a part grown from a smaller pack: its new layers start as they were made
    if unexpected or any(not k.startswith(grown) for k in missing):
        raise ArtefactError(f"{art_dir} does not fit the part it starts: missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]}")
    if missing:
        _LOGGER.info("%s grown from %s: %s start fresh", type(module).__name__, art_dir, sorted({k.split(".")[0]
                                                                                                 for k in missing}))
    _LOGGER.info("generator initialised from %s (%s steps, %.2f h)", art_dir, config.get("steps", 0),
                 float(config.get("hours", 0.0)))
    return config


def corpus(teacher, corpus_limit: int = 0, noise_scale: float = 0.0, noise_w: float = 0.0, draws: int = 1):
    """The teacher's latents and audio on the training lists (`draws` samples of each sentence, with the sampling
    noise the voice speaks with at `noise_scale`/`noise_w`) and on the held-out list, drawn the same way."""
    sents = text.harvard_sentences(CORPUS_LISTS)[: corpus_limit or None]
    ids = sentence_ids(sents)
    parts = [batches.teacher_latents(teacher, ids, [f"{s.id}#{d}" for s in sents], noise_scale=noise_scale,
                                      noise_w=noise_w, seed=d) for d in range(draws)]
    latents = batches.Latents([i for p in parts for i in p.ids], [z for p in parts for z in p.z],
                               [w for p in parts for w in p.wav], parts[0].hop)
    return latents, heldout_corpus(teacher, noise_scale, noise_w)


def heldout_corpus(teacher, noise_scale: float = 0.0, noise_w: float = 0.0) -> batches.Latents:
    """The teacher's latents and audio on the held-out list's first sentences, one fixed draw: every run's held-out
    loss, whatever corpus it learns from."""
    held = text.harvard_sentences(HELDOUT_LISTS)[:HELDOUT_SENTENCES]
    return batches.teacher_latents(teacher, sentence_ids(held), [s.id for s in held], noise_scale=noise_scale,
                                   noise_w=noise_w, seed=1000)


def training_corpus(teacher, cfg) -> tuple:
    """(segments(batch, frames, rng) -> aligned (z, waveform), the held-out latents, the corpus's summary) of a run's
    options `cfg`: its --corpus streamed from disk (the first --corpus-hours of it), else Harvard lists 11-30 in
    memory at its noise and draws."""
    if not cfg.corpus:
        latents, heldout = corpus(teacher, cfg.corpus_limit, cfg.noise_scale, cfg.noise_w, cfg.draws)
        return (lambda b, f, r: batches.random_segments(latents, b, f, r), heldout,
                harvard_corpus_summary(latents, teacher.sample_rate))
    stream = CorpusStream(Path(cfg.corpus), cfg.corpus_hours)
    hop = piper_torch.hop_length(teacher)
    if stream.hop != hop:
        raise ArtefactError(f"{cfg.corpus}: its latents are {stream.hop} samples a frame, this teacher's {hop}")
    _LOGGER.info("corpus %s: %.2f h, %d sentences (hash %s)", cfg.corpus, stream.summary.hours,
                 stream.summary.sentences, stream.summary.hash[:12])
    return stream.random_segments, heldout_corpus(teacher, cfg.noise_scale, cfg.noise_w), stream.summary.as_dict()


def corpus_text_of(folder: Path) -> tuple[list, dict]:
    """(the sentences, what the run records of them) of a teacher corpus, for a student that learns from text alone
    (a front end): every sentence of the corpus's text, regenerated from its manifest's seed and options and checked
    against its text hash, whether or not the teacher has spoken it yet (so no corpus_hours: it learns no audio)."""
    manifest = read_manifest(folder)
    options = manifest["options"]
    written = corpus_text.corpus_sentences(manifest["seed"], options["templated"])[: options.get("limit") or None]
    if corpus_text.text_hash(written) != manifest["text_hash"]:
        raise ArtefactError(f"{folder}: its manifest's text hash is not this checkout's corpus text (seed "
                            f"{manifest['seed']}): the text families changed since it was written")
    return [c.sentence for c in written], {"corpus_sentences": len(written), "corpus_hash": manifest["text_hash"],
                                           "corpus_text_only": True}


def harvard_corpus_summary(latents: batches.Latents, sample_rate: int) -> dict:
    """What a run on the in-memory Harvard corpus records of it, in the teacher corpus's terms (corpus_hours, ...)."""
    seconds = sum(w.shape[-1] for w in latents.wav) / sample_rate
    return {"corpus_hours": round(seconds / 3600, 4), "corpus_sentences": len({i.split("#")[0] for i in latents.ids}),
            "corpus_hash": "harvard-lists-11-30", "corpus_shards": 0}


def accounted_hours(info: dict, before: dict, seconds: float, env: dict, device: str) -> tuple[float, float, str]:
    """A packed run's cumulative (machine-hours, device-hours, where it trained), from its run.json (`info`), its
    packed start (`before`) and the seconds trained since: a CPU run adds its wall time times its share of the
    machine's cores (threads / cores: a 1-thread run on 2 cores, half), a run on a GPU (run.json's device) adds its
    wall time as device-hours and no machine-hours; where it trained is the GPU's name, else the packing `device`."""
    on_gpu = info.get("device", "cpu") != "cpu"
    share = 0.0 if on_gpu else info.get("threads", 1) / max(1, info.get("cores", 1))
    hours = float(before.get("hours", 0.0)) + seconds / 3600 * share
    device_hours = float(before.get("device_hours", 0.0)) + (seconds / 3600 if on_gpu else 0.0)
    return hours, device_hours, info.get("gpu") or env.get("gpu") or device


def gpu_name(device: str) -> str | None:
    """The GPU a run on `device` trains on (run.json's `gpu`), None on a CPU."""
    return torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else None


def packed_count(config: dict) -> dict:
    """What a part started from packed files (their `config`) goes on counting: steps, machine-hours, device-hours,
    and its packed discriminators' steps (0 where it packed none)."""
    return {"steps": int(config.get("steps", 0)), "hours": float(config.get("hours", 0.0)),
            "device_hours": float(config.get("device_hours", 0.0)), "gpu": gpu_of_hours(config),
            "disc_steps": int(config.get("disc_steps", 0))}



def flow_heldout(teacher, info: dict, sentences: int = HELDOUT_SENTENCES):
    """The teacher flow's inputs and outputs (distill.FlowPairs) on the first `sentences` held-out sentences, one draw
    each at the run's corpus noise (`info`: noise_scale, noise_w)."""
    held = text.harvard_sentences(HELDOUT_LISTS)[:sentences]
    return distill.flow_pairs(teacher, sentence_ids(held),
                              noise_scale=info.get("noise_scale", 0.0), noise_w=info.get("noise_w", 0.0), draws=1,
                              seed=1000)


def frontend_heldout(teacher, fe, noise_scale: float | None = None,
                     sentences: int = HELDOUT_SENTENCES) -> tuple[list, list]:
    """frontend_audio on the first `sentences` of the held-out list: the ledger's PESQ and mel L1 of a front end."""
    return frontend_audio(teacher, fe, text.harvard_sentences(HELDOUT_LISTS)[:sentences], noise_scale)


def frontend_audio(teacher, fe, sentences, noise_scale: float | None = None, seed: int = 1000) -> tuple[list, list]:
    """The teacher's audio and the audio of its flow and decoder from the front-end student `fe`'s prior statistics,
    both laid on the teacher's own durations and sampled with the same noise (`noise_scale`, by default the voice's),
    for `sentences` (lib.core.text.Sentence): equal lengths, so PESQ and mel L1 judge the student's means and
    scales; its durations are judged apart (notebook 04's duration_mae_frames)."""
    t = teacher_targets(teacher, sentence_ids(sentences))
    noise_scale = voices.NOISE_SCALE if noise_scale is None else noise_scale
    refs, outs = [], []
    gen = torch.Generator().manual_seed(seed)
    for x, m_t, s_t, logw in zip(t.ids, t.m_p, t.logs_p, t.logw):
        w = torch.ceil(torch.exp(logw))  # [1, 1, T_x]: the teacher's frames per phoneme
        attn = commons.generate_path(w, torch.ones(1, 1, int(w.sum()), x.shape[1])).squeeze(1)  # [1, T_y, T_x]
        frames = lambda a: torch.matmul(attn, a.transpose(1, 2)).transpose(1, 2)  # per phoneme -> per frame
        y_mask, eps = torch.ones(1, 1, attn.shape[1]), torch.randn(1, m_t.shape[1], attn.shape[1], generator=gen)
        for (m_p, logs_p), dest in (((m_t, s_t), refs), (fe(x, torch.tensor([x.shape[1]]))[:2], outs)):
            z_p = frames(m_p) + eps * torch.exp(frames(logs_p)) * noise_scale
            dest.append(teacher.dec(teacher.flow(z_p, y_mask, g=None, reverse=True)))
    return refs, outs


def heldout_audio(teacher, part, info: dict, kind: str = "decoder", sentences: int = HELDOUT_SENTENCES,
                  held: list | None = None) -> tuple:
    """(sentence ids, the teacher's own audio, the part's audio) on the first `sentences` of the held-out list, which no
    training step and no checkpoint choice touched (whole utterances, the run's corpus noise): of a decoder `part` on
    the teacher's latents, or, for a flow (`kind` 'flow'), of the teacher's decoder on the latents `part` makes from
    the same prior sample; for a front end (`kind` 'frontend'), on the teacher's durations with one noise draw for
    both (frontend_heldout). `held`: other sentences in place of the held-out list's (a decoder's only)."""
    if held is not None and kind in ("frontend", "flow"):
        raise ValueError(f"held-out audio of a {kind} on other sentences: only a decoder's is made on them")
    held = text.harvard_sentences(HELDOUT_LISTS)[:sentences] if held is None else held
    part.eval()
    with torch.no_grad():
        if kind == "frontend":
            refs, outs = frontend_heldout(teacher, part, sentences=sentences)
        elif kind == "flow":
            pairs = flow_heldout(teacher, info, sentences)
            refs = [teacher.dec(z * m) for z, m in zip(pairs.z, pairs.mask)]
            outs = [teacher.dec(part(zp, m, g=None, reverse=True) * m) for zp, m in zip(pairs.z_p, pairs.mask)]
        else:
            lat = heldout_latents(teacher, info, sentences, held)[1]
            refs, outs = lat.wav, [part(z)[..., : ref.shape[-1]] for z, ref in zip(lat.z, lat.wav)]
    return [s.id for s in held], refs, outs


def heldout_latents(teacher, info: dict, sentences: int = JUDGED_SENTENCES, held: list | None = None) -> tuple:
    """(the first `sentences` held-out sentences, or `held`, the teacher's latents and audio of them at the run's
    corpus noise `info`, one fixed seed): what every held-out figure of a decoder reads."""
    held = text.harvard_sentences(HELDOUT_LISTS)[:sentences] if held is None else held
    with torch.no_grad():
        return held, batches.teacher_latents(teacher, sentence_ids(held), [s.id for s in held],
                                             noise_scale=info.get("noise_scale", 0.0),
                                             noise_w=info.get("noise_w", 0.0), seed=1000)


def heldout_quality(teacher, part, info: dict, kind: str = "decoder") -> dict:
    """PESQ-WB and mel L1 of the part's held-out audio against the teacher's own (heldout_audio)."""
    _, refs, outs = heldout_audio(teacher, part, info, kind)
    pesq = [metrics.pesq_wb(r.flatten().numpy(), o.flatten().numpy(), teacher.sample_rate) for r, o in zip(refs, outs)]
    mel = [float(mel_l1(o, r, teacher.sample_rate)) for r, o in zip(refs, outs)]
    return {"heldout_pesq": float(np.nanmean(pesq)), "heldout_mel_l1": float(np.mean(mel))}


def heldout_judged(teacher, part, info: dict, kind: str = "decoder", sentences: int = JUDGED_SENTENCES,
                   judges: tuple = HELDOUT_JUDGES, held: list | None = None) -> pd.DataFrame:
    """Each of `judges` (of HELDOUT_JUDGES) on the part's held-out audio and on the teacher's own, per sentence (id,
    metric, value, teacher): what the ledger's quality-against-hours comparison pairs. The judges score packed
    checkpoints only; no training step and no checkpoint choice reads them. `held`: other sentences (a decoder's)."""
    ids, refs, outs = heldout_audio(teacher, part, info, kind, sentences, held)
    words = {s.id: s.text for s in (text.harvard_sentences(HELDOUT_LISTS) if held is None else held)}
    score = _scorer(tuple(judges), teacher.sample_rate)
    rows = []
    for sid, r, o in zip(ids, refs, outs):
        mine, theirs = score(o.flatten().numpy(), words[sid]), score(r.flatten().numpy(), words[sid])
        rows += [{"id": sid, "metric": m, "value": mine[m], "teacher": theirs[m]} for m in judges]
    return pd.DataFrame(rows, columns=["id", "metric", "value", "teacher"])


@functools.lru_cache(maxsize=4)
def _judge_models(mos: bool, wer: bool) -> tuple:
    """DNSMOS, Distill-MOS and Whisper base as asked, loaded once per process (judge-packs judges many packs)."""
    return (metrics.Dnsmos(threads=1) if mos else None, metrics.DistillMos(threads=1) if mos else None,
            metrics.WhisperAsr(threads=1) if wer else None)


_SCORED: dict[tuple, dict] = {}  # (audio hash, words, judges) -> scores: the teacher's clips, alike in every pack


def _scorer(judges: tuple, sample_rate: int):
    """score(audio, its words) -> {judge: value} for `judges`, on the float samples (not a 16-bit file: DNSMOS SIG
    and Distill-MOS move by up to 0.02 and 0.07 between the two, so every pack is judged as the first ones were),
    loading only the judges asked for, once per process, and scoring the same audio once."""
    unknown = set(judges) - set(HELDOUT_JUDGES)
    if unknown:
        raise ValueError(f"held-out judges {sorted(unknown)}: use {HELDOUT_JUDGES}")
    dnsmos, distill_mos, asr = _judge_models(any(m != "wer" for m in judges), "wer" in judges)

    def score(audio: np.ndarray, words: str) -> dict:
        key = (metrics.audio_hash(audio, sample_rate), words, judges)
        if key not in _SCORED:
            out = {**(dnsmos(audio, sample_rate) if dnsmos else {}),
                   **(distill_mos(audio, sample_rate) if distill_mos else {})}
            if asr is not None:
                out["wer"] = metrics.wer_cer(words, asr.transcribe(audio, sample_rate))["wer"]
            _SCORED[key] = out
        return _SCORED[key]
    return score


def dev_judged(packs: dict, sentences: int, judges: tuple = HELDOUT_JUDGES,
               noise: dict = LONG_RUN_NOISE) -> pd.DataFrame:
    """Per decoder pack (name -> folder), development sentence and judge: its score and the teacher's own audio's
    (heldout_judged on dev_sentences), on the teacher's latents at the corpus noise the decoders trained at."""
    from lib.voices import teacher_bundle  # deferred: it loads the voice package
    teacher, held, frames = teacher_bundle.teacher(), dev_sentences(sentences), []
    for name, pack in packs.items():
        module, config = load_part(pack)
        frames.append(heldout_judged(teacher, module, noise, config["kind"], judges=judges, held=held).assign(
            decoder=name, steps=int(config.get("steps", 0))))
        _LOGGER.info("judged %s on %d development sentences", name, len(held))
    return pd.concat(frames, ignore_index=True)


def paired_changes(scores: pd.DataFrame, start: str) -> pd.DataFrame:
    """Per decoder of dev_judged's `scores` other than `start`, and judge: the mean paired change against `start`
    and against the teacher with 95 % bootstrap intervals and n (WER's sign turned: above 0 is better for every
    judge)."""
    from lib.core.bounds import judge
    base = scores[scores["decoder"] == start].set_index(["id", "metric"])["value"]
    rows = []
    for (name, metric), c in scores[scores["decoder"] != start].groupby(["decoder", "metric"], sort=False):
        sign = -1.0 if metric == "wer" else 1.0
        c = c.set_index("id")
        row = {"decoder": name, "metric": metric, "steps": int(c["steps"].iloc[0])}
        for against, ref in (("start", base.xs(metric, level="metric").reindex(c.index)), ("teacher", c["teacher"])):
            j = judge(sign * (c["value"] - ref).to_numpy(float), 0.0, True)
            row.update({f"vs_{against}": j["mean"], f"vs_{against}_lo": j["lo"], f"vs_{against}_hi": j["hi"],
                        "n": j["n"]})
        rows.append(row)
    return pd.DataFrame(rows)
