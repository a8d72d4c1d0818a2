"""Notebook 02's lines on where an adapted voice's words go, each from a recorded study that trains nothing or from
diagnostic runs: the distance to the speaker, memorisation, the timing and the part that loses them, and the arms
judged in one run. Built from result frames only."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib.core.bounds import ADAPTATION_WER_MARGIN


def adaptation_distance_lines(near: pd.DataFrame, target: pd.DataFrame, n,
                              wer_margin: float = ADAPTATION_WER_MARGIN) -> list[str]:
    """Whether the distance to the speaker is what the words are lost to (studies.adaptation.DISTANCE against the
    target's run of the same recipe): each run's validation WER beyond its own speaker's. Nothing is said where
    either run is missing."""
    if near.empty or target.empty:
        return []
    a, b = near.iloc[0], target.iloc[0]
    ea, eb = a["validation_wer"] - a["folder_own_wer"], b["validation_wer"] - b["folder_own_wer"]
    said = (f"the same recipe and budget ({n(a['steps'], ',d')} steps against {n(b['steps'], ',d')}) on {a['folder']}: "
            f"validation WER {n(a['validation_wer'])} against that speaker's own {n(a['folder_own_wer'])} (+{n(ea)}), "
            f"where the target loses +{n(eb)} ({n(b['validation_wer'])} against {n(b['folder_own_wer'])})")
    if ea <= wer_margin:
        return [f"Is it the distance to the speaker? Yes: {said}. Near the teacher's voice the recipe keeps the words "
                "within the bound; what it cannot bridge is how far this speaker is from the teacher."]
    if ea < eb / 2:
        return [f"Is it the distance to the speaker? In part: {said}. Near the teacher's voice the recipe loses "
                "fewer words, but still more than the bound allows."]
    return [f"Is it the distance to the speaker? Not mainly: {said}. At the teacher's pitch the recipe still loses "
            "words beyond the bound."]


def adaptation_word_gap_lines(gap: pd.DataFrame, n, slack: float = ADAPTATION_WER_MARGIN) -> list[str]:
    """Whether the long runs' lost words are memorisation (studies.adaptation.word_gap, noise off): each checkpoint's
    WER beyond the speaker's own on sentences it trained on against held-out ones. Memorisation keeps the trained
    sentences' words; an excess on them within `slack` of the held-out one, or above it, says it is not."""
    quiet = gap[gap["noise_scale"] == 0] if len(gap) else gap
    if quiet.empty or set(quiet["split"]) != {"trained on", "held out"}:
        return []
    rows = quiet.pivot_table(index=["work", "steps"], columns="split", values=["wer", "speaker_wer", "excess"])
    said = "; ".join(f"{w} at {n(s, ',d')} steps: {n(r[('wer', 'trained on')])} on sentences it trained on (the "
                     f"speaker's own {n(r[('speaker_wer', 'trained on')])}), {n(r[('wer', 'held out')])} on held-out "
                     f"ones (the speaker's own {n(r[('speaker_wer', 'held out')])})" for (w, s), r in rows.iterrows())
    kept = rows[("excess", "trained on")] < rows[("excess", "held out")] - slack
    if kept.any():
        return [f"Are the words lost to memorisation? WER, {said}: where the trained sentences keep their words "
                "and the held-out ones lose them, more of the speaker is the cure."]
    return [f"Are the words lost to memorisation? No. WER, {said}. The runs lose as many words beyond the speaker's "
            "own on the very sentences they trained on as on held-out ones: the recipe cannot speak this speaker's "
            "words at all, and more recordings of the same speaker would not cure it (outputs/recorded/"
            "amd-epyc-zen4-2c/48_adaptation_wer_gap)."]


def adaptation_parts_lines(parts: pd.DataFrame, n, slack: float = ADAPTATION_WER_MARGIN) -> list[str]:
    """Where the long runs lose their words (studies.adaptation.parts, both splits pooled per run): at the timing
    they trained on against their duration predictor's (better by more than `slack`: the timing is part of the
    fault), and which part, the flow or the decoder, swapped into the teacher, keeps the timbre (share of the SECS
    gain over the teacher) and the lost words (share of the WER rise). Nothing is said without a study."""
    need = {("adapted", "predictor"), ("adapted", "recorded"), ("teacher", "predictor")}
    if parts.empty or not need <= set(zip(parts["voice"], parts["timing"])):
        return []
    flow, dec = ("adapted flow + teacher decoder", "predictor"), ("teacher flow + adapted decoder", "predictor")
    m = parts.groupby(["run", "steps", "voice", "timing"])[["wer", "secs"]].mean()
    timing, where, decoder_holds, flows = [], [], [], []
    for (run, steps), r in m.groupby(level=[0, 1]):
        r = r.droplevel([0, 1])
        a, ar, t = r.loc[("adapted", "predictor")], r.loc[("adapted", "recorded")], r.loc[("teacher", "predictor")]
        timing.append((ar["wer"] < a["wer"] - slack, f"{run} at {n(steps, ',d')} steps: WER {n(ar['wer'])} at its "
                       f"recordings' own durations against {n(a['wer'])} at its predictor's"))
        if flow not in r.index or dec not in r.index or a["secs"] <= t["secs"] or a["wer"] <= t["wer"]:
            continue
        share = {(v, k): (r.loc[v, k] - t[k]) / (a[k] - t[k]) for v in (flow, dec) for k in ("secs", "wer")}
        decoder_holds.append(share[dec, "secs"] >= 0.75 and share[dec, "wer"] >= 0.5)
        flows.append((share[flow, "secs"], share[flow, "wer"]))
        where.append(f"{run}: the adapted decoder on the teacher's flow keeps {n(100 * share[dec, 'secs'], '.0f')} % "
                     f"of the SECS gain ({n(r.loc[dec, 'secs'])}; adapted {n(a['secs'])}, the teacher {n(t['secs'])}) "
                     f"and {n(100 * share[dec, 'wer'], '.0f')} % of the WER rise ({n(r.loc[dec, 'wer'])}; adapted "
                     f"{n(a['wer'])}, the teacher {n(t['wer'])}); the adapted flow under the teacher's decoder "
                     f"{n(100 * share[flow, 'secs'], '.0f')} % and {n(100 * share[flow, 'wer'], '.0f')} %")
    helped = any(better for better, _ in timing)
    lines = [f"Is it the timing? {'In part' if helped else 'No'}: {'; '.join(s for _, s in timing)} (sentences it "
             "trained on and held out, noise off)." + ("" if helped else " Spoken at the very timing it trained on, "
             "the adapted voice loses the words all the same: a duration predictor trained with the acoustic part "
             "would not bring them back.")]
    if where:
        said = ("in every run the decoder holds most of the timbre and most of the lost words" if all(decoder_holds)
                else "the timbre and the lost words are not both the decoder's in every run")
        pct = lambda v: n(100 * v, ".0f")
        (s_lo, w_lo), (s_hi, w_hi) = np.min(flows, axis=0), np.max(flows, axis=0)
        said += (f"; the adapted flows alone bring {pct(s_lo)}-{pct(s_hi)} % of the timbre and cost {pct(w_lo)}-"
                 f"{pct(w_hi)} % of the lost words")
        lines.append("Which part loses them? Each adapted part swapped into the teacher: " + "; ".join(where)
                     + f": {said} (outputs/recorded/amd-epyc-zen4-2c/51_adaptation_parts).")
    return lines


def adaptation_arms_lines(gap: pd.DataFrame, what: dict, n, wer_margin: float = ADAPTATION_WER_MARGIN) -> list[str]:
    """The arms judged in one run (studies.adaptation.word_gap of notebook 02's `arms_gap`, noise off, held-out
    recordings): each run's WER against the bound (the speaker's own + `wer_margin`) and its SECS, named by what it
    changed (`what`: run -> words). Nothing is said without a study."""
    held = gap[(gap["split"] == "held out") & (gap["noise_scale"] == 0)] if len(gap) else gap
    if held.empty:
        return []
    bound = float(held["speaker_wer"].iloc[0]) + wer_margin
    said = "; ".join(f"{what.get(r['work'], r['work'])} ({r['work']}, {n(r['steps'], ',d')} steps): WER "
                     f"{n(r['wer'])}, SECS {n(r['secs'])}" for _, r in held.iterrows())
    kept = held[held["wer"] <= bound]
    verdict = ("none keeps the words within the bound" if kept.empty else
               "within the bound: " + ", ".join(kept["work"]))
    return [f"The arms, judged alike (one judge, noise off) on the held-out recordings (the bound: the speaker's own "
            f"WER {n(bound - wer_margin)} + {n(wer_margin)}): {said}. {verdict[0].upper() + verdict[1:]}."]
