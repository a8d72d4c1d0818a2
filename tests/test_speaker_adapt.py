"""Adaptation to a speaker's own recordings: an LJSpeech folder read (bad folders named with file and line), the
posterior encoder bootstrapped, each kind of method trained with piper's objective, packed with a ledger row,
loaded back and exported as one .onnx that piper's runtime speaks."""
import copy
import json

import librosa
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from lib.core import text
from lib.core.audio import resample, write_wav
from lib.core.params import ROOT
from lib.data import ljspeech
from lib.jobs import export_pack, speaker_job, speaker_judge
from lib.techniques import speaker_adapt
from lib.training import ledger, posterior
from lib.voices.artefacts import ArtefactError
from lib.training import vits_objective as vo
from lib.training.loop import Recipe
from lib.voices import piper_torch
from lib.voices import synth as voices


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


def _folder(tmp, n=2, sr=16000):
    """A tiny LJSpeech folder of `n` made-up clips at `sr`."""
    rng = np.random.default_rng(0)
    items = [(f"clip{i}", f"Sentence number {i}.", 0.1 * rng.standard_normal(sr), sr) for i in range(n)]
    return ljspeech.write_folder(tmp / "speaker", items)


def test_folder_reads_and_resamples(tmp_path):
    folder = _folder(tmp_path, sr=16000)
    recs = ljspeech.read_folder(folder, 22050)
    assert [r.id for r in recs] == ["clip0", "clip1"] and recs[0].text == "Sentence number 0."
    assert recs[0].sample_rate == 22050 and abs(recs[0].samples.size - 22050) < 30


@pytest.mark.parametrize("damage, named", [
    (lambda f: (f / "metadata.csv").unlink(), "metadata.csv is missing"),
    (lambda f: (f / "metadata.csv").write_text("clip0|One.\n\nclip1|Two.\n"), "metadata.csv line 2: the line is empty"),
    (lambda f: (f / "metadata.csv").write_text("clip0|One.\nclip1\n"), "metadata.csv line 2: expected 'id|text'"),
    (lambda f: (f / "metadata.csv").write_text("clip0|One.\nclip0|Two.\n"), "line 2: id 'clip0' repeats line 1"),
    (lambda f: (f / "wavs" / "clip1.wav").unlink(), "clip1.wav (metadata.csv line 2): the recording is missing"),
    (lambda f: (f / "wavs" / "clip1.wav").write_bytes(b"not a wav at all"),
     "clip1.wav (metadata.csv line 2): cannot read"),
    (lambda f: write_wav(f / "wavs" / "clip0.wav", np.zeros(800, np.float32), 16000),
     "clip0.wav (metadata.csv line 1): 0.05 s is too short"),
])
def test_bad_folder_names_file_and_line(tmp_path, damage, named):
    folder = _folder(tmp_path)
    damage(folder)
    with pytest.raises(ljspeech.DatasetError, match=named.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        ljspeech.read_folder(folder, 22050)


@pytest.mark.parametrize("damage, named", [
    (lambda f: write_wav(f / "wavs" / "clip1.wav", np.full(16000, 1e-5, np.float32), 16000),
     "clip1.wav (metadata.csv line 2): the recording is silent"),
    (lambda f: (f / "metadata.csv").write_text("clip0|One.\nclip1|... !\n"),
     "line 2: the transcript of 'clip1' cannot be spoken"),
])
def test_a_silent_clip_or_an_unspeakable_transcript_is_named(tmp_path, damage, named):
    """Issue 50: both were accepted, and trained on."""
    folder = _folder(tmp_path)
    damage(folder)
    with pytest.raises(ljspeech.DatasetError, match=named.replace("(", r"\(").replace(")", r"\)")):
        ljspeech.read_folder(folder, 22050)


@pytest.mark.parametrize("bom, encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le")])
def test_a_metadata_file_with_a_byte_order_mark_is_read_as_it_marks(tmp_path, bom, encoding):
    """Issue 50: a BOM (as Windows editors save) made the first id 'clip0' with an invisible prefix: 'missing'."""
    folder = _folder(tmp_path)
    (folder / "metadata.csv").write_bytes(bom + "clip0|Sentence number 0.\nclip1|Sentence one.\n".encode(encoding))
    assert [r.id for r in ljspeech.read_folder(folder, 22050)] == ["clip0", "clip1"]


