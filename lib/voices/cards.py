"""Model cards for what the lab ships (packs of trained parts), as huggingface_hub writes them: valid Hub metadata
(a real `base_model`, its relation, `pipeline_tag`, `language`, `eval_results` as model-index), no local paths, and
the artefact's misses of its quality bounds in its first lines."""
from __future__ import annotations

import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from lib.core import bounds
from lib.core.bounds import MAX_DNSMOS_DROP

BASE_MODEL = "rhasspy/piper-voices"  # the Hub repository every piper voice ships in; the voice is named in the card
CODE_LICENSE = "MIT"  # the lab's own licence: the code that made an artefact, not the artefact's
VOICE_CARD = "MODEL_CARD"  # the card piper's voices ship beside their .onnx, which states their licence
# licences as piper's voice cards state them -> the Hub's identifiers (anything else: "other", stated in the text)
HUB_LICENSES = {"cc0": "cc0-1.0", "cc0-1.0": "cc0-1.0", "mit": "mit", "apache-2.0": "apache-2.0",
                "cc-by-4.0": "cc-by-4.0", "cc by 4.0": "cc-by-4.0", "cc-by-sa-4.0": "cc-by-sa-4.0",
                "cc by-sa 4.0": "cc-by-sa-4.0", "cc-by-nc-4.0": "cc-by-nc-4.0"}
DNSMOS_BOUND = -MAX_DNSMOS_DROP  # the study's quality bound on DNSMOS P.808 against the teacher, as a difference


def piper_name(voice_file: Path, variant: str) -> str:
    """A variant as piper names voices, `<lang>-<name>-<quality>`: its name joined to the voice's name
    (en_US-joe-medium + ort-qdq-int8-flow -> en_US-joe_ort_qdq_int8_flow-medium)."""
    stem = Path(voice_file).name.removesuffix(".onnx")
    slug = re.sub(r"[^a-z0-9]+", "_", variant.lower().removesuffix("-ort")).strip("_")
    lang, _, rest = stem.partition("-")
    name, _, quality = rest.rpartition("-")
    return f"{lang}-{name}_{slug}-{quality}" if name and quality else f"{stem}_{slug}"


def voice_licence(voice_onnx: Path) -> str:
    """The licence the voice's own card (VOICE_CARD beside it) states, as '<its section>: <licence>' per licence line
    ('Dataset: CC0' for piper's en_US-joe-medium); '' where the voice has no card or it states none."""
    card = Path(voice_onnx).with_name(VOICE_CARD)
    if not card.is_file():
        return ""
    section, said = "", []
    for line in card.read_text(errors="replace").splitlines():
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif (m := re.match(r"\W*licen[cs]e\s*:\s*(.+)", line, flags=re.I)):
            said.append(f"{section}: {m.group(1).strip()}" if section else m.group(1).strip())
    return "; ".join(said)


def hub_licence(teacher: dict) -> str:
    """The Hub licence identifier of an artefact of the voice `teacher` (its identity, with the licence its card
    states): the first licence the card states for the voice itself that the Hub knows, else 'other', the card's
    text then saying what is known (piper's cards often state only their dataset's licence, which is not the
    voice's)."""
    stated = [x.rpartition(":")[2].strip().lower() for x in str(teacher.get("licence") or "").split(";")
              if not x.strip().lower().startswith("dataset")]
    return next((HUB_LICENSES[x] for x in stated if x in HUB_LICENSES), "other")


def licence_line(teacher: dict) -> str:
    """The card's licence line: what the base voice's own card states, and the lab's licence for the code."""
    voice, stated = teacher.get("voice", "the base voice"), teacher.get("licence")
    said = (f"the base voice `{voice}`'s own card states {stated}" if stated
            else f"the base voice `{voice}` came with no card stating a licence: check its own before you share this"
            if "licence" in teacher else f"the base voice's licence was not recorded here: see `{voice}`'s own card")
    return f"- **licence**: {said}; the lab's code that made it is {CODE_LICENSE}"


def language_of(voice: str) -> str:
    """The ISO 639-1 language of a piper voice file name (`en_US-joe-medium.onnx` -> 'en')."""
    return Path(voice).name.split("_")[0].split("-")[0].lower() or "en"


