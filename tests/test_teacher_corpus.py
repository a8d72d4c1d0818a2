"""The teacher corpus (issue 49): its text holds no judged sentence (checked against the committed manifest), a
tiny corpus is written resumably and streamed back aligned, and a prefix of it is a corpus of fewer hours."""
import functools
import json
from pathlib import Path

import numpy as np
import pytest

from lib.core import text
from lib.data import corpus_shards, corpus_text

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "outputs" / "recorded" / "corpus").glob("*/manifest.json"))
# the committed manifests share their seed and options: the corpus text (10,000 sentences, about 9 s) made once
_corpus_sentences = functools.lru_cache(maxsize=2)(corpus_text.corpus_sentences)


@pytest.fixture(scope="module")
def sentences():
    return corpus_text.corpus_sentences(49)


def test_corpus_text_is_many_distinct_sentences_of_every_family(sentences):
    assert len(sentences) >= 10_000
    assert len({text.normalize_for_wer(c.sentence.text) for c in sentences}) == len(sentences)
    assert {c.family for c in sentences} == set(corpus_text.Family)
    assert all(f.licence for f in corpus_text.Family)
    first = {c.family for c in sentences[:200]}
    assert first == set(corpus_text.Family), "a prefix (a corpus of fewer hours) mixes every family"


def test_corpus_text_holds_no_judged_sentence(sentences):
    judged = corpus_text.judged_sentences()
    assert {s.id for s in judged} & {c.sentence.id for c in sentences} == set()
    words = {text.normalize_for_wer(s.text) for s in judged}
    assert not [c.sentence.id for c in sentences if text.normalize_for_wer(c.sentence.text) in words]
    harvard = {c.sentence.id[:3] for c in sentences if c.family is corpus_text.Family.HARVARD}
    assert not harvard & {f"h{li:02d}" for li in [*range(1, 11), 31]}


@pytest.mark.skipif(not MANIFESTS, reason="no teacher corpus manifest committed")
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.parent.name)
def test_committed_manifest_is_this_text_and_holds_out_the_judged_sets(path):
    manifest = corpus_shards.read_manifest(path)
    options = manifest["options"]
    written = _corpus_sentences(manifest["seed"], options["templated"])[: options["limit"] or None]
    assert corpus_text.text_hash(written) == manifest["text_hash"], "the manifest's text is regenerated exactly"
    used = written[: manifest["sentences"]]
    assert sum(f["sentences"] for f in manifest["families"]) == manifest["sentences"] == len(used)
    judged = {text.normalize_for_wer(s.text) for s in corpus_text.judged_sentences()}
    assert not [c.sentence.id for c in used if text.normalize_for_wer(c.sentence.text) in judged]
    assert manifest["hash"] == corpus_shards.summarize(manifest, manifest["shards"]).hash
    assert manifest["hours"] == pytest.approx(sum(s["seconds"] for s in manifest["shards"]) / 3600, abs=1e-3)
    assert not any("/" in str(v) for v in options.values()), "no local path in a committed manifest"


def test_tiny_corpus_is_written_resumably_and_streams_aligned(tmp_path):
    import torch
    from safetensors import safe_open
    from lib.jobs import corpus_job
    from lib.voices.teacher_bundle import teacher as load_teacher
    cfg = corpus_job.CorpusRun(out=str(tmp_path / "c"), limit=5, shard_items=2, templated=10,
                               manifest_out=str(tmp_path / "committed" / "manifest.json"))
    path = corpus_job.write(cfg)
    manifest = json.loads(path.read_text())
    assert manifest["complete"] and manifest["sentences"] == 5 and len(manifest["shards"]) == 3
    assert json.loads((tmp_path / "committed" / "manifest.json").read_text())["hash"] == manifest["hash"]
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("*.safetensors")}
    assert json.loads(corpus_job.write(cfg).read_text())["hash"] == manifest["hash"]
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("*.safetensors")} == mtimes, "nothing respoken"

    with safe_open(str(tmp_path / "c" / manifest["shards"][0]["file"]), framework="pt") as f:
        durations, frames = f.get_tensor("durations"), f.get_tensor("frame_offsets")
        assert int(durations.sum()) == int(frames[-1]), "durations add up to the latent frames"
        assert f.get_tensor("latents").dtype == torch.float16 and f.get_tensor("audio").dtype == torch.float16
        sampling = f.get_tensor("sampling")
    assert not torch.equal(sampling[0], sampling[1]), "each item draws its own sampling"

    stream = corpus_shards.CorpusStream(tmp_path / "c")
    assert len(stream) == 5 and stream.summary.hash == manifest["hash"]
    z, y = stream.item(0)
    teacher = load_teacher()
    with torch.no_grad():
        decoded = teacher.dec(z)[..., : y.shape[-1]]
    assert float((decoded - y).abs().max()) < 0.02, "the audio is the teacher's decoder on the stored latents"
    zb, yb = stream.random_segments(3, 16, np.random.default_rng(0))
    assert zb.shape == (3, z.shape[1], 16) and yb.shape == (3, 1, 16 * manifest["hop"])

    short = corpus_shards.CorpusStream(tmp_path / "c", hours=1e-4)
    assert short.summary.shards == 1 and short.summary.hash != manifest["hash"]
    with pytest.raises(corpus_shards.CorpusShardError, match="fewer than the 5 h"):
        corpus_shards.CorpusStream(tmp_path / "c", hours=5)


def test_a_missing_manifest_is_named(tmp_path):
    with pytest.raises(corpus_shards.CorpusShardError, match="manifest.json.*tts-lab corpus"):
        corpus_shards.read_manifest(tmp_path)


def test_a_bundle_speaks_the_corpus_where_no_voice_is_installed_and_seconds_bound_the_run(tmp_path, monkeypatch):
    """A lent GPU machine has no voice package: a teacher bundle holding the corpus text's phoneme ids and the voice's
    sampling defaults speaks the same sentences (the manifest names the voice the bundle rounds), and --seconds stops
    claiming shards once spent, leaving a prefix that a later run completes."""
    from lib.jobs import corpus_job
    from lib.voices import synth as voices, teacher_bundle
    first = [c.sentence for c in corpus_text.corpus_sentences(49, 10)[:5]]
    teacher_bundle.write_bundle(tmp_path / "bundle", first)
    on_cpu = json.loads(corpus_job.write(corpus_job.CorpusRun(out=str(tmp_path / "cpu"), limit=5, shard_items=2,
                                                              templated=10)).read_text())
    monkeypatch.setenv(teacher_bundle.BUNDLE_ENV, str(tmp_path / "bundle"))
    monkeypatch.setenv(voices.VOICE_ENV, str(tmp_path / "no-voice-here.onnx"))  # any lookup of the voice file fails
    cfg = corpus_job.CorpusRun(out=str(tmp_path / "c"), limit=5, shard_items=2, templated=10, seconds=1e-9)
    spent = json.loads(corpus_job.write(cfg).read_text())
    assert spent["sentences"] == 0 and not spent["complete"]
    cfg.seconds = 0.0
    manifest = json.loads(corpus_job.write(cfg).read_text())
    assert manifest["complete"] and manifest["sentences"] == 5 and manifest["text_hash"] == on_cpu["text_hash"]
    assert manifest["voice"] == on_cpu["voice"] and "float16" in manifest["teacher"]
    assert manifest["sampling"] == on_cpu["sampling"] and "seconds" not in manifest["options"]
