"""The queries notebook 05 speaks on every engine, CPU and GPU: Harvard lists as single-stream and offline queries,
sentences of one length as streaming ones, each as the voice's phoneme ids. The GPU run reads them from a file its
bundle carries (`tts-lab train bundle --queries PROFILE`, read by lib.jobs.device_run)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lib.core import params, text
from lib.core.results import atomic_write_json
from lib.core.text import Sentence
from lib.voices import synth as voices

NOTEBOOK = "05_hardware_benchmark"  # whose parameters build the lists


@dataclass
class QuerySet:
    """The sentences every engine speaks: `sentences` for single stream and offline batches, `ttfa_sentences` (all
    of `ttfa_words` words) for streaming, and each as the voice's phoneme ids (its first piece)."""
    sentences: list[Sentence]
    ttfa_sentences: list[Sentence]
    queries: list[list[int]]
    ttfa_queries: list[list[int]]

    def as_json(self) -> dict:
        """What `lib.jobs.device_run --queries` reads: {"queries": [[ids], ...], "ttfa_queries": [[ids], ...]}."""
        return {"queries": [[int(i) for i in q] for q in self.queries],
                "ttfa_queries": [[int(i) for i in q] for q in self.ttfa_queries]}


def query_set(frontend, eval_lists: Sequence[int], ttfa_words: int, ttfa_limit: int = 0) -> QuerySet:
    """The Harvard lists `eval_lists` as single-stream queries; every Harvard sentence of exactly `ttfa_words` words
    (the first `ttfa_limit`, 0: all) as streaming queries; ValueError when no sentence has that many words."""
    sentences = text.harvard_sentences(eval_lists)
    ttfa = [s for s in text.harvard_sentences() if len(s.text.split()) == ttfa_words][: ttfa_limit or None]
    if not ttfa:
        raise ValueError(f"ttfa_words={ttfa_words}: no Harvard sentence has that many words")
    return QuerySet(sentences, ttfa, frontend.sentence_ids(sentences), frontend.sentence_ids(ttfa))


def profile_queries(profile: str = "default") -> QuerySet:
    """The query set notebook 05 builds on `profile` (its parameters resolved as the notebook's run would)."""
    p = params.resolved(profile, NOTEBOOK)
    return query_set(voices.PiperFrontend(voices.piper_paths()[1]), p["eval_lists"], p["ttfa_words"], p["ttfa_limit"])




def write_queries(out: Path, profile: str) -> QuerySet:
    """`profile_queries(profile)` as the JSON file the GPU run reads; returns the set."""
    qs = profile_queries(profile)
    atomic_write_json(Path(out), qs.as_json())
    return qs