def misses(deltas: dict[str, float], bounds: dict[str, float], against: str = "the teacher") -> list[str]:
    """One sentence per bound the artefact misses: {metric: its mean difference to `against`} against {metric: the
    lowest difference allowed}."""
    return [f"It misses its quality bound on {m}: {deltas[m]:+.3f} against {against} (bound {b:+.2f})."
            for m, b in bounds.items() if m in deltas and deltas[m] < b]


def pack_card(*, name: str, kind: str, recipe: str, teacher: dict, steps: int, hours: float, device_hours: float,
              trained_on: str, corpus: dict, heldout: dict[str, float], deltas: dict[str, float],
              dataset: str) -> ModelCard:
    """The card of a packed part: what it replaces in which voice, how long and on what it trained, its held-out
    figures as eval_results, and first of all any quality bound it misses."""
    voice = teacher.get("voice", "unknown voice")
    results = [EvalResult(task_type="text-to-speech", dataset_type="harvard-sentences", dataset_name=dataset,
                          metric_type=metric, metric_value=round(float(value), 4))
               for metric, value in {**heldout, **{f"{m}_minus_teacher": v for m, v in deltas.items()}}.items()]
    data = ModelCardData(base_model=BASE_MODEL, base_model_relation="finetune", pipeline_tag="text-to-speech",
                         language=[language_of(voice)], license=hub_licence(teacher), library_name="safetensors",
                         tags=["piper", "vits", "distillation", kind], model_name=name, eval_results=results or None)
    missed = misses(deltas, {"dnsmos_p808": DNSMOS_BOUND})
    verdict = (" ".join(missed) or "Within its quality bound on DNSMOS P.808 against the teacher." if deltas
               else "Not judged on held-out sentences yet: its quality bounds are unknown.")
    digest = str(corpus.get("corpus_hash", ""))
    corpus_line = (f"{corpus.get('corpus_hours', 'unknown')} hours of the teacher's speech, "
                   f"{corpus.get('corpus_sentences', 'unknown')} sentences "
                   f"({digest[:12] if len(digest) == 64 else digest or 'no hash recorded'})")
    text = f"""---
{data.to_yaml()}
---
# {name}

{verdict}

This part ({kind}) stands in for its counterpart in the piper voice `{voice}` \
(sha256 `{teacher.get('sha256', '')[:16]}...`,
from `{BASE_MODEL}`); it loads only into that voice (`lib.voices.artefacts.load_part`).

- **recipe**: {recipe}
- **trained**: {steps:,} steps, {hours:.2f} machine-hours, {device_hours:.2f} device-hours, on {trained_on}
- **learned from**: {corpus_line}
- **judged on**: {dataset}, which no training step or checkpoint choice touched
{licence_line(teacher)}

Load it with `lib.voices.artefacts.load_part(folder, teacher)`, or make it a piper voice with
`tts-lab voice export --pack <folder> --out <dir>`.
"""
    return ModelCard(text)


WER_MARGIN = bounds.ADAPTATION_WER_MARGIN  # an adapted voice's WER bound: the speaker's own WER plus this


def adapter_card(*, method: str, kind: str, voice: str, trains: str, frozen: str, trainable_params: int,
                 data: str, objective: str, steps, hours, device: str, judged: dict,
                 teacher: dict | None = None) -> ModelCard:
    """The card of an adaptation (a PEFT adapter or a fully fine-tuned voice) of a piper voice: its validation
    figures as eval_results, and first of all whether its WER misses the speaker's own + WER_MARGIN."""
    adapter = kind == "peft_adapter"
    dataset = "the speaker's validation recordings (no training step saw them)"
    results = [EvalResult(task_type="text-to-speech", dataset_type="speaker-recordings", dataset_name=dataset,
                          metric_type=m, metric_value=round(float(v), 4)) for m, v in judged.items()]
    data_card = ModelCardData(base_model=BASE_MODEL, base_model_relation="adapter" if adapter else "finetune",
                              pipeline_tag="text-to-speech", language=[language_of(voice)],
                              license=hub_licence(teacher or {}),
                              library_name="peft" if adapter else "safetensors", model_name=f"{voice} {method}",
                              tags=["piper", "vits", "speaker-adaptation", method], eval_results=results or None)
    if {"heldout_wer", "speaker_wer"} <= set(judged):
        wer = {"wer": judged["speaker_wer"] - judged["heldout_wer"]}
        verdict = " ".join(misses(wer, {"wer": -WER_MARGIN}, "the speaker's own recordings")) or (
            f"Its WER is within the speaker's own + {WER_MARGIN:.2f} on the validation recordings.")
    else:
        verdict = "Not judged on the speaker's validation recordings yet: its quality bounds are unknown."
    text = f"""---
{data_card.to_yaml()}
---
# {method} adaptation of the piper voice `{voice}`

{verdict}

- **method**: {method}: trains {trains}; frozen: {frozen}
- **trainable parameters**: {trainable_params:,}
- **data**: {data}
- **objective**: {objective}
- **steps**: {steps}, **machine-hours**: {hours}, trained on {device}
{licence_line(teacher or {"voice": voice})}

The base is `{voice}` from `{BASE_MODEL}`. Load it with `lib.load_adapted_voice(teacher, folder)` (an adapter merged
through PEFT, with `lib.techniques.lora_conv`'s layers registered), or make it a piper voice with
`tts-lab voice export --pack <folder> --out <dir>`.
"""
    return ModelCard(text)