def test_silence_is_trimmed_and_loudness_matched(tmp_path):
    sr, rng = 16000, np.random.default_rng(1)
    quiet = np.concatenate([np.zeros(sr), 0.01 * rng.standard_normal(sr), np.zeros(sr // 2)]).astype(np.float32)
    loud = (0.5 * rng.standard_normal(sr)).clip(-1, 1).astype(np.float32)
    folder = ljspeech.write_folder(tmp_path / "s", [("a", "One clip.", quiet, sr), ("b", "Another clip.", loud, sr)])
    a, b = ljspeech.read_folder(folder, sr)
    assert 1.0 <= a.seconds <= 1.2, "a second of sound, its 1.5 s of silence trimmed to the margins"
    rms = [float(np.sqrt(np.mean(r.samples.astype(np.float64) ** 2))) for r in (a, b)]
    assert rms[0] == pytest.approx(rms[1], rel=0.05) and max(abs(b.samples)) <= 0.95


def test_split_keeps_the_last_recordings_apart(tmp_path):
    recs = ljspeech.read_folder(_folder(tmp_path, n=3), 22050)
    train, val = ljspeech.split(recs, 1)
    assert [r.id for r in train] == ["clip0", "clip1"] and [r.id for r in val] == ["clip2"]
    with pytest.raises(ljspeech.DatasetError, match="needs more than 3 recordings"):
        ljspeech.split(recs, 3)
    # the data arm: the first clips train, the validation split stays the folder's last recordings
    assert [[r.id for r in part] for part in ljspeech.split(recs, 1, clips=1)] == [["clip0"], ["clip2"]]
    with pytest.raises(ljspeech.DatasetError, match="clips 3: the folder has 2 training recordings"):
        ljspeech.split(recs, 1, clips=3)


def test_mas_finds_a_planted_alignment():
    """piper's maximum_path through the supplied core: frames scored high on a planted monotonic alignment (text
    token k for frames 3k..3k+2) come back as that alignment, one token per frame."""
    vo.supply_mas_core()
    from piper.train.vits import monotonic_align
    frames, tokens = 12, 4
    planted = torch.zeros(1, frames, tokens)
    planted[0, torch.arange(frames), torch.arange(frames) // 3] = 1
    neg_cent = torch.randn(1, frames, tokens) * 0.1 + 5 * planted
    path = monotonic_align.maximum_path(neg_cent, torch.ones(1, frames, tokens))
    assert torch.equal(path, planted)


def test_method_names_render_and_parse():
    assert speaker_adapt.Method.parse("lora-r8") == speaker_adapt.Method("lora", 8)
    assert speaker_adapt.Method("qlora", 4).name == "qlora-r4" and speaker_adapt.Method("full").name == "full"
    with pytest.raises(ValueError, match="full takes no rank"):
        speaker_adapt.Method("full", 8)


@pytest.fixture(scope="module")
def fitted(teacher, tmp_path_factory):
    """The posterior encoder after 30 bootstrap steps on two of the teacher's sentences, its pairs and curve."""
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids(text.harvard_sentences([67])[:2])
    pairs = posterior.Pairs.of_teacher(teacher, ids)
    enc_q, curve = posterior.bootstrap(teacher.hparams, pairs, Recipe(steps=30, lr=1e-3, adversarial=False, log_every=1,
                                                                      checkpoint_every=30),
                                       tmp_path_factory.mktemp("posterior"), batch=2, threads=2, progress=None)
    return ids, pairs, enc_q, curve


def test_posterior_learns_the_teachers_latents(teacher, fitted, tmp_path):
    """The bootstrap lowers the latents' NLL, the round trip decodes the teacher's audio closer than a decoder fed
    zeros, and the pack loads back, refusing another architecture."""
    _, pairs, enc_q, curve = fitted
    assert curve.loss[-1] < curve.loss[0] - 0.2
    check = posterior.round_trip(enc_q, teacher.dec, pairs, teacher.sample_rate)
    assert check["mel_l1"] < check["mel_l1_silence"]
    from lib.voices.artefacts import ArtefactError, voice_identity
    posterior.save(enc_q, tmp_path / "pack", teacher.hparams, {"steps": 30, "teacher": voice_identity(teacher),
                                                               "round_trip_mel_l1": check["mel_l1"]})
    again = posterior.load(tmp_path / "pack", teacher.hparams, teacher)
    # issue 69 item 1: the pack names its voice, has a card, and another voice of the same shape refuses it
    from huggingface_hub import ModelCard
    card = ModelCard.load(tmp_path / "pack" / "README.md")
    assert card.data.eval_results[0].metric_type == "round_trip_mel_l1" and "en_US-joe-medium.onnx" in card.text
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(teacher, "voice_identity", {"voice": "en_GB-alba-medium.onnx", "sha256": "0" * 64}, raising=False)
        with pytest.raises(ArtefactError, match="en_US-joe-medium.onnx.*en_GB-alba-medium.onnx"):
            posterior.load(tmp_path / "pack", teacher.hparams, teacher)
    spec, lengths, _ = pairs.batch([0])
    torch.testing.assert_close(again(spec, lengths)[1], enc_q(spec, lengths)[1], atol=5e-3, rtol=0)  # stored in float16
    (tmp_path / "pack" / "config.json").write_text('{"kind": "posterior_encoder", "hparams": {"inter_channels": 7}}')
    with pytest.raises(ValueError, match="fitted for another voice architecture"):
        posterior.load(tmp_path / "pack", teacher.hparams)


def test_pitch_shifted_pairs_keep_their_latents_and_move_the_pitch(teacher, fitted):
    """Each shift adds every recording a few semitones up beside the same latent, its length kept."""
    _, pairs, _, _ = fitted
    shifted = pairs.with_pitch_shifts([4], teacher.sample_rate)
    assert len(shifted.spec) == 2 * len(pairs.spec) and shifted.latents.z[2] is pairs.latents.z[0]
    assert shifted.spec[2].shape == pairs.spec[0].shape
    f0 = [np.nanmedian(librosa.pyin(w.reshape(-1).numpy(), fmin=60, fmax=500, sr=teacher.sample_rate)[0])
          for w in (pairs.latents.wav[0], shifted.latents.wav[2])]
    assert 2 ** (3 / 12) < f0[1] / f0[0] < 2 ** (5 / 12)


def test_mas_aligns_the_teachers_own_audio_and_not_another_sentences(teacher):
    """Through the committed posterior pack, MAS's durations follow the teacher's for its own audio of a sentence,
    and far less for the audio of another sentence laid on the same text (the check notebook 02 shows)."""
    enc_q = posterior.load(ROOT / "outputs/recorded/training/posterior/joe-medium", teacher.hparams)
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids(text.harvard_sentences([66])[:3])
    wav = [w.reshape(-1) for w in posterior.Pairs.of_teacher(teacher, ids).latents.wav]
    own = posterior.alignment_agreement(teacher, enc_q, vo.build(["a", "b", "c"], ids, wav, 256, 22050))
    other = posterior.alignment_agreement(teacher, enc_q, vo.build(["a", "b", "c"], ids, wav[1:] + wav[:1], 256, 22050))
    assert np.mean(own) > 0.5 and np.mean(own) > np.mean(other) + 0.2


def test_piper_objective_gives_kl_duration_and_aligned_segments(teacher, fitted):
    """piper's own forward runs with the supplied MAS core: the segment it decodes and the recording's segment
    have one length, KL and duration terms are finite, and the alignment gives every frame one phoneme."""
    ids, pairs, enc_q, _ = fitted
    data = vo.build(["a", "b"], ids, [w.reshape(-1).numpy() for w in pairs.latents.wav], pairs.latents.hop, 22050)
    prepared = speaker_adapt.prepare(teacher, speaker_adapt.Method("full"), enc_q, path="posterior")
    y_hat, y, terms = vo.vits_forward(prepared.path, vo.batch_of(data, [0, 1]))
    assert y_hat.shape == y.shape == (2, 1, 32 * data.hop)
    assert set(terms) == {"loss_kl", "loss_dur"} and all(torch.isfinite(t) for _, t in terms.values())
    attn = prepared.path(*vo.batch_of(data, [0, 1])[:4])[2]
    frames = data.spec[0].shape[-1]
    assert torch.equal(attn[0, 0, :frames].sum(-1), torch.ones(frames))
    lora = speaker_adapt.prepare(teacher, speaker_adapt.Method("lora", 4), enc_q, path="posterior")
    assert set(vo.vits_forward(lora.path, vo.batch_of(data, [0, 1]))[2]) == {"loss_kl"}  # durations frozen: no term


@pytest.mark.parametrize("method,train_posterior", [("full", True), ("full-acoustic", True), ("full-decoder", True),
                                                     ("full-prior", True), ("lora-r4", True), ("lora-decoder-r4", True),
                                                     ("lora-r4", False), ("lora-attention-r4", True),
                                                     ("qlora-r4", False)])
def test_each_method_trains_what_its_table_says(teacher, method, train_posterior):
    """Full fine-tuning trains every weight, full-acoustic every weight but the text encoder's and the duration
    predictor's; the LoRAs train only adapters, on the flow and decoder (QLoRA on an NF4 base) or on the text
    encoder's attention; on the posterior path the posterior encoder trains unless the run keeps it frozen."""
    m = speaker_adapt.Method.parse(method)
    p = speaker_adapt.prepare(teacher, m, vo.posterior_encoder(teacher.hparams), train_posterior=train_posterior,
                              path="posterior")
    trained = [n for n, q in p.voice.named_parameters() if q.requires_grad]
    assert all(q.requires_grad == train_posterior for q in p.path.enc_q.parameters())
    if m.kind == "full":
        assert len(trained) == len(list(p.voice.parameters()))
        return
    parts = {"full-acoustic": ("dec.", "flow."), "full-decoder": ("dec.",),
             "full-prior": ("dec.", "flow.", "enc_p.proj.")}.get(m.kind)
    if parts:  # written out here, not read from FULL_SCOPES: the table the docstring states
        assert {next(x for x in parts if n.startswith(x)) for n in trained} == set(parts)
        assert len(trained) == sum(1 for n, _ in p.voice.named_parameters() if n.startswith(parts))
        return
    assert trained and all("lora_" in n for n in trained)
    where = {n.split(".")[0] for n in trained}
    assert where == {"lora-attention": {"enc_p"}, "lora-decoder": {"dec"}}.get(m.kind, {"dec", "flow"})
    if m.kind == "lora-attention":
        assert all(any(f".{q}." in n for q in ("conv_q", "conv_k", "conv_v", "conv_o")) for n in trained)
    assert bool(p.quantized) == (m.kind == "qlora")


@pytest.fixture(scope="module")
def speaker(teacher, tmp_path_factory):
    """A tiny speaker folder: the teacher's own voice on four sentences, at 16 kHz (so the reader resamples), a
    bootstrapped posterior beside it; the durations the inference path finds go to a folder of this module."""
    from lib.harness import durations
    tmp = tmp_path_factory.mktemp("speaker")
    mp = pytest.MonkeyPatch()
    mp.setattr(durations, "durations_cache", lambda: tmp / "durations")
    sents = text.harvard_sentences([68])[:4]
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids(sents)
    pairs = posterior.Pairs.of_teacher(teacher, ids)
    folder = ljspeech.write_folder(tmp / "folder", [(s.id, s.text, resample(w.reshape(-1).numpy(), 22050, 16000), 16000)
                                                    for s, w in zip(sents, pairs.latents.wav)])
    enc_q, _ = posterior.bootstrap(teacher.hparams, pairs, Recipe(steps=2, adversarial=False, checkpoint_every=2),
                                   tmp / "posterior-work", batch=2, threads=2, progress=None)
    posterior.save(enc_q, tmp / "posterior", teacher.hparams, {"steps": 2})
    yield tmp, folder
    mp.undo()


# lora-r4 and lora-attention-r4 pack, load and export as qlora-r4 does without its NF4 base (smoke 02 runs lora-r4;
# test_each_method_trains_what_its_table_says checks what each LoRA targets)
@pytest.mark.parametrize("method", ["full", "qlora-r4"])
def test_adapt_pack_load_and_export(teacher, speaker, method, tmp_path):
    """Each kind of method trains two steps on the inference path (the second adversarial), packs an artefact others
    can load (a PEFT adapter with its base named, or the full voice's sharded safetensors) with its model card and a
    ledger row with validation WER and SECS, and exports as one .onnx that piper's runtime speaks."""
    tmp, folder = speaker
    out = tmp_path / "speaker" / method
    cfg = speaker_job.SpeakerRun(work=str(tmp_path / "work"), dataset=str(folder), method=method,
                                 posterior=str(tmp / "posterior"), out=str(out), steps=2, adversarial_steps=1, batch=2,
                                 validation=2, threads=2, checkpoint_every=1, eval_every=1, log_every=1)
    speaker_job.start(cfg, tmp_path / "work")
    assert speaker_job.read_config(tmp_path / "work", speaker_job.SpeakerRun) == cfg
    led = tmp_path / "ledger.csv"
    assert speaker_job.run_speaker(cfg, ledger_path=led) == out
    info = json.loads((out / "config.json").read_text())
    assert info["method"] == method and info["steps"] == 2 and 0 <= info["judged"]["heldout_wer"] <= 3
    # issue 51: valid Hub metadata, the voice named, its bound said, no local path
    from huggingface_hub import ModelCard
    card = ModelCard.load(out / "README.md")
    assert (card.data.base_model, card.data.pipeline_tag, card.data.language) == ("rhasspy/piper-voices",
                                                                                  "text-to-speech", ["en"])
    assert card.data.base_model_relation == ("finetune" if method == "full" else "adapter")
    assert {r.metric_type for r in card.data.eval_results} >= {"heldout_secs", "heldout_wer", "speaker_wer"}
    assert "en_US-joe-medium.onnx" in card.text and str(tmp_path) not in card.content
    assert (("misses its quality bound on wer" in card.text)
            == (info["judged"]["heldout_wer"] > info["judged"]["speaker_wer"] + 0.05))
    row = ledger.read(led).iloc[-1]
    assert row["run"] == f"speaker/{method}" and row["steps"] == 2 and np.isfinite(row["heldout_wer"])
    if method == "full":
        shards = list(out.glob("*.safetensors"))
        assert info["kind"] == "adapted_voice" and len(shards) >= 2
        assert all(p.stat().st_size < 20 * 2**20 for p in shards)
    else:
        adapter = json.loads((out / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == "piper:en_US-joe-medium"
        assert info["trainable_params"] < 0.05 * sum(p.numel() for p in teacher.parameters())
    loaded = speaker_adapt.load(teacher, out)
    # issue 69 item 1: the pack names the voice it adapts, and another voice of the same shape refuses it
    assert info["teacher"]["voice"] == "en_US-joe-medium.onnx" and len(info["teacher"]["sha256"]) == 64
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(teacher, "voice_identity", {"voice": "en_GB-alba-medium.onnx", "sha256": "0" * 64}, raising=False)
        with pytest.raises(ArtefactError, match="en_US-joe-medium.onnx.*en_GB-alba-medium.onnx"):
            speaker_adapt.load(teacher, out)
    # trained, not merely re-stored: past float16's rounding for full fine-tuning (stored in float16), any change
    # for an adapter merged in float32; QLoRA's NF4 layers (other names) aside
    base = teacher.state_dict()
    tol = (lambda n: 1e-2 * base[n].abs().max()) if method == "full" else (lambda n: 0.0)
    changed = [n for n, p in loaded.state_dict().items()
               if n in base and (p.float() - base[n].float()).abs().max() > tol(n)]
    assert changed and (method == "full" or not any(n.startswith("enc_p.encoder.ffn") for n in changed))
    assert not (out / speaker_adapt.POSTERIOR).exists()  # the inference path has no posterior encoder to keep
    assert "inference path" in info["objective"] and json.loads((out / "spent.json").read_text())["steps"] == 2
    result = export_pack.export([out], tmp_path / "voice")
    assert {p.name for p in (tmp_path / "voice").iterdir()} >= {f"en_US-joe_{method.replace('-', '_')}-medium.onnx",
                                                                 "README.md"}
    assert result["samples"] > 22050 and result["rms"] > 1e-3
    with pytest.MonkeyPatch.context() as mp:  # no new steps: nothing judged again, no second row
        mp.setattr(speaker_job, "validation_quality", lambda *a, **k: pytest.fail("judged a packed state again"))
        speaker_job.pack_speaker(tmp_path / "work", ledger_path=led)
    assert len(ledger.read(led)) == 1
    again = speaker_adapt.prepare(teacher, speaker_adapt.Method.parse(method),
                                  posterior.load(tmp / "posterior", teacher.hparams))
    assert speaker_adapt.load_into(again, out)["steps"] == 2  # a run on another machine starts from the pack
    if method != "qlora-r4":  # QLoRA's merge keeps its NF4 rounding: loaded onto the float voice it differs by that
        want = loaded.state_dict()  # once: a state_dict per parameter cost seconds
        for name, p in again.merged().state_dict().items():
            torch.testing.assert_close(p, want[name], atol=2e-3, rtol=0)


def test_a_run_goes_on_from_its_pack_counting_its_steps_and_hours(teacher, speaker, tmp_path, monkeypatch):
    """A run with --init-from on a machine without its state starts from the pack, trains the steps left of its
    budget and packs the sum of steps and machine-hours. Its packs are not judged (nothing here reads the scores;
    test_adapt_pack_load_and_export judges packs): a constant stands in for the judges' 12 s."""
    tmp, folder = speaker
    monkeypatch.setattr(speaker_job, "validation_quality", lambda *a, **k: {
        "heldout_wer": 0.5, "heldout_secs": 0.5, "speaker_wer": 0.1, "speaker_self_secs": 0.9})
    common = dict(dataset=str(folder), method="lora-r4", posterior=str(tmp / "posterior"), out=str(tmp_path / "pack"),
                  batch=2, validation=2, threads=2, checkpoint_every=1, eval_every=0, log_every=1, path="posterior")
    speaker_job.run_speaker(speaker_job.SpeakerRun(work=str(tmp_path / "a"), steps=2, **common), ledger_path=None)
    first = json.loads((tmp_path / "pack" / "config.json").read_text())
    speaker_job.run_speaker(speaker_job.SpeakerRun(work=str(tmp_path / "b"), steps=3, init_from=str(tmp_path / "pack"),
                                                   **{**common, "out": str(tmp_path / "pack2")}), ledger_path=None)
    second = json.loads((tmp_path / "pack2" / "config.json").read_text())
    assert first["steps"] == 2 and second["steps"] == 3 and second["hours"] > first["hours"]
    assert json.loads((tmp_path / "b" / "before.json").read_text())["steps"] == 2
    assert second["recipe"]["schedule_offset"] == 2
    resumed = speaker_adapt.prepare(teacher, speaker_adapt.Method("lora", 4),
                                    posterior.load(tmp / "posterior", teacher.hparams), path="posterior")
    speaker_adapt.load_into(resumed, tmp_path / "pack")  # the pack's adapter and posterior encoder, not the bootstrap's
    packed_q = load_file(str(tmp_path / "pack" / speaker_adapt.POSTERIOR))
    assert all(torch.equal(v.half(), packed_q[k]) for k, v in resumed.path.enc_q.state_dict().items())
    boot = posterior.load(tmp / "posterior", teacher.hparams).state_dict()
    assert any(not torch.equal(v.half(), boot[k].half()) for k, v in resumed.path.enc_q.state_dict().items())
    speaker_job.run_speaker(speaker_job.SpeakerRun(work=str(tmp_path / "c"), steps=2, train_posterior=False,
                                                   prior_mel=45.0, **{**common, "out": str(tmp_path / "pack3")}),
                            ledger_path=None)
    kept = load_file(str(tmp_path / "pack3" / speaker_adapt.POSTERIOR))  # a frozen posterior packs as bootstrapped
    assert all(torch.equal(v.half(), kept[k]) for k, v in boot.items())
    curve = pd.read_csv(tmp_path / "c" / "train" / "curve.csv")  # the inference path's mel term was trained on
    assert curve["loss_prior_mel"].notna().all() and (curve["loss_prior_mel"] > 0).all()
    with pytest.raises(ValueError, match="holds a 'lora-r4' adaptation, not 'full'"):
        speaker_adapt.load_into(speaker_adapt.prepare(teacher, speaker_adapt.Method("full"),
                                                      posterior.load(tmp / "posterior", teacher.hparams),
                                                      path="posterior"),
                                tmp_path / "pack")
    # issue 50's word gap: a run's latest state from its work folder and the same checkpoint from its pack (its
    # card's config) are judged alike, on recordings it trained on and on its validation split
    from lib.studies import adaptation_gap

    base = teacher.state_dict()

    def weights_and_clips(voice, recs, asr, **kw):  # what was judged (how far from the teacher), not the judges' cost
        moved = sum(float(((v.double() - base[k].double()) ** 2).sum()) for k, v in voice.state_dict().items()
                    if k in base and v.shape == base[k].shape)
        return {"heldout_wer": moved, "heldout_secs": len(recs), "speaker_wer": 0.0, "speaker_self_secs": 1.0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speaker_judge, "validation_quality", weights_and_clips)
        mp.setattr(adaptation_gap.metrics, "WhisperAsr", lambda *a, **k: None)
        work, pack = (adaptation_gap.judge_run(tmp_path / w, clips=2, threads=2) for w in ("a", "pack"))
    assert [r["split"] for r in work] == [r["split"] for r in pack] == ["trained on", "held out"]
    assert work[0]["steps"] == pack[0]["steps"] == 2 and work[0]["recordings"] == 2 and work[0]["heldout_secs"] == 2
    assert work[0]["heldout_wer"] > 0 and work[0]["heldout_wer"] == pytest.approx(pack[0]["heldout_wer"], rel=1e-3)
    with pytest.raises(ValueError, match="--clips 3 but the run trained on 2 recordings"):
        adaptation_gap.judge_run(tmp_path / "a", clips=3)
    with pytest.raises(ValueError, match="adaptation-gap: name at least one speaker run with --work"):
        adaptation_gap.run(adaptation_gap.AdaptationGap(out=str(tmp_path / "gap")))
    assert not (tmp_path / "gap").exists()
    # where the words are lost: the pack at the voice's timing and at its recordings' own, and with its flow and
    # decoder swapped with the teacher's; a clip at a recording's own durations is as long as the recording
    from lib.studies import adaptation_parts

    def lengths(clips, recs, asr, threads=1):  # what was spoken (its length), not the judges' cost
        return {"heldout_wer": float(sum(c.samples.size for c in clips)), "heldout_secs": float(len(clips)),
                "speaker_wer": 0.0, "speaker_self_secs": 1.0}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(speaker_judge, "clips_quality", lengths)  # (Whisper's encoder still finds the DTW durations)
        parts = pd.DataFrame(adaptation_parts.judge_run(tmp_path / "pack", clips=2, threads=2))
    assert sorted(set(zip(parts.voice, parts.timing))) == sorted(
        [("teacher", "predictor"), ("teacher", "recorded"), ("adapted", "predictor"), ("adapted", "recorded"),
         *((name, "predictor") for name in adaptation_parts.PART_MIXES)])
    recs = ljspeech.split(ljspeech.read_folder(folder, teacher.sample_rate), 2)
    hop = piper_torch.hop_length(teacher)
    for split, rs in zip(("trained on", "held out"), recs):
        spoken = parts[(parts.split == split) & (parts.timing == "recorded")]["wer"]
        assert len(spoken) == 2 and (spoken == sum(r.samples.size // hop * hop for r in rs)).all()


def test_a_voice_spoken_at_its_own_durations_is_its_own_speech(teacher):
    """speak_at (the adaptation studies' trained timing) at the durations the voice's predictor gives is the voice's
    own noise-free speech, and at other durations it is as long as they say."""
    ids = torch.tensor(voices.PiperFrontend(voices.joe_paths()[1]).phoneme_ids("The birch canoe slid.")[0])
    with torch.no_grad():
        o, attn, *_ = teacher.infer(ids[None], torch.tensor([ids.numel()]), noise_scale=0.0, length_scale=1.0,
                                    noise_scale_w=0.0)
    own = attn[0, 0].sum(0).round().long()
    np.testing.assert_allclose(vo.speak_at(teacher, ids, own), o[0, 0].numpy(), atol=1e-4)
    slow = own * 2
    assert vo.speak_at(teacher, ids, slow).size == int(slow.sum()) * piper_torch.hop_length(teacher)


def test_a_part_mix_takes_the_flow_of_one_voice_and_the_decoder_of_the_other(teacher):
    from lib.studies import adaptation_parts
    other = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(1.0)
    mix = adaptation_parts.mixed(other, teacher)
    assert all(torch.equal(p, q) for p, q in zip(mix.dec.parameters(), teacher.dec.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(mix.flow.parameters(), other.flow.parameters()))
    assert mix.dec is not teacher.dec and mix.flow is not other.flow


def test_a_run_refuses_another_config_in_its_folder(tmp_path):
    speaker_job.start(speaker_job.SpeakerRun(work=str(tmp_path), dataset="a", method="full"), tmp_path)
    with pytest.raises(ValueError, match="method: 'full' -> 'lora-r8'"):
        speaker_job.start(speaker_job.SpeakerRun(work=str(tmp_path), dataset="a", method="lora-r8"), tmp_path)
    (tmp_path / "config.json").write_text('{"kind": "SpeakerRun", "work"')
    with pytest.raises(ValueError, match="config.json: the run's config cannot be read"):
        speaker_job.read_config(tmp_path, speaker_job.SpeakerRun)


def test_a_run_keeps_the_voice_it_adapts(tmp_path):
    """--voice and the teacher's sha256 are in the run's config; another voice in the same folder is refused."""
    cfg = speaker_job.SpeakerRun(work=str(tmp_path), dataset="a", method="lora-r8", voice="my/en_GB-alba-medium.onnx")
    joe = {"voice": "en_US-joe-medium.onnx", "sha256": "a" * 64}
    assert speaker_job.start(cfg, tmp_path, {"teacher": joe})["teacher"] == joe
    kept = speaker_job.read_config(tmp_path, speaker_job.SpeakerRun).voice
    assert kept.startswith("/") and kept.endswith("my/en_GB-alba-medium.onnx")  # resolved: a pack elsewhere reads it
    with pytest.raises(ValueError, match="teacher"):
        speaker_job.start(cfg, tmp_path, {"teacher": {**joe, "sha256": "b" * 64}})


def test_an_adversarial_tail_from_a_pack_warms_fresh_discriminators_first():
    """A run that goes on from a pack (which keeps no discriminators) with an adversarial tail: its recipe trains the
    fresh discriminators alone first, then both, for the steps left, and its ledger name says so."""
    cfg = speaker_job.SpeakerRun(work="w", dataset="a", method="full-acoustic", steps=6000, adversarial_steps=3950,
                                 disc_warmup_steps=200, discriminators=["mpd", "mrd"], disc_segment=2048)
    r = cfg.recipe(before=2050)
    assert (r.steps, r.warmup_steps, r.disc_warmup_steps, r.schedule_offset) == (3950, 0, 200, 2050)
    assert r.adversarial and r.discriminators == ("mpd", "mrd") and r.disc_segment == 2048
    assert "adversarial=3950(mpd+mrd on 2048 samples, 200 discriminator-only)" in cfg.recipe_name
    assert "adversarial" not in speaker_job.SpeakerRun(work="w", dataset="a").recipe_name


def test_export_names_a_damaged_pack(tmp_path):
    (tmp_path / "config.json").write_text('{"kind": "peft_adapter",\n')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        export_pack.voice_from_packs(None, [tmp_path])


def test_public_names_resolve():
    """What a user's script imports from lib itself stays importable when modules move."""
    import lib
    assert all(callable(getattr(lib, name)) for name in lib.PUBLIC)
    with pytest.raises(AttributeError, match="no attribute 'load_voices'"):
        lib.load_voices


def test_command_line_names_a_bad_folder(tmp_path, capsys):
    """`tts-lab adapt-speaker` on a folder without metadata.csv stops with one line naming it, no traceback."""
    from lib import cli
    (tmp_path / "speaker").mkdir()
    with pytest.raises(SystemExit, match=r"tts-lab: .*speaker/metadata.csv is missing"):
        cli.main(["adapt-speaker", "--work", str(tmp_path / "work"), "--dataset", str(tmp_path / "speaker")])
    with pytest.raises(SystemExit):
        cli.main(["adapt-speaker", "--work", str(tmp_path / "work")])  # --dataset is required: tyro's usage error
    assert "--dataset" in capsys.readouterr().err


def test_early_stopping_counts_packs_since_the_best_and_stops_the_loop(tmp_path):
    """The pack's rule (stale_packs) and the loop's hook: a run told to stop ends at its next logged step,
    checkpointed, with fewer steps than its budget."""
    import pandas as pd
    from lib.training.loop import Trainer
    rows = pd.DataFrame({"heldout_secs": [0.5, 0.7, 0.68, 0.69], "heldout_wer": [0.2, 0.1, 0.1, 0.12]})
    assert speaker_judge.stale_packs(rows, 0.05) == 2 and speaker_judge.stale_packs(rows[:2], 0.05) == 0
    # issue 50: by the targets, the highest SECS within the WER bound (own 0.10 + 0.05), not SECS minus WER
    rows = pd.DataFrame({"heldout_secs": [0.60, 0.75, 0.66], "heldout_wer": [0.12, 0.30, 0.14]})
    assert speaker_judge.stale_packs(rows, 0.10) == 0, "0.75 SECS at WER 0.30 is outside the bound: 0.66 at 0.14 best"
    score = speaker_judge.validation_score
    assert (score({"heldout_secs": 0.66, "heldout_wer": 0.14}, 0.10)
            > score({"heldout_secs": 0.75, "heldout_wer": 0.30}, 0.10))
    assert score({"heldout_secs": 0.5, "heldout_wer": 0.2}, 0.1) > score({"heldout_secs": 0.9, "heldout_wer": 0.4}, 0.1)
    lin = torch.nn.Linear(2, 1)
    told = {"after": 3}
    def stop():
        told["after"] -= 1
        return "told to" if told["after"] <= 0 else None
    curve = Trainer(lin, lambda rng: (torch.randn(4, 2),),
                    Recipe(steps=50, adversarial=False, log_every=2, checkpoint_every=50),
                    tmp_path, loss_fn=lambda m, b: m(b[0]).pow(2).mean(), threads=1, progress=None,
                    should_stop=stop).fit()
    assert curve.steps_done == 6 and (tmp_path / "state" / "model.safetensors").exists()


def test_the_duration_predictors_training_only_parts_fit_the_teachers_durations(teacher, tmp_path):
    """Fitting the SDP's posterior flows (and the flow inference skips) on the teacher's own durations lowers the
    duration loss and leaves every part inference uses as it was; prepare() puts them into the voice."""
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids(text.harvard_sentences([67])[:4])
    pairs = posterior.teacher_durations(teacher, ids)
    path = posterior.DurationPath(teacher.enc_p, teacher.dp)
    x = torch.nn.utils.rnn.pad_sequence([p[0] for p in pairs], batch_first=True)
    w = torch.nn.utils.rnn.pad_sequence([p[1] for p in pairs], batch_first=True).unsqueeze(1)
    batch = (x, torch.tensor([p[0].numel() for p in pairs]), w)
    torch.manual_seed(0)
    before = float(posterior.duration_nll(path, batch))
    parts = posterior.fit_duration_parts(teacher, pairs,
                                         Recipe(steps=30, lr=2e-3, adversarial=False, checkpoint_every=30),
                                         tmp_path, batch=4, threads=2)
    assert parts and all(k.startswith(posterior.DURATION_PARTS) for k in parts)
    fitted = speaker_adapt.prepare(teacher, speaker_adapt.Method("full"), vo.posterior_encoder(teacher.hparams),
                                   duration=parts).voice
    torch.manual_seed(0)
    after = float(posterior.duration_nll(posterior.DurationPath(fitted.enc_p, fitted.dp), batch))
    assert after < before - 0.5, (before, after)
    same = {k: v for k, v in fitted.dp.state_dict().items() if not k.startswith(posterior.DURATION_PARTS)}
    assert all(torch.equal(v, teacher.dp.state_dict()[k]) for k, v in same.items())


def test_the_why_of_a_missed_adaptation_target_is_rendered_from_the_run(tmp_path):
    """Notebook 02's 'why' findings: the rank correlation of SECS and WER over the adapted variants (the teacher and
    the speaker's own clips left out), and the diagnostic packs read back from what they recorded (a pack missing is
    left out, and the cause is then not claimed)."""
    from lib.report import verdicts
    from lib.studies import adaptation
    t = pd.DataFrame({"variant": ["teacher", "target-speaker", "full", "lora-r8", "lora-r4"],
                      "secs": [0.43, 0.82, 0.61, 0.49, 0.51],
                      "wer": [0.07, 0.16, 0.93, 0.21, 0.30]}).set_index("variant")
    from lib.core import registry
    diagnostic = list(registry.load().runs(adaptation.DIAGNOSIS))  # the described runs, from the registry file
    assert len(diagnostic) == 3
    for i, run in enumerate(diagnostic):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / "config.json").write_text(json.dumps({
            "steps": 750, "hours": 0.08, "frozen": "text encoder", "run": {"path": "inference", "durations": "dtw"},
            "judged": {"heldout_wer": 0.04 + 0.3 * i, "speaker_wer": 0.05 + 0.1 * bool(i), "heldout_secs": 0.6}}))
        pd.DataFrame({"step": [500, 750], "heldout_mel": [0.5 + 0.1 * i, 0.45 + 0.1 * i]}).to_csv(
            tmp_path / run / "curve.csv")
    diag = adaptation.diagnosis(root=tmp_path)
    assert (list(diag["heldout_mel_l1"].round(2)) == [0.45, 0.55, 0.65]
            and list(diag["validation_wer"].round(2)) == [0.04, 0.34, 0.64])
    fmt = lambda x, fmt=".2f": format(x, fmt)
    said = verdicts.adaptation_why_lines(t, diag, fmt)
    assert "over the 3 adapted variants" in said[0] and "rank correlation of SECS and WER +1.00" in said[0]
    assert ("the teacher's own audio, DTW durations: validation WER 0.04 (the folder's own 0.05), held-out mel L1 0.45"
            in said[1])
    assert "They train the inference path on dtw durations" in said[1] and "with the text encoder frozen" in said[1]
    t.loc["lora-r4", "wer"] = 0.95  # the order of WER no longer follows SECS
    assert "+1.00" not in verdicts.adaptation_why_lines(t, diag, fmt)[0]
    (tmp_path / diagnostic[1] / "config.json").unlink()
    short = adaptation.diagnosis(root=tmp_path)
    assert len(short) == 2 and len(verdicts.adaptation_why_lines(t, short, fmt)) == 1


def test_the_arm_tried_is_said_with_its_words_and_its_fit():
    """Notebook 02's why-lines name each arm run after the diagnosis (studies.adaptation.ARMS, read from its pack):
    its validation WER against the bound and its training against held-out mel L1."""
    from lib.report import verdicts
    from lib.studies import adaptation
    arms = adaptation.diagnosis(adaptation.ARMS)
    assert list(arms["run"]) == ["speaker-adv/full-acoustic"] and arms["train_mel_l1"].notna().all()
    fmt = lambda x, fmt=".2f": format(x, fmt)
    t = pd.DataFrame({"variant": ["teacher"], "secs": [0.4], "wer": [0.1]}).set_index("variant")
    line = verdicts.adaptation_why_lines(t, arms.iloc[:0], fmt, arms=arms, wer_margin=0.05)[-1]
    r = arms.iloc[0]
    assert f"validation WER {r['validation_wer']:.2f} against the bound {r['folder_own_wer'] + 0.05:.2f}" in line
    assert f"training mel L1 {r['train_mel_l1']:.2f} against {r['heldout_mel_l1']:.2f}" in line


def test_whether_lost_words_are_memorisation_is_said_from_the_word_gap(tmp_path):
    """Issue 50's cheap signal: a checkpoint whose sentences it trained on keep their words while held-out ones lose
    them is memorisation (more recordings cure it); one that loses as many on both is not. Noise-on rows are not
    what the verdict reads, and without a study nothing is claimed."""
    from lib.report import adaptation_signals as signals
    from lib.studies import adaptation
    fmt = lambda x, fmt=".2f": format(x, fmt)
    assert signals.adaptation_word_gap_lines(adaptation.word_gap(tmp_path), fmt) == []

    def study(folder, trained_wer, noise=0.0):
        folder.mkdir(parents=True)
        pd.DataFrame({"work": "run", "steps": 2050, "split": ["trained on", "held out"], "noise_scale": noise,
                      "wer": [trained_wer, 0.40], "speaker_wer": [0.20, 0.10]}).to_csv(folder / "gap.csv")
    study(tmp_path / "a", 0.48)  # +0.28 beyond the speaker's own, against +0.30 held out: not memorisation
    study(tmp_path / "noisy", 0.20, noise=0.667)  # a noise-on study the verdict leaves aside
    gap = adaptation.word_gap(tmp_path)
    assert len(gap) == 4 and gap["excess"].round(2).tolist().count(0.28) == 1
    line = signals.adaptation_word_gap_lines(gap, fmt)[0]
    assert "memorisation? No." in line and "0.48 on sentences it trained on (the speaker's own 0.20)" in line
    (tmp_path / "a" / "gap.csv").unlink()
    study(tmp_path / "b", 0.22)  # +0.02 on trained sentences, +0.30 held out: memorisation
    line = signals.adaptation_word_gap_lines(adaptation.word_gap(tmp_path), fmt)[0]
    assert "more of the speaker is the cure" in line


def test_whether_the_distance_to_the_speaker_loses_the_words_is_said_from_both_runs():
    """Issue 50: the same recipe on a speaker near the teacher's pitch against the target's run. Within the bound
    near the teacher says the distance is the cause; half the target's loss or less, in part; more, not it."""
    from lib.report import adaptation_signals as signals
    fmt = lambda x, fmt=".2f": format(x, fmt)
    target = pd.DataFrame([{"folder": "jf_alpha", "steps": 2050, "validation_wer": 0.31, "folder_own_wer": 0.12}])

    def near(wer):
        return pd.DataFrame([{"folder": "jm_kumo", "steps": 2050, "validation_wer": wer, "folder_own_wer": 0.10}])
    assert signals.adaptation_distance_lines(near(0.14), target, fmt)[0].startswith("Is it the distance to the "
                                                                                      "speaker? Yes")
    assert "(+0.04)" in signals.adaptation_distance_lines(near(0.14), target, fmt)[0]
    assert "In part" in signals.adaptation_distance_lines(near(0.18), target, fmt)[0]
    assert "? Not mainly" in signals.adaptation_distance_lines(near(0.30), target, fmt)[0]
    assert signals.adaptation_distance_lines(near(0.1).iloc[:0], target, fmt) == []


def test_where_the_words_are_lost_is_said_from_the_parts_study(tmp_path):
    """Issue 50: a run that keeps its words at its recordings' own timing says the timing is part of the fault, one
    that does not says it is not; the part swapped into the teacher that keeps most of the SECS gain and of the WER
    rise is named. Without a study nothing is claimed."""
    from lib.report import adaptation_signals as signals
    from lib.studies import adaptation
    fmt = lambda x, fmt=".2f": format(x, fmt)
    assert signals.adaptation_parts_lines(adaptation.parts(tmp_path), fmt) == []

    def study(recorded_wer, dec=(0.60, 0.40)):
        rows = [("teacher", "predictor", 0.05, 0.40), ("teacher", "recorded", 0.05, 0.40),
                ("adapted", "predictor", 0.45, 0.65), ("adapted", "recorded", recorded_wer, 0.65),
                ("adapted flow + teacher decoder", "predictor", 0.15, 0.42),
                ("teacher flow + adapted decoder", "predictor", dec[1], dec[0])]
        (tmp_path / "s").mkdir(exist_ok=True)
        pd.DataFrame([{"run": "speaker-infer/full-acoustic", "steps": 2050, "split": split, "voice": v, "timing": tm,
                       "wer": w, "secs": s} for split in ("trained on", "held out") for v, tm, w, s in rows]
                     ).to_csv(tmp_path / "s" / "parts.csv", index=False)
        return signals.adaptation_parts_lines(adaptation.parts(tmp_path), fmt)
    timing, part = study(0.47)
    assert timing.startswith("Is it the timing? No: speaker-infer/full-acoustic at 2,050 steps: WER 0.47 at its "
                             "recordings' own durations against 0.45")
    assert "keeps 80 % of the SECS gain" in part and "88 % of the WER rise" in part  # (0.60-0.40)/0.25, 0.35/0.40
    assert "the adapted flow under the teacher's decoder 8 % and 25 %" in part
    assert "the decoder holds most of the timbre and most of the lost words" in part
    assert "the adapted flows alone bring 8-8 % of the timbre and cost 25-25 % of the lost words" in part
    assert study(0.20)[0].startswith("Is it the timing? In part")
    assert "are not both the decoder's" in study(0.47, dec=(0.45, 0.40))[1]


def test_the_arms_are_said_from_one_judged_run(tmp_path):
    """Issue 50: notebook 02's arms line reads one adaptation-gap study (one judge for every arm): each held-out WER
    and SECS under what the arm changed, and which keep the words within the speaker's own WER + 0.05."""
    from lib.report import adaptation_signals as signals
    from lib.studies import adaptation
    fmt = lambda x, fmt=".2f": format(x, fmt)
    assert signals.adaptation_arms_lines(adaptation.word_gap(tmp_path), {}, fmt) == []
    pd.DataFrame({"work": ["a/full", "a/full", "b/dec"], "steps": 2050, "split": ["trained on", "held out", "held out"],
                  "noise_scale": 0.0, "wer": [0.5, 0.30, 0.16], "secs": [0.6, 0.66, 0.64],
                  "speaker_wer": [0.26, 0.12, 0.12]}).to_csv(tmp_path / "gap.csv", index=False)
    line = signals.adaptation_arms_lines(adaptation.word_gap(tmp_path), {"b/dec": "the decoder alone"}, fmt)[0]
    assert "(the bound: the speaker's own WER 0.12 + 0.05)" in line
    assert "a/full (a/full, 2,050 steps): WER 0.30, SECS 0.66; the decoder alone (b/dec, 2,050 steps): WER 0.16" in line
    assert line.endswith("Within the bound: b/dec.")
