"""The judges as the harness runs them: which judges score a clip set (`Judges`), a pool of judge processes kept
for the whole run, a cache of scores by audio hash, and speaker similarity to a target speaker."""
from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from lib.core import quiet, worktime
from lib.core.audio import Audio, read_wav, write_wav
from lib.harness import metrics
from lib.voices.hub import HfWhisperAsr


class JudgeCache:
    """Scores keyed by (audio hash, judge): a variant whose audio equals its parent's is never judged twice."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path else None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(self.path) as db:
                db.execute("CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> dict | None:
        if not self.path:
            return None
        with sqlite3.connect(self.path) as db:
            row = db.execute("SELECT value FROM scores WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        if self.path:
            with sqlite3.connect(self.path) as db:
                db.execute("INSERT OR REPLACE INTO scores VALUES (?, ?)", (key, json.dumps(value)))


def make_asr(name: str, threads: int = 1):
    """The ASR judge by name (the harness picks models; metrics only knows how to score them)."""
    if name in ("whisper-base", "whisper"):
        return metrics.WhisperAsr("base", threads=threads)
    if name == "pocketsphinx":
        return metrics.PocketsphinxAsr()
    if name.startswith("whisper:"):
        return metrics.WhisperAsr(name.split(":", 1)[1], threads=threads)
    if name.startswith("hf:"):
        return HfWhisperAsr(name.split(":", 1)[1], threads=threads)
    raise ValueError(f"unknown ASR {name!r}: use 'whisper-base', 'pocketsphinx', 'whisper:<faster-whisper model>' "
                     "or 'hf:<transformers Whisper id or folder>'")


_WORKER: dict = {}
_POOLS: dict[tuple, ProcessPoolExecutor] = {}
_IN_FLIGHT: dict = {}  # cache key -> the Future judging that audio now


def _judge_pool(asr: str | None, dnsmos: bool, workers: int) -> ProcessPoolExecutor:
    """Judge processes kept for the whole run, one pool per judge set: loading Whisper and DNSMOS takes seconds and a
    notebook judges dozens of clip sets. A pool whose worker died is replaced."""
    key = (asr, dnsmos, workers)
    pool = _POOLS.get(key)
    if pool is None or getattr(pool, "_broken", False):
        # spawned, not forked: a fork of a process whose torch threads are running can crash in torch (Distill-MOS
        # segfaulted so in a forked worker of the test suite)
        pool = _POOLS[key] = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(asr, dnsmos),
                                                 mp_context=multiprocessing.get_context("spawn"))
    return pool


@atexit.register
def close_judges() -> None:
    """Stop the judge processes (also at exit)."""
    for pool in _POOLS.values():
        pool.shutdown(cancel_futures=True)
    _POOLS.clear()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this judge process once `parent` is gone. A notebook kernel killed at shutdown (papermill kills one that
    has not exited within seconds) never stops its pool, and its idle workers would live on, holding the run's output
    pipe open: `run_all.sh` returned but the test that waits on its output hung (seen on a loaded Zen 4)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(0)


def _init_worker(asr_name: str | None, use_dnsmos: bool):
    quiet.silence_known()
    if multiprocessing.parent_process() is not None:  # a pool's worker: an interrupt (a notebook kernel's shutdown)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # is its parent's to handle, which stops the pool
        # the pid spawn recorded, not getppid(): a parent gone before this initializer ran (a kernel killed while its
        # workers still imported) left getppid() at 1, and a worker watching for 1 to change waited for ever
        threading.Thread(target=_exit_with_parent, args=(multiprocessing.parent_process().pid,),
                         name="exit-with-parent", daemon=True).start()
    _WORKER["key"] = (asr_name, use_dnsmos, os.getpid())
    _WORKER["asr"] = make_asr(asr_name, threads=1) if asr_name else None
    _WORKER["dnsmos"] = metrics.Dnsmos(threads=1) if use_dnsmos else None
    _WORKER["distillmos"] = _distillmos() if use_dnsmos else None


def _distillmos():
    """The second no-reference judge, or None where distillmos is not installed (its rows are then missing)."""
    try:
        return metrics.DistillMos(threads=1)
    except ImportError:
        return None


def _judge_one(job: tuple[str, str]) -> dict:
    wav, reference_text = job
    audio, sr = read_wav(Path(wav))
    return _scores(audio, sr)


def _scores(audio: np.ndarray, sr: int) -> dict:
    """Every loaded judge's scores of one clip (the ASR's transcript as `asr_hyp`)."""
    out: dict = {}
    if _WORKER.get("dnsmos") is not None:
        out.update(_WORKER["dnsmos"](audio, sr))
    if _WORKER.get("distillmos") is not None:
        out.update(_WORKER["distillmos"](audio, sr))
    if _WORKER.get("asr") is not None:
        out["asr_hyp"] = _WORKER["asr"].transcribe(audio, sr)
    return out


def judge_seconds(clip: Audio, asr: str | None, dnsmos: bool = True, repeats: int = 3) -> float:
    """Median seconds one process takes to judge `clip` with every judge over `repeats` calls, their loading and a
    warm-up call not counted: what an estimate of judging scales by (the judges' cost does not follow a voice's RTF;
    one call alone wanders with this kind of VM's speed from second to second)."""
    import warnings
    with warnings.catch_warnings():  # a judge process's filters stay out of the caller's
        _init_worker(asr, dnsmos)
        try:
            _scores(clip.samples, clip.sample_rate)  # warm-up: the first call builds the sessions' kernels
            took = []
            for _ in range(max(repeats, 1)):
                start = time.perf_counter()
                _scores(clip.samples, clip.sample_rate)
                took.append(time.perf_counter() - start)
            return float(np.median(took))
        finally:
            _WORKER.clear()  # the judges' models leave the caller's memory


@dataclass
class Judges:
    """Which judges score a clip set, and how many worker processes share the work (one thread each)."""
    asr: str | None = "whisper-base"
    dnsmos: bool = True
    workers: int = 2
    cache_path: Path | None = None

    def key(self) -> str:
        # both MOS judges run together; Whisper's decoding is part of the key (scores of its sampling fallback differ)
        return (f"asr={self.asr};whisper_temperature={metrics.WHISPER_TEMPERATURE:g},"
                f"no_repeat={metrics.RUNAWAY_NO_REPEAT};dnsmos={self.dnsmos};distillmos={self.dnsmos}")


class PendingJudgement:
    """Clips handed to the judge processes: the caller goes on (synthesising the next variant, reference metrics)
    while they judge, and `result()` waits for the scores. Cached clips and one-process judging are done at once."""

    def __init__(self, clips: dict[str, Audio], texts: dict[str, str], judges: Judges, tmp_dir: Path,
                 progress: str | None = None):
        from tqdm.auto import tqdm
        self.ids, self.texts, self.progress = list(clips), texts, progress
        self._cache = JudgeCache(judges.cache_path)
        self._rows, self._todo, self._futures = {}, [], []
        for cid, a in clips.items():
            key = f"{metrics.audio_hash(a.samples, a.sample_rate)}:{judges.key()}"
            hit = self._cache.get(key)
            if hit is not None:
                self._rows[cid] = hit
            else:
                wav = Path(tmp_dir) / f"{cid}.wav"
                if not wav.exists():
                    write_wav(wav, a.samples, a.sample_rate)
                self._todo.append((cid, key, str(wav)))
        jobs = [(w, texts[c]) for c, _, w in self._todo]
        if jobs and judges.workers <= 1:
            if _WORKER.get("key") != (judges.asr, judges.dnsmos, os.getpid()):  # load once per process
                _init_worker(judges.asr, judges.dnsmos)
            with worktime.spent(worktime.JUDGE):
                self._store([_judge_one(j) for j in tqdm(jobs, desc=progress, disable=progress is None, leave=False)])
        elif jobs:
            pool = _judge_pool(judges.asr, judges.dnsmos, judges.workers)
            for (_, key, _), job in zip(self._todo, jobs):  # a clip already in flight (same audio) is judged once
                live = _IN_FLIGHT.get(key)
                if live is None or live.cancelled() or (live.done() and live.exception() is not None):
                    live = _IN_FLIGHT[key] = pool.submit(_judge_one, job)
                self._futures.append(live)

    def _store(self, results: list[dict]) -> None:
        for (cid, key, _), res in zip(self._todo, results):
            self._cache.put(key, res)
            self._rows[cid] = res
            _IN_FLIGHT.pop(key, None)
        self._todo = []

    def result(self) -> pd.DataFrame:
        """Per-clip DNSMOS and ASR transcript with WER/CER, once every clip is judged."""
        from tqdm.auto import tqdm
        if self._futures:
            futures, self._futures = self._futures, []
            with worktime.spent(worktime.JUDGE):  # the wait: what the judges took beyond the caller's own work
                self._store([f.result() for f in tqdm(futures, desc=self.progress, disable=self.progress is None,
                                                      leave=False)])
        df = pd.DataFrame([{"id": cid, **self._rows[cid]} for cid in self.ids])
        if "asr_hyp" in df:
            scores = [metrics.wer_cer(self.texts[c], h) for c, h in zip(df["id"], df["asr_hyp"].fillna(""))]
            df["wer"] = [s["wer"] for s in scores]
            df["cer"] = [s["cer"] for s in scores]
        return df


def judge(clips: dict[str, Audio], texts: dict[str, str], judges: Judges, tmp_dir: Path,
          progress: str | None = None) -> pd.DataFrame:
    """Per-clip DNSMOS and ASR transcript with WER/CER, in `judges.workers` processes, cached by audio hash."""
    return PendingJudgement(clips, texts, judges, tmp_dir, progress).result()


def speaker_similarity(voices: dict[str, Sequence[Audio]], target: Sequence[Audio],
                       threads: int = 1) -> tuple[dict[str, float], float]:
    """SECS of each voice's clips to `target`, clips of the target speaker saying the same held-out sentences in the
    same order; only pairs of different sentences count, so that shared words do not count as a shared voice.
    Returns ({voice: SECS}, the target's own self-similarity across its sentences: the ceiling)."""
    per_clip, ceiling = speaker_similarity_per_clip(voices, target, threads)
    return {name: float(v.mean()) for name, v in per_clip.items()}, float(ceiling.mean())


def speaker_similarity_per_clip(voices: dict[str, Sequence[Audio]], target: Sequence[Audio],
                                threads: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """`speaker_similarity` sentence by sentence: each voice's SECS per clip (in the target's order) and the target's
    self-similarity per clip, whose means are the SECS and the ceiling."""
    if len(target) < 2:
        raise ValueError("speaker similarity needs at least 2 target clips (self-similarity is across sentences)")
    bad = [n for n, c in voices.items() if len(c) != len(target)]
    if bad:
        raise ValueError(f"voices {bad} have another number of clips than the target ({len(target)}): give the same "
                         "sentences in the same order")
    with worktime.spent(worktime.JUDGE):
        enc = metrics.SpeakerEncoder(threads=threads)
        ref = [enc(a.samples, a.sample_rate) for a in target]
        out = {name: metrics.secs_per_output([enc(a.samples, a.sample_rate) for a in clips], ref,
                                             exclude_same_index=True) for name, clips in voices.items()}
        return out, metrics.secs_per_output(ref, ref, exclude_same_index=True)


def worker_count(requested: int) -> int:
    """Judge processes: as requested, never more than the CPUs this process may use."""
    return max(1, min(int(requested),
                      len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