def voice_card(*, name: str, variant: str, technique: str, relation: str, teacher: dict, row: dict, objective: str,
               cpu: str, asr: str, bounds: dict) -> ModelCard:
    """The card of a voice `tts-lab voice optimize` shipped: how much faster and smaller than the voice it was made
    from on the machine that measured it, and its quality deltas (per-sentence means with their intervals) as
    eval_results. Its bounds were decided where `row` says (`decided_on`: the confirmation set, or the screen), on
    the sentences its judgements count (`<bound>_n`)."""
    voice = teacher.get("voice", "unknown voice")
    sentences = int(row.get("wer_rise_n") or row.get("dnsmos_drop_n") or 0)
    where = ("the confirmation set: Harvard sentences the screen did not judge, and real prose where given"
             if row.get("decided_on") == "confirmation" else "the screen's Harvard sentences")
    dataset = f"Harvard sentences, lists 1-6 ({sentences} on {where}; no training step saw them)"
    figures = {"rtf_ratio": row.get("rtf_ratio"), "size_ratio": row.get("size_ratio"),
               "dnsmos_p808_drop": row.get("dnsmos_drop_mean"), "wer_increase": row.get("wer_rise_mean")}
    results = [EvalResult(task_type="text-to-speech", dataset_type="harvard-sentences", dataset_name=dataset,
                          metric_type=m, metric_value=round(float(v), 4)) for m, v in figures.items()
               if v is not None and v == v]
    data = ModelCardData(base_model=BASE_MODEL, base_model_relation=relation, pipeline_tag="text-to-speech",
                         language=[language_of(voice)], license=hub_licence(teacher), library_name="onnx",
                         tags=["piper", "vits", "onnx", re.sub(r"[^a-z0-9]+", "-", technique.lower()).strip("-")],
                         model_name=name, eval_results=results or None)

    def judged(stem: str, bound: float) -> str:
        return (f"{row.get(f'{stem}_mean', float('nan')):+.3f} [{row.get(f'{stem}_lo', float('nan')):+.3f}, "
                f"{row.get(f'{stem}_hi', float('nan')):+.3f}] (bound {bound:.2f}, n = {row.get(f'{stem}_n', 0)})")
    speed = row.get("rtf_ratio", float("nan"))
    text = f"""---
{data.to_yaml()}
---
# {name}

Within its quality bounds against `{voice}`: on each bound the 95 % interval of the mean per-sentence difference
(WER pooled over words) over n = {sentences} sentences of {where} lies inside it.

- **DNSMOS P.808 drop**: {judged('dnsmos_drop', bounds['max_dnsmos_drop'])}
- **WER increase**: {judged('wer_rise', bounds['max_wer_increase'])}, ASR {asr}
- **made by**: {technique} (`{variant}`), the {objective} candidate within the bounds
- **speed**: RTF {speed:.3f} of the voice's, ONNX Runtime, timed interleaved with it on {cpu}; another machine's
  ratio may differ
- **size**: {row.get('size_ratio', float('nan')):.3f} of the voice's file
- **from**: `{voice}` (sha256 `{teacher.get('sha256', '')[:16]}...`) of `{BASE_MODEL}`
{licence_line(teacher)}

Speak it with piper's runtime: `piper -m {name}.onnx -f out.wav`. Made with `tts-lab voice optimize`;
`results.csv` and `candidates.csv` beside it hold every candidate's figures.
"""
    return ModelCard(text)


