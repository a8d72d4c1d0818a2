import numpy as np
import pytest

from lib.core import text
from lib.data import corpus


def test_synthesize_and_read_back(tmp_path, ort_voice):
    sents = text.harvard_sentences([3])[:2]
    root = corpus.synthesize_corpus(ort_voice, sents, tmp_path / "c", progress=False)
    recs = list(corpus.read_ljspeech(root))
    assert [r.id for r in recs] == [s.id for s in sents]
    assert recs[0].text == sents[0].text and recs[0].sample_rate == 22050 and len(recs[0].audio) > 22050
    first = (root / "wavs" / f"{sents[0].id}.wav").stat().st_mtime_ns
    corpus.synthesize_corpus(ort_voice, sents, root, progress=False)
    assert (root / "wavs" / f"{sents[0].id}.wav").stat().st_mtime_ns == first, "resume must not redo existing clips"


def _tiny_corpus(root, n=2):
    recs = [corpus.Record(f"x{i}", f"sentence {i}", np.sin(np.arange(8000) * 0.05 * (i + 1)).astype(np.float32) * 0.3,
                          16000, speaker=str(100 + i % 2)) for i in range(n)]
    return corpus.export_ljspeech(recs, root)


def test_corrupt_wav_is_named(tmp_path):
    root = _tiny_corpus(tmp_path / "c")
    (root / "wavs" / "x1.wav").write_bytes(b"RIFF....garbage")
    with pytest.raises(corpus.CorpusError, match="x1.wav"):
        list(corpus.read_ljspeech(root))


def test_bad_metadata_and_missing_files(tmp_path):
    with pytest.raises(corpus.CorpusError, match="no metadata.csv"):
        list(corpus.read_ljspeech(tmp_path))
    root = _tiny_corpus(tmp_path / "c")
    (root / "metadata.csv").write_text("x0|ok\nlonely-field\n")
    with pytest.raises(corpus.CorpusError, match=r"metadata.csv:2"):
        list(corpus.read_ljspeech(root))
    (root / "metadata.csv").write_text("x9|missing clip\n")
    with pytest.raises(corpus.CorpusError, match="x9.wav is missing"):
        list(corpus.read_ljspeech(root))


def _save_hf(tmp_path, layout):
    """A tiny dataset in the hub datasets' column layout, saved as local parquet files for `load_dataset`."""
    import io

    import soundfile as sf
    from datasets import Audio, Dataset
    rows = {"id": [], "audio": []}
    text_col = {"ljspeech": "normalized_text", "libritts": "text_normalized"}[layout]
    rows[text_col] = []
    if layout == "libritts":
        rows["speaker_id"] = []
    for i in range(4):
        buf = io.BytesIO()
        sf.write(buf, (np.sin(np.arange(4000) * 0.03 * (i + 1)) * 0.2).astype(np.float32), 16000, format="WAV")
        rows["id"].append(f"u{i}")
        rows["audio"].append({"bytes": buf.getvalue(), "path": f"u{i}.wav"})
        rows[text_col].append(f"utterance number {i}")
        if layout == "libritts":
            rows["speaker_id"].append(str(19 + i % 2))
    ds = Dataset.from_dict(rows).cast_column("audio", Audio(decode=False))
    d = tmp_path / layout / "data"
    d.mkdir(parents=True)
    ds.to_parquet(str(d / "train-00000.parquet"))
    return tmp_path / layout


@pytest.mark.parametrize("layout", ["ljspeech", "libritts"])
def test_hf_loader_on_local_dataset(tmp_path, layout):
    root = _save_hf(tmp_path, layout)
    recs = list(corpus.load_hf_corpus(str(root), layout=layout, split="train"))
    assert [r.id for r in recs] == ["u0", "u1", "u2", "u3"]
    assert recs[2].text == "utterance number 2" and recs[2].sample_rate == 16000 and len(recs[2].audio) == 4000
    if layout == "libritts":
        one = list(corpus.load_hf_corpus(str(root), layout=layout, speaker="20"))
        assert [r.id for r in one] == ["u1", "u3"] and {r.speaker for r in one} == {"20"}
    out = corpus.export_ljspeech(recs, tmp_path / "lj")
    assert [r.id for r in corpus.read_ljspeech(out)] == [r.id for r in recs]
    with pytest.raises(ValueError, match="unknown layout"):
        list(corpus.load_hf_corpus(str(root), layout="vctk"))


def test_hf_loader_names_missing_columns(tmp_path):
    root = _save_hf(tmp_path, "ljspeech")
    with pytest.raises(corpus.CorpusError, match="lacks columns.*text_normalized"):
        list(corpus.load_hf_corpus(str(root), layout="libritts"))
