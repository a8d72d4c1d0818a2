"""Issue 50 items 2 and 3: durations for any folder (DTW against the teacher's rendition on Whisper's encoder
output, or MAS), handed to training as arrays, and the acoustic loss through the path the voice speaks with
(text encoder -> the recordings' durations -> flow reversed from the prior with noise -> decoder), with piper's
discriminators through the one training loop; the adaptation run records its path and durations."""
import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

from lib.core import text
from lib.core.params import ROOT
from lib.data import ljspeech
from lib.harness import durations
from lib.jobs import speaker_job
from lib.techniques import finetune, speaker_adapt
from lib.training import posterior
from lib.training import vits_objective as vo
from lib.training.loop import Recipe, Trainer
from lib.training.losses import mel_l1
from lib.voices import piper_torch
from lib.voices import synth as voices

POSTERIOR = ROOT / "outputs/recorded/training/posterior/joe-medium"


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


@pytest.fixture(scope="module")
def frontend():
    return voices.PiperFrontend(voices.joe_paths()[1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Found durations go to a folder of this module, not the lab's cache."""
    folder = tmp_path_factory.mktemp("durations")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(durations, "durations_cache", lambda: folder)
        yield folder


@pytest.fixture(scope="module")
def folder(teacher, frontend, tmp_path_factory):
    """A tiny LJSpeech folder: the teacher speaking three sentences (its noise on) at 22050 Hz."""
    items = []
    for i, s in enumerate(text.harvard_sentences([69])[:3]):
        ids = frontend.phoneme_ids(s.text)[0]
        torch.manual_seed(i)
        with torch.no_grad():
            audio = teacher.infer(torch.tensor([ids]), torch.tensor([len(ids)]),
                                  noise_scale=0.667, noise_scale_w=0.8)[0]
        items.append((s.id, s.text, audio.reshape(-1).numpy(), 22050))
    return ljspeech.write_folder(tmp_path_factory.mktemp("speaker") / "folder", items)


@pytest.fixture(scope="module")
def data(teacher, frontend, folder, cache):
    """The folder's utterances with their DTW durations (found once, then read from the cache)."""
    recs = ljspeech.read_folder(folder, teacher.sample_rate)
    utts = vo.from_recordings(recs, frontend, 256)
    return recs, vo.with_durations(utts, durations.cached_durations(utts, teacher, "dtw"), "dtw")


def test_at_least_one_frame_per_id_keeps_the_total():
    f = durations.at_least_one([0, 3, 0, 1, 4, 0])
    assert f.tolist() == [1, 1, 1, 1, 3, 1] and f.sum() == 8  # each from the nearest id with more than one
    assert durations.at_least_one([0, 1, 0]).tolist() == [0, 1, 0]  # fewer frames than ids: left as it is
    assert durations.best_duration_method() == "dtw"  # the yardstick's best on a speaker that is not the teacher


def test_durations_add_up_to_each_recordings_frames(teacher, frontend, data, cache, monkeypatch):
    """Per recording, one value per piper id, each at least a frame, adding up to its frames at the voice's hop; the
    same through recording_durations, and read back from the cache; MAS (the option) adds up as well, and offers a
    long run's pause a point per recording (a run's 15-minute setup held a notebook's timing waiting)."""
    from lib.core import pause
    points = []
    monkeypatch.setattr(pause, "yield_point", lambda: points.append(1))
    recs, utts = data
    for rec, ids, d in zip(recs, utts.phonemes, utts.durations):
        assert d.numel() == ids.numel() and int(d.sum()) == len(rec.samples) // 256 and int(d.min()) >= 1
    assert len(list(cache.glob("dtw-*.safetensors"))) == 1
    again = durations.cached_durations(utts, teacher, "dtw")  # from the cache: no Whisper
    assert all(np.array_equal(a, b.numpy()) for a, b in zip(again, utts.durations))
    mas = durations.recording_durations(recs[:1], teacher, frontend, "mas",
                                        enc_q=posterior.load(POSTERIOR, teacher.hparams).eval())
    assert mas[0].sum() == len(recs[0].samples) // 256 and mas[0].size == utts.phonemes[0].numel()
    assert len(points) == 1
    with pytest.raises(ValueError, match="adding up to"):
        vo.with_durations(utts, [d[:-1] for d in utts.durations])


def test_utterances_save_and_load_their_durations(data, tmp_path):
    _, utts = data
    back = vo.Utterances.load(utts.save(tmp_path / "u.safetensors"))
    assert back.durations_method == "dtw" and all(torch.equal(a, b) for a, b in zip(back.durations, utts.durations))
    assert len(vo.batch_of(back, [0, 1])) == 6 and len(vo.batch_of(vo.build(back.ids, back.phonemes, back.wav, 256,
                                                                             22050), [0])) == 5


def test_the_inference_path_decodes_the_aligned_prior(teacher, frontend):
    """With the teacher's own durations and its noise off, the path gives the teacher's own audio of the segment
    back (up to the decoder's edges on a cut segment): the path is the one inference runs."""
    ids = frontend.phoneme_ids(text.harvard_sentences([69])[0].text)[0]
    with torch.no_grad():
        audio, attn, _, _ = teacher.infer(torch.tensor([ids]), torch.tensor([len(ids)]), noise_scale=0.0,
                                          noise_scale_w=0.0)
    utts = vo.with_durations(vo.build(["a"], [ids], [audio.reshape(-1).numpy()], 256, 22050),
                             [attn[0, 0].sum(0).numpy()])
    torch.manual_seed(0)
    with torch.no_grad():
        y_hat, y, terms = vo.inference_forward(vo.InferencePath(teacher, noise_scale=0.0), vo.batch_of(utts, [0]))
    assert y_hat.shape == y.shape == (1, 1, teacher.segment_size * 256) and terms == {}
    assert float(mel_l1(y_hat, y, 22050)) < 0.15


@pytest.mark.parametrize("method", ["lora-r4", "full-acoustic", "full"])
def test_gradients_reach_the_decoder_and_the_text_path_only_where_it_trains(teacher, data, method):
    """The mel loss of the inference path reaches the decoder (its dilated convolutions' adapters too); the text
    encoder and duration predictor get nothing for LoRA and full-acoustic, and for full the duration loss on the
    external durations joins."""
    _, utts = data
    p = speaker_adapt.prepare(teacher, speaker_adapt.Method.parse(method))
    assert p.objective == "inference" and p.enc_q is None
    torch.manual_seed(0)
    y_hat, y, terms = p.forward(p.path, vo.batch_of(utts, [0, 1]))
    loss = mel_l1(y_hat, y, 22050) + sum(w * t for w, t in terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n.removeprefix("base_model.model."): q.grad for n, q in p.voice.named_parameters()
             if q.grad is not None and float(q.grad.abs().sum()) > 0}
    assert any(n.startswith("dec.") for n in grads) and any(n.startswith("flow.") for n in grads)
    text_path = [n for n in grads if n.startswith(("enc_p.", "dp."))]
    if method == "full":
        assert set(terms) == {"loss_dur"} and torch.isfinite(terms["loss_dur"][1])
        assert any(n.startswith("enc_p.") for n in text_path) and any(n.startswith("dp.") for n in text_path)
        return
    assert terms == {} and not text_path
    assert all(not q.requires_grad for n, q in p.voice.named_parameters() if ".enc_p." in f".{n}" or ".dp." in f".{n}")
    if method.startswith("lora"):
        dilated = [n for n, m in teacher.dec.named_modules() if isinstance(m, torch.nn.Conv1d) and m.dilation[0] > 1]
        assert dilated and all(f"dec.{n}.lora_B.default.weight" in grads for n in dilated)
        assert any(n.startswith("dec.ups") and "lora_B" in n for n in grads)  # the transposed convolutions'


def test_full_acoustic_trains_every_weight_but_the_text_paths():
    assert finetune.parse_method("full-acoustic") == ("full-acoustic", None)
    assert speaker_adapt.Method.parse("full-acoustic").name == "full-acoustic"
    with pytest.raises(ValueError, match="full-acoustic takes no rank"):
        speaker_adapt.Method("full-acoustic", 8)


def test_a_few_steps_through_the_training_loop(teacher, data, tmp_path):
    """The Trainer runs the inference path as it runs piper's (its forward, no change to the loop): mel, then with
    the discriminators on the last step; finite losses, adapters that moved, the text path as it was."""
    _, utts = data
    p = speaker_adapt.prepare(teacher, speaker_adapt.Method("lora", 4))
    before = {n: q.detach().clone() for n, q in p.voice.named_parameters()}
    curve = Trainer(p.path, lambda rng: vo.random_batch(utts, 2, rng),
                    Recipe.adversarial_tail(3, 1, lr=1e-3, log_every=1, checkpoint_every=3, eval_every=3),
                    tmp_path, forward=p.forward, eval_batches=[vo.batch_of(utts, [2])], threads=1, progress=None).fit()
    frame = curve.frame
    assert len(frame) == 3 and np.isfinite(frame["loss_mel"]).all() and np.isfinite(frame["loss_g"]).all()
    assert frame["loss_adv"].notna().iloc[-1] and np.isfinite(frame["heldout_mel"].iloc[-1])
    moved = [n for n, q in p.voice.named_parameters() if not torch.equal(q.detach(), before[n])]
    assert moved and all("lora_" in n for n in moved)


def test_the_run_records_its_path_and_durations(folder, cache, tmp_path):
    """A SpeakerRun trains on the inference path with DTW durations unless told otherwise, its config.json says so,
    a run written before these fields existed is read back as the posterior path with MAS, and a posterior-path
    term on the inference path is refused."""
    cfg = speaker_job.SpeakerRun(work=str(tmp_path / "work"), dataset=str(folder), method="lora-r4",
                                 posterior=str(POSTERIOR), steps=2, batch=2, validation=1, threads=1,
                                 checkpoint_every=2, eval_every=2, log_every=1)
    assert speaker_job.run_speaker(cfg, ledger_path=None) == tmp_path / "work"
    kept = json.loads((tmp_path / "work" / "config.json").read_text())
    assert kept["path"] == "inference" and kept["durations"] == "dtw" and kept["noise_scale"] == 0.667
    assert speaker_job.read_config(tmp_path / "work", speaker_job.SpeakerRun) == cfg
    curve = pd.read_csv(tmp_path / "work" / "train" / "curve.csv")
    assert (np.isfinite(curve["loss_mel"]).all() and "loss_kl" not in curve
            and np.isfinite(curve["heldout_mel"].iloc[-1]))
    assert "inference-path durations=dtw" in cfg.recipe_name
    old = {k: v for k, v in kept.items() if k not in ("path", "durations", "noise_scale")}
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text(json.dumps({**old, "work": str(tmp_path / "old")}))
    legacy = speaker_job.read_config(tmp_path / "old", speaker_job.SpeakerRun)
    assert legacy.path == "posterior" and legacy.durations == "mas"
    resumed = {f.name: old[f.name] for f in fields(speaker_job.SpeakerRun) if f.name in old}
    with pytest.raises(ValueError, match="path: 'posterior' -> 'inference'"):  # resumed with today's defaults
        speaker_job.start(speaker_job.SpeakerRun(**{**resumed, "work": str(tmp_path / "old")}), tmp_path / "old")
    with pytest.raises(ValueError, match="prior_mel is a term of the posterior path"):
        speaker_job.SpeakerRun(work="w", dataset="d", prior_mel=45.0)
