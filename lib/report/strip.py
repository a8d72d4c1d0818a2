"""The report's A/B listening strip: per technique its baseline and its best variant (the adapted voice beside its
target speaker too) on the same two judged sentences, each clip with what the ASR judge heard under it."""
from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from lib.report.answers import TECHNIQUES, clip_table
from lib.report.media import clip_data_url

CSS = """<style>
.ab-strip{border-collapse:collapse;width:100%;table-layout:fixed}
.ab-strip td,.ab-strip th{border-top:1px solid #ddd;padding:4px 6px;vertical-align:top!important;\
text-align:left!important;
  overflow-wrap:break-word;white-space:normal!important;font-size:12px}
.ab-strip audio{width:100%;height:28px}
.ab-strip .heard{color:#555;font-style:italic}
</style>"""


def clip_path(root: Path, notebook: str, variant: str, sentence: str) -> Path | None:
    """The recorded clip of `variant` speaking `sentence` (audio/<variant>__<backend>/<id>.wav), if any."""
    found = sorted((root / notebook / "audio").glob(f"{variant}__*/{sentence}.wav"))
    return found[0] if found else None


def shared_sentences(root: Path, notebook: str, variants: list[str], clips: pd.DataFrame, n: int = 2) -> list[str]:
    """The first `n` sentences that every one of `variants` spoke, was judged on and has a clip of."""
    judged = [set(clips.loc[clips["variant"] == v, "id"]) for v in variants]
    ids = sorted(set.intersection(*judged)) if judged else []
    return [i for i in ids if all(clip_path(root, notebook, v, i) for v in variants)][:n]


def _cell(root: Path, notebook: str, variant: str, sentence: str, clips: pd.DataFrame) -> str:
    heard = (clips.loc[(clips["variant"] == variant) & (clips["id"] == sentence), "asr_hyp"] if "asr_hyp" in clips
             else [])
    if not len(heard):
        said = ""
    elif pd.isna(heard.iloc[0]) or not str(heard.iloc[0]).strip():  # judged, and the ASR heard no word
        said = "<div class='heard'>heard: nothing</div>"
    else:
        said = f"<div class='heard'>heard: “{html.escape(str(heard.iloc[0]))}”</div>"
    src = clip_data_url(clip_path(root, notebook, variant, sentence))
    return f"<td><b>{html.escape(variant)}</b><audio controls preload='metadata' src='{src}'></audio>{said}</td>"


def strip(root: Path, every: dict[str, pd.DataFrame], sentences: int = 2) -> str:
    """The strip as one HTML table: a row per technique and sentence, the baseline first, then its best variant,
    then (adaptation) the target speaker; the sentence's text heads the row."""
    rows = []
    for tech in TECHNIQUES:
        best = every.get(tech.name)
        if best is None or best.empty:
            continue
        voices = [tech.baseline, best["variant"].iloc[0]] + ([tech.beside] if tech.beside else [])
        clips = clip_table(root, tech.notebook)
        voices = [v for v in voices if v in set(clips["variant"])]
        shared = shared_sentences(root, tech.notebook, voices, clips, sentences)
        if not shared:  # said, not left out: a technique whose notebook kept no clips of both voices
            rows.append(f"<tr><th>{tech.name}</th><td colspan='4'>no clips of {html.escape(tech.baseline)} and "
                        f"{html.escape(str(best['variant'].iloc[0]))} on one sentence in notebook {tech.notebook[:2]} "
                        "(its quality figures are in the answers table above)</td></tr>")
        for k, sid in enumerate(shared):
            text = clips.loc[clips["id"] == sid, "text"].dropna()
            said = html.escape(str(text.iloc[0])) if len(text) else sid
            head = f"<th>{tech.name if k == 0 else ''}</th><td>“{said}”</td>"
            rows.append("<tr>" + head + "".join(_cell(root, tech.notebook, v, sid, clips) for v in voices) + "</tr>")
    if not rows:
        return ""
    cols = "<colgroup><col style='width:9%'><col style='width:19%'><col><col><col></colgroup>"
    head = "<tr><th>technique</th><th>sentence</th><th>baseline</th><th>best variant</th><th>target speaker</th></tr>"
    return CSS + f"<table class='ab-strip'>{cols}{head}{''.join(rows)}</table>"