def export_card(*, name: str, teacher: dict, packs: list[dict], spoke: dict) -> ModelCard:
    """The card of a voice `tts-lab voice export` wrote from packs: which voice it comes from, each pack's part, run,
    training and held-out figures as its own card gave them, and piper's runtime speaking it once. Export measures
    nothing: the figures are the packs'; notebook 04 and `tts-lab voice optimize` judge the whole voice."""
    voice = teacher.get("voice", "unknown voice")
    adapted = any(p.get("kind") in ("peft_adapter", "adapted_voice") for p in packs)
    data = ModelCardData(base_model=BASE_MODEL, base_model_relation="finetune", pipeline_tag="text-to-speech",
                         language=[language_of(voice)],
                         license=hub_licence(teacher), library_name="onnx", model_name=name,
                         tags=["piper", "vits", "onnx", "speaker-adaptation" if adapted else "distillation"])
    lines = []
    for p in packs:
        judged = ", ".join(f"{k} {v:g}" for k, v in sorted((p.get("judged") or p.get("heldout") or {}).items())
                           if isinstance(v, (int, float)))
        lines.append(f"- `{p['pack']}`: {p.get('kind', 'unknown kind')}, {p.get('steps', '?')} steps, "
                     f"{float(p.get('hours') or 0):.2f} machine-hours" + (f"; held out: {judged}" if judged else ""))
    packs_text = "\n".join(lines)
    text = f"""---
{data.to_yaml()}
---
# {name}

The piper voice `{voice}` (sha256 `{teacher.get('sha256', '')[:16]}...`, from `{BASE_MODEL}`) with these packs in
place of its parts (each pack's own card has its recipe and bounds):

{packs_text}

Piper's runtime spoke it once when it was written ({spoke.get('samples', 0):,} samples at
{spoke.get('sample_rate', 0):,} Hz). Nothing else was measured here: notebook 04 and `tts-lab voice optimize` judge
whole voices against their bounds.

{licence_line(teacher)}

Speak it with `piper -m {name}.onnx -f out.wav`. Made with `tts-lab voice export`.
"""
    return ModelCard(text)


def posterior_card(info: dict) -> ModelCard:
    """The card of a posterior-encoder pack (a training-only part: piper's posterior encoder bootstrapped on the
    teacher's own audio, for the posterior path of speaker adaptation and MAS durations): its voice, budget and
    round trip on the held-out list as eval_results."""
    teacher = info.get("teacher") or {}
    voice = teacher.get("voice", "unknown voice")
    lists = ", ".join(str(x) for x in info.get("heldout_lists", [])) or "unknown"
    dataset = f"Harvard list {lists} spoken by the teacher (held out)"
    figures = {"round_trip_mel_l1": info.get("round_trip_mel_l1"), "zeros_mel_l1": info.get("zeros_mel_l1")}
    results = [EvalResult(task_type="text-to-speech", dataset_type="harvard-sentences", dataset_name=dataset,
                          metric_type=m, metric_value=float(v)) for m, v in figures.items() if v is not None]
    data = ModelCardData(base_model=BASE_MODEL, base_model_relation="finetune", pipeline_tag="text-to-speech",
                         language=[language_of(voice)], license=hub_licence(teacher), library_name="safetensors",
                         tags=["piper", "vits", "posterior-encoder"], model_name=f"{voice} posterior encoder",
                         eval_results=results or None)
    text = f"""---
{data.to_yaml()}
---
# The posterior encoder of the piper voice `{voice}`

piper's voices ship without the posterior encoder their training used; this one is bootstrapped on the teacher's
own audio and latents, so that speaker adaptation can take piper's posterior path and MAS can align recordings. It
is a training-only part: no voice speaks through it, and it loads only for `{voice}` (sha256
`{teacher.get('sha256', '')[:16]}...`; `lib.training.posterior.load`).

- **trained**: {info.get('steps', 'unknown')} steps, {info.get('hours', 'unknown')} machine-hours, on \
{info.get('device', 'cpu')}
- **round trip** on {dataset}: the teacher's audio through it and the teacher's decoder, mel L1
  {info.get('round_trip_mel_l1', 'unknown')} (the decoder fed zeros: {info.get('zeros_mel_l1', 'unknown')})
{licence_line(teacher)}
"""
    return ModelCard(text)
