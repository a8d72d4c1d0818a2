"""The regression-first recipe: channel choice and least-squares refit (lib.techniques.channel_prune), aligned stage
targets (lib.techniques.regress_recipe), the ledger (lib.training.ledger), and the long-run job's `regress` +
`pack --ledger` on a few steps."""
import copy
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lib.core import text
from lib.voices import parts, piper_torch, synth as voices
from lib.training import batches, ledger
from lib.techniques import channel_prune, distill, regress_recipe
from lib.jobs import run_state, train_job


@pytest.fixture(scope="module")
def teacher():
    return piper_torch.load_piper_torch(voices.joe_paths()[0])


@pytest.fixture(scope="module")
def zs(teacher):
    """The teacher's own latents of three sentences (what a student decodes), sampling noise on."""
    from lib.core import text
    fe = voices.PiperFrontend(voices.joe_paths()[1])
    sents = text.harvard_sentences([31])[:3]
    lat = batches.teacher_latents(teacher, [fe.phoneme_ids(s.text)[0] for s in sents], [s.id for s in sents],
                                   noise_scale=0.667, noise_w=0.8)
    return lat.z


def test_the_design_matrix_reproduces_every_layer_of_the_decoder(teacher, zs):
    """design(layer, x) @ as_matrix(layer) + bias is the layer's own output, for convolutions and (through the
    zero-stuffed input) for transposed convolutions: what the refit solves is the layer itself."""
    dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    with torch.no_grad():
        for name, layer, _, _ in channel_prune._layers(dec)[:6] + channel_prune._layers(dec)[-1:]:
            ins, outs = [], []
            hooks = [channel_prune._capture(layer, ins, "in"), channel_prune._capture(layer, outs, "out")]
            dec(zs[0])
            for h in hooks:
                h.remove()
            got = channel_prune.design(layer, ins[0]) @ channel_prune.as_matrix(layer)
            if layer.bias is not None:
                got = got + layer.bias
            want = outs[0].permute(0, 2, 1).reshape(-1, outs[0].shape[1])
            assert torch.allclose(got, want, atol=1e-4 * want.abs().max()), name


def test_refit_lowers_every_layers_error_and_the_students(teacher, zs):
    teacher_dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    student = parts.fold_weight_norm(distill.decoder_student(teacher, 128, "scratch"))
    keep = channel_prune.choose_channels(teacher_dec, zs, 128)
    assert [len(k) for k in keep] == [128, 64, 32, 16]
    assert all(int(k.max()) < w for k, w in zip(keep, channel_prune.stage_widths(teacher_dec)))
    channel_prune.slice_decoder(teacher_dec, student, keep)
    from lib.training.losses import mel_l1
    with torch.no_grad():
        before = mel_l1(student(zs[2]), teacher_dec(zs[2]))
    errors = channel_prune.refit(teacher_dec, student, keep, zs[:2])
    assert all(after <= b + 1e-6 for b, after in errors.values()), errors
    with torch.no_grad():
        after = mel_l1(student(zs[2]), teacher_dec(zs[2]))
    assert after < 0.7 * before, f"refit on two sentences, the student is closer to the teacher on a third " \
                                 f"(mel L1 {float(before):.2f} -> {float(after):.2f})"
    with pytest.raises(ValueError, match="cannot keep"):
        channel_prune.choose_channels(teacher_dec, zs[:1], 1024)


def test_segments_keep_stage_targets_aligned_with_the_waveform(teacher):
    dec = parts.fold_weight_norm(copy.deepcopy(teacher.dec))
    z = torch.randn(1, teacher.hparams["inter_channels"], 40)
    with torch.no_grad():
        wav, _ = channel_prune.stage_outputs(dec, z)
    lat = batches.Latents(["a"], [z], [wav], 256)
    keep = [torch.arange(0, 256, 2), torch.arange(0, 128, 2), torch.arange(0, 64, 2), torch.arange(0, 32, 2)]
    targets = regress_recipe.stage_targets(dec, lat, keep)
    assert targets.rates == [1, 8, 64, 256]
    z_b, y_b, *feats = regress_recipe.segments(lat, targets, 3, 16, np.random.default_rng(0))
    assert z_b.shape == (3, 192, 16) and y_b.shape == (3, 1, 16 * 256)
    assert [f.shape[-1] for f in feats] == [16, 128, 1024, 4096] and [f.shape[1] for f in feats] == [128, 64, 32, 16]
    every = [torch.arange(w) for w in channel_prune.stage_widths(dec)]
    whole = regress_recipe.stage_targets(dec, lat, every)
    batch = regress_recipe.segments(lat, whole, 3, 16, np.random.default_rng(0))
    y_hat, y, terms = regress_recipe.feature_forward(5.0)(dec, batch)
    assert set(terms) == {"loss_feat"} and terms["loss_feat"][0] == 5.0
    shifted = (batch[0], batch[1], *[torch.roll(f, 7, dims=-1) for f in batch[2:]])
    off = float(regress_recipe.feature_forward(5.0)(dec, shifted)[2]["loss_feat"][1])
    assert float(terms["loss_feat"][1]) < 0.3 * off, "the teacher matches its own stage outputs (but at segment " \
                                                      "borders) far better than targets shifted by 7 samples"


def test_ledger_appends_reads_and_says_what_the_last_doubling_bought(tmp_path):
    path = tmp_path / "ledger.csv"
    for hours, pesq in ((0.5, 2.0), (1.0, 2.4), (2.0, 2.6)):
        ledger.append(path, {"run": "r/dec", "part": "decoder", "recipe": "regression-first", "device": "cpu",
                             "cpu_model": "x", "steps": int(hours * 100), "hours": hours, "heldout_pesq": pesq,
                             "heldout_mel_l1": 1 / pesq, "heldout_secs": float("nan"), "commit": "abc",
                             "date": "2026-11-24"})
    book = ledger.read(path)
    assert list(book.columns) == ledger.COLUMNS and len(book) == 3
    d = ledger.last_doubling(book).set_index("run").loc["r/dec"]
    assert (d["heldout_pesq_last_doubling"] == pytest.approx(0.2)
            and d["heldout_pesq_next_doubling"] == pytest.approx(2.8))
    for hours, pesq in ((0.3, 1.2), (0.9, 1.5), (1.5, 1.4)):  # a second recipe, a shorter run
        ledger.append(path, {"run": "a/dec", "part": "decoder", "recipe": "adversarial", "device": "cpu",
                             "cpu_model": "x", "steps": int(hours * 10), "hours": hours, "heldout_pesq": pesq,
                             "heldout_mel_l1": 1 / pesq, "heldout_secs": float("nan"), "commit": "abc",
                             "date": "2026-11-24"})
    eq = ledger.at_equal_hours(ledger.read(path)).set_index("run")
    assert (eq["budget_hours"] == 1.5).all() and eq.loc["r/dec", "hours"] == 1.0 and eq.loc["a/dec", "hours"] == 1.5
    assert list(eq.index) == ["r/dec", "a/dec"] and eq.loc["r/dec", "heldout_pesq"] == 2.4
    assert ledger.at_equal_hours(ledger.read(path), part="istft_decoder").empty
    ledger.append(path, {"run": "n/dec64", "part": "decoder", "recipe": "regression-first",  # another student
                         "device": "cpu", "cpu_model": "x", "steps": 10, "hours": 0.4, "heldout_pesq": 1.0,
                         "heldout_mel_l1": 1.0, "heldout_secs": float("nan"), "commit": "abc", "date": "2026-11-24"})
    one = ledger.at_equal_hours(ledger.read(path), runs=["r/dec", "a/dec"]).set_index("run")
    assert set(one.index) == {"r/dec", "a/dec"} and (one["budget_hours"] == 1.5).all()
    assert (ledger.at_equal_hours(ledger.read(path))["budget_hours"] == 0.4).all()
    with pytest.raises(ledger.LedgerError, match="lacks"):
        ledger.append(path, {"run": "r"})
    pd.DataFrame({"run": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ledger.LedgerError, match="bad.csv lacks the columns"):
        ledger.read(tmp_path / "bad.csv")


def test_regress_job_trains_packs_a_ledger_row_and_resumes_from_the_pack(tmp_path):
    common = ["--width", "64", "--steps", "3", "--corpus-limit", "2", "--calib-batches", "1", "--calib-segments", "2",
              "--calib-frames", "16", "--batch", "1", "--frames", "16", "--checkpoint-every", "3", "--eval-every", "3",
              "--log-every", "1", "--threads", "2", "--noise-scale", "0.667", "--noise-w", "0.8", "--draws", "2"]
    train_job.main(["regress", "--work", str(tmp_path / "w"), *common])
    assert (tmp_path / "w" / "dec64-regress" / "ema.safetensors").exists()
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--ledger", str(tmp_path / "ledger.csv"), "--judged-sentences", "2"])
    module, config = distill.recorded_students(tmp_path / "out")[0]["dec64-regress"]
    judged = ledger.read_judged(tmp_path / ledger.JUDGED.name)  # the judges' scores beside the ledger, per sentence
    assert (len(judged) == 2 * len(run_state.HELDOUT_JUDGES) and set(judged["run"]) == {"w/dec64-regress"}
            and set(judged["steps"]) == {3})
    assert judged[["value", "teacher"]].notna().all().all() and judged["id"].nunique() == 2
    assert config["recipe"] == "regression-first" and config["steps"] == 3 and len(config["keep"]) == 4
    assert 0 < config["hours"] < 0.1
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--ledger", str(tmp_path / "ledger.csv")])
    assert len(ledger.read(tmp_path / "ledger.csv")) == 1, "packed again with no new checkpoint: no second row"
    row = ledger.read(tmp_path / "ledger.csv").iloc[0]
    assert row["run"] == "w/dec64-regress" and row["steps"] == 3 and 1.0 <= row["heldout_pesq"] <= 4.65
    mean_sig = judged.loc[judged["metric"] == "dnsmos_sig", "value"].mean()
    assert row["heldout_sig"] == pytest.approx(mean_sig, abs=1e-4) and 1.0 <= row["heldout_p808"] <= 5.0
    run = json.loads((tmp_path / "w" / "run.json").read_text())
    assert run["threads"] == 2 and run["draws"] == 2 and "regress" in run["command"]
    train_job.main(["regress", "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    *[c if c != "3" else "6" for c in common]])  # --steps is the whole budget: 3 more
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    _, again = distill.recorded_students(tmp_path / "out2")[0]["dec64-regress"]
    assert again["steps"] == 6 and again["hours"] > config["hours"], "steps and hours go on from the packed run"
    assert again["keep"] == config["keep"]


def test_the_frame_rate_targets_are_the_frames_the_decoder_predicts():
    """A decoder that predicted the teacher's own STFT exactly would have no spectral loss and give back the
    teacher's waveform: the targets sit on the decoder's frames (frame t centred on sample t * hop)."""
    from lib.voices.istft_decoder import FrameRateDecoder, stft as istft_stft
    torch.manual_seed(0)
    dec = FrameRateDecoder(8, 16, 1, n_fft=256, hop=64)
    y = torch.randn(2, 1, 40 * 64) * 0.1
    exact = istft_stft(y, 256, 64)[..., :40]
    dec.spectra = lambda z: (exact.abs().clamp_min(1e-12).log(), exact.angle())
    y_hat, _, terms = regress_recipe.spectral_forward(1.0)(dec, (torch.zeros(2, 8, 40), y))
    assert terms["loss_spec"][1].item() < 1e-3
    assert (y_hat - y)[..., 256:-256].abs().max().item() < 1e-4
    shifted = istft_stft(torch.roll(y, 64, -1), 256, 64)[..., :40]  # one frame late
    dec.spectra = lambda z: (shifted.abs().clamp_min(1e-12).log(), shifted.angle())
    assert regress_recipe.spectral_forward(1.0)(dec, (torch.zeros(2, 8, 40), y))[2]["loss_spec"][1].item() > 0.5
    wrapped = (exact.abs().clamp_min(1e-12).log(), exact.angle() + 2 * np.pi)
    dec.spectra = lambda z: wrapped
    assert regress_recipe.spectral_forward(1.0)(dec, (torch.zeros(2, 8, 40), y))[2]["loss_spec"][1].item() < 1e-3


def _train_pack_resume(tmp_path, cmd: str, name: str, common: list) -> tuple:
    """A long run of `cmd` (3 steps in `common`), packed with a ledger row, then a fresh --work from that pack to 5
    steps, packed again: (the first run's curve, the first pack's (module, config), its ledger row, the second's
    config)."""
    train_job.main([cmd, "--work", str(tmp_path / "w"), *common])
    curve = pd.read_csv(tmp_path / "w" / name / "curve.csv")
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--ledger", str(tmp_path / "ledger.csv"), "--judged-sentences", "0"])
    first, row = distill.recorded_students(tmp_path / "out")[0][name], ledger.read(tmp_path / "ledger.csv").iloc[0]
    train_job.main([cmd, "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    *[c if c != "3" else "5" for c in common]])
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    return curve, first, row, distill.recorded_students(tmp_path / "out2")[0][name][1]


def test_regress_istft_job_trains_packs_and_resumes_from_the_pack(tmp_path):
    common = ["--dim", "32", "--blocks", "1", "--steps", "3", "--corpus-limit", "2", "--batch", "1", "--frames", "16",
              "--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1", "--threads", "2"]
    curve, (_, config), row, again = _train_pack_resume(tmp_path, "regress-istft", "istft32x1-regress", common)
    assert "loss_spec" in curve.columns and np.isfinite(curve["loss_spec"].dropna()).all()
    assert config["kind"] == "istft_decoder" and config["recipe"] == "regression-first" and config["steps"] == 3
    assert row["part"] == "istft_decoder"
    assert again["steps"] == 5 and again["hours"] > config["hours"]


def test_regress_hybrid_on_a_teacher_corpus_packs_with_its_corpus_hours_and_resumes(tmp_path):
    """Issue 49: the hybrid decoder streams from a written teacher corpus; its pack is a hybrid_decoder with the kept
    channels, its ledger row says how many hours of teacher speech it learned from, and a fresh run counts on."""
    from lib.jobs import corpus_job
    corpus_job.write(corpus_job.CorpusRun(out=str(tmp_path / "corpus"), limit=3, shard_items=2, templated=10))
    common = ["--width", "16", "--steps", "3", "--corpus", str(tmp_path / "corpus"), "--batch", "1", "--frames", "16",
              "--calib-batches", "1", "--calib-segments", "2", "--calib-frames", "16", "--checkpoint-every", "3",
              "--eval-every", "3", "--log-every", "1", "--threads", "2"]
    curve, (module, config), row, again = _train_pack_resume(tmp_path, "regress-hybrid", "hybrid16s2f16-regress",
                                                             common)
    assert {"loss_spec", "loss_feat"} <= set(curve.columns)
    assert config["kind"] == "hybrid_decoder" and len(config["keep"]) == 3 and module.config["keep_stages"] == 2
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert row["corpus_hours"] == pytest.approx(manifest["hours"], abs=1e-3) and row["part"] == "hybrid_decoder"
    assert again["steps"] == 5
    from huggingface_hub import ModelCard  # issue 51: the pack's card is valid Hub metadata, read back offline
    card = ModelCard.load(tmp_path / "out" / "hybrid16s2f16-regress" / "README.md")
    assert (card.data.base_model, card.data.pipeline_tag, card.data.language) == ("rhasspy/piper-voices",
                                                                                  "text-to-speech", ["en"])
    assert card.data.base_model_relation == "finetune" and {r.metric_type for r in card.data.eval_results} >= {
        "heldout_pesq", "heldout_mel_l1"}
    assert "Not judged" in card.text and "en_US-joe-medium" in card.text and str(tmp_path) not in card.content


def test_regress_flow_job_trains_packs_a_ledger_row_and_resumes_from_the_pack(tmp_path):
    """The half-width flow's long run: regression on the teacher flow with a held-out loss in its curve; `pack` writes
    a loadable flow with its steps and machine-hours and a ledger row whose held-out PESQ and mel L1 are the teacher's
    decoder on the student's latents against the teacher's own audio; a fresh --work from the pack counts on."""
    common = ["--hidden", "16", "--steps", "3", "--corpus-limit", "1", "--batch", "1", "--frames", "16",
              "--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1", "--threads", "2"]
    curve, (_, config), row, again = _train_pack_resume(tmp_path, "regress-flow", "flow16", common)
    assert np.isfinite(curve["heldout_loss"].dropna()).all() and len(curve["heldout_loss"].dropna())
    assert config["kind"] == "flow" and config["recipe"] == "regression-first" and config["steps"] == 3
    assert row["part"] == "flow" and row["run"] == "w/flow16" and 0 < row["heldout_mel_l1"] < 10
    assert -0.5 <= row["heldout_pesq"] <= 4.7
    assert again["steps"] == 5 and again["hours"] > config["hours"]


def test_regress_flow_on_a_teacher_corpus_learns_exact_pairs_and_records_its_hours(tmp_path, teacher):
    """Issue 49: the flow streams from a teacher corpus. Its pairs come from the stored latents through the teacher
    flow's forward pass, so the teacher's reverse pass returns each latent exactly (its loss is zero); the run
    records the corpus's hours."""
    from lib.data.corpus_shards import CorpusStream
    from lib.jobs import corpus_job
    from lib.techniques import distill
    corpus_job.write(corpus_job.CorpusRun(out=str(tmp_path / "corpus"), limit=3, shard_items=2, templated=10))
    z, _ = CorpusStream(tmp_path / "corpus").random_segments(3, 64, np.random.default_rng(0))
    z[-1, :, 40:] = 0.0  # as past an utterance's end
    batch = distill.flow_batch_of_latents(teacher.flow, z)
    assert float(batch[1][-1, 0, 40:].sum()) == 0 and float(batch[1][0].min()) == 1.0
    assert float(distill.flow_loss(teacher.flow, batch)) < 1e-4, "the teacher's reverse pass undoes its forward one"
    train_job.main(["regress-flow", "--work", str(tmp_path / "w"), "--hidden", "16", "--steps", "2", "--corpus",
                    str(tmp_path / "corpus"), "--batch", "2", "--frames", "16", "--checkpoint-every", "2",
                    "--eval-every", "2", "--log-every", "1", "--threads", "2"])
    curve = pd.read_csv(tmp_path / "w" / "flow16" / "curve.csv")
    assert np.isfinite(curve["loss_g"]).all() and np.isfinite(curve["heldout_loss"].dropna()).all()
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    corpus = json.loads((tmp_path / "w" / "run.json").read_text())["corpus"]
    assert corpus["corpus_hours"] == pytest.approx(manifest["hours"], abs=1e-3)


def test_flow_heldout_quality_is_perfect_for_the_teachers_own_flow():
    """The ledger's flow figures judge the voice, not the latent: the teacher's own flow scores the ceiling (its
    audio is the reference), a half-width untrained one far below it."""
    from lib.voices import piper_torch, synth as voices
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    info = {"noise_scale": 0.667, "noise_w": 0.8}
    own = train_job.heldout_quality(teacher, teacher.flow, info, "flow")
    assert own["heldout_mel_l1"] < 1e-4 and own["heldout_pesq"] > 4.4
    untrained = train_job.heldout_quality(teacher, distill.flow_student(teacher, 96), info, "flow")
    assert untrained["heldout_mel_l1"] > 0.1 and untrained["heldout_pesq"] < 3.0


def test_regress_frontend_job_trains_packs_a_ledger_row_and_resumes_from_the_pack(tmp_path):
    """The front-end student's long run: regression on the teacher's prior statistics and durations with a held-out
    loss in its curve; `pack` writes a loadable front end (its feed-forward width read back from the weights) with its
    steps and machine-hours and a ledger row; a fresh --work from the pack counts on."""
    common = ["--hidden", "16", "--filter", "32", "--steps", "3", "--corpus-limit", "2", "--batch", "2",
              "--checkpoint-every", "3", "--eval-every", "3", "--log-every", "1", "--threads", "2"]
    curve, (module, config), row, again = _train_pack_resume(tmp_path, "regress-frontend", "fe16", common)
    assert np.isfinite(curve["heldout_loss"].dropna()).all() and len(curve["heldout_loss"].dropna())
    assert config["kind"] == "frontend" and config["recipe"] == "regression-first" and config["steps"] == 3
    assert module.config["hidden_channels"] == 16 and module.config["filter_channels"] == 32
    assert row["part"] == "frontend" and row["run"] == "w/fe16" and 0 < row["heldout_mel_l1"] < 10
    assert -0.5 <= row["heldout_pesq"] <= 4.7
    assert again["steps"] == 5 and again["hours"] > config["hours"]


def test_the_judges_score_the_teachers_own_decoder_as_the_teacher_and_judge_packs_backfills(tmp_path):
    """The held-out judging pairs each sentence with the teacher's own audio: the teacher's own decoder scores its
    exact scores (difference 0 on every judge), and `judge-packs` judges a committed pack once, at its steps."""
    from lib.voices.artefacts import save_part
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    own = run_state.heldout_judged(teacher, teacher.dec, {"noise_scale": 0.667, "noise_w": 0.8}, "decoder", 2)
    assert set(own["metric"]) == set(run_state.HELDOUT_JUDGES) and len(own) == 2 * len(run_state.HELDOUT_JUDGES)
    assert np.allclose(own["value"], own["teacher"], atol=1e-4)
    assert set(ledger.judge_means(own)) == set(ledger.JUDGE_COLUMNS), \
        "a student's WER stays out of the adapters' column"
    scored = len(run_state._SCORED)  # the same audio again (every pack's teacher clips): scored once per process
    assert run_state.heldout_judged(teacher, teacher.dec, {"noise_scale": 0.667, "noise_w": 0.8}, "decoder",
                                    2).equals(own)
    assert len(run_state._SCORED) == scored
    dec = distill.decoder_student(teacher, 16)
    save_part(parts.fold_weight_norm(dec), tmp_path / "packs" / "run" / "dec16", "decoder",
              parts.decoder_build(teacher, 16), extra={"student": "dec16", "steps": 7, "hours": 0.25})
    for _ in range(2):  # the second time: judged already at 7 steps, nothing added
        train_job.main(["judge-packs", "--packs", str(tmp_path / "packs" / "run" / "dec16"), "--judged",
                        str(tmp_path / "judged.csv"), "--noise-scale", "0.0", "--noise-w", "0.0", "--sentences", "2"])
    judged = ledger.read_judged(tmp_path / "judged.csv")
    assert len(judged) == 2 * len(run_state.HELDOUT_JUDGES)
    assert set(judged["run"]) == {"run/dec16"} and set(judged["steps"]) == {7} and set(judged["hours"]) == {0.25}
    sig = judged[judged["metric"] == "dnsmos_sig"]
    assert (sig["value"] - sig["teacher"]).mean() < -0.2, "an untrained 16-channel decoder is far below the teacher"
    wer = judged[judged["metric"] == "wer"]
    assert (wer["teacher"] < 0.5).all() and (wer["value"] > wer["teacher"]).any(), \
        "its words are lost, the teacher's not"
    older = judged[judged["metric"] != "wer"]  # a pack judged before WER was a judge: only WER is added, once
    older.to_csv(tmp_path / "judged.csv", index=False)
    train_job.main(["judge-packs", "--packs", str(tmp_path / "packs" / "run" / "dec16"), "--judged",
                    str(tmp_path / "judged.csv"), "--noise-scale", "0.0", "--noise-w", "0.0", "--sentences", "2"])
    again = ledger.read_judged(tmp_path / "judged.csv")
    assert len(again) == len(judged) and again.groupby("metric").size().eq(2).all()
    assert np.allclose(again[again["metric"] == "wer"]["value"], wer["value"]), "the same audio, the same words"


def test_frontend_heldout_quality_is_perfect_for_the_teachers_own_encoder(teacher):
    """The ledger's front-end figures: the teacher's own text encoder (its statistics on its own durations) scores
    the ceiling, an untrained x_low student far below it."""
    from lib.techniques import frontend_student as fs
    own = fs.frontend_student(teacher, hidden=192, filter_channels=768)
    own.enc_p = teacher.enc_p  # the durations play no part: the teacher's are used
    q = train_job.heldout_quality(teacher, own, {}, "frontend")
    assert q["heldout_mel_l1"] < 1e-4 and q["heldout_pesq"] > 4.4
    from lib.jobs import run_state  # noise off, the reference is what the teacher itself speaks
    refs, _ = run_state.frontend_heldout(teacher, own, noise_scale=0.0)
    ids = voices.PiperFrontend(voices.joe_paths()[1]).sentence_ids(text.harvard_sentences([31])[:1])[0]
    with torch.no_grad():
        spoken = teacher.infer(torch.tensor([ids]), torch.tensor([len(ids)]), noise_scale=0.0, noise_scale_w=0.0)[0]
    assert refs[0].shape == spoken.shape and torch.allclose(refs[0], spoken, atol=1e-4)
    untrained = train_job.heldout_quality(teacher, fs.frontend_student(teacher, 96, 384), {}, "frontend")
    assert untrained["heldout_mel_l1"] > 0.1 and untrained["heldout_pesq"] < 3.0


def test_bundle_and_adversarial_phase_count_device_hours_not_machine_hours(tmp_path, monkeypatch, teacher):
    """The GPU path of a long run (lib.voices.teacher_bundle, `regress-istft --adversarial-steps`): a bundle's fp16
    teacher and phoneme ids stand in for the voice package; the adversarial phase starts from the regression pack
    under its own name with a warm-restarted cosine; a pack of a run that trained on a GPU keeps its machine-hours
    and counts device-hours, naming the GPU in the config and the ledger."""
    from lib.voices import teacher_bundle
    from lib.voices.artefacts import save_part
    from lib.voices.istft_decoder import FrameRateDecoder
    sents = text.harvard_sentences([11, 31])
    teacher_bundle.write_bundle(tmp_path / "bundle", sents)
    monkeypatch.setenv(teacher_bundle.BUNDLE_ENV, str(tmp_path / "bundle"))
    rounded = teacher_bundle.teacher().state_dict()
    assert all(torch.allclose(rounded[k], v, rtol=1e-3, atol=1e-4) for k, v in teacher.state_dict().items())
    fe = voices.PiperFrontend(voices.joe_paths()[1])
    assert teacher_bundle.sentence_ids(sents[:2]) == fe.sentence_ids(sents[:2])
    with pytest.raises(teacher_bundle.BundleError, match="h01_01"):
        teacher_bundle.sentence_ids(text.harvard_sentences([1])[:1])
    dec = FrameRateDecoder(teacher.hparams["inter_channels"], 32, 1)
    save_part(dec, tmp_path / "init" / "istft32x1-regress", "istft_decoder", dec.config,
              extra={"steps": 3, "hours": 0.5, "recipe": "regression-first"})
    train_job.main(["regress-istft", "--work", str(tmp_path / "w"), "--init-from", str(tmp_path / "init"),
                    "--dim", "32", "--blocks", "1", "--steps", "5", "--adversarial-steps", "2", "--warm-restart",
                    "--lr-warmup", "4", "--discriminators", "mpd", "--corpus-limit", "2", "--batch", "1",
                    "--frames", "16", "--checkpoint-every", "2", "--eval-every", "0", "--log-every", "1",
                    "--threads", "2"])
    curve = pd.read_csv(tmp_path / "w" / "istft32x1-adv" / "curve.csv")
    assert curve["lr"].iloc[0] == pytest.approx(5e-4 * 2 / 4)  # the warm-up again, not the old cosine's end
    assert np.isfinite(curve["loss_adv"]).all()
    monkeypatch.delenv(teacher_bundle.BUNDLE_ENV)
    info = json.loads((tmp_path / "w" / "run.json").read_text())
    assert info["device"] == "cpu" and info["recipe"] == "regression-first+adversarial"
    (tmp_path / "w" / "run.json").write_text(json.dumps({**info, "device": "cuda", "gpu": "Some GPU"}))  # as on one
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--ledger", str(tmp_path / "ledger.csv"), "--judged-sentences", "0"])
    config = json.loads((tmp_path / "out" / "istft32x1-adv" / "config.json").read_text())
    assert config["steps"] == 5 and config["hours"] == 0.5 and config["device_hours"] > 0
    assert config["device"] == "Some GPU" and ledger.read(tmp_path / "ledger.csv")["device"].iloc[0] == "Some GPU"


def test_bundle_names_what_it_lacks(tmp_path, monkeypatch):
    from lib.voices import teacher_bundle
    monkeypatch.setenv(teacher_bundle.BUNDLE_ENV, str(tmp_path))
    with pytest.raises(teacher_bundle.BundleError, match="teacher.safetensors is missing"):
        teacher_bundle.teacher()


def test_device_site_stands_in_for_piper_and_librosa_where_neither_is_installed(tmp_path):
    """lib.jobs.device_site: on a machine without piper-tts and librosa (PYTHONPATH's first folder), piper's training
    code imports and `librosa.filters.mel` gives librosa's own basis for the saved arguments, and refuses others."""
    import subprocess
    import sys
    import librosa
    from lib.jobs.device_site import write_site
    site = write_site(tmp_path / "site")
    code = ("import numpy as np, librosa, piper; from piper.train.vits import models; from librosa.filters import mel; "
            "np.save('m.npy', mel(sr=22050, n_fft=1024, n_mels=80, fmin=0.0, fmax=None)); "
            "print(librosa.__file__, piper.__file__)\n"
            "try:\n    mel(sr=16000, n_fft=512, n_mels=80)\nexcept KeyError as e:\n    print('refused', e)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout
    assert str(site / "librosa") in out and str(site / "piper") in out and "refused" in out and "16000_512_80" in out
    assert np.array_equal(np.load(tmp_path / "m.npy"), librosa.filters.mel(sr=22050, n_fft=1024, n_mels=80))


def test_the_wheels_for_a_bare_gpu_machine_are_pinned_to_this_machines_versions(tmp_path):
    """The wheels a bare GPU machine lacks are asked for at the versions installed here, for its Python and
    platform, without dependencies; one downloads from the registry as a wheel of that version."""
    from importlib import metadata
    from lib.jobs import device_site
    cmd = device_site.wheel_command(tmp_path)
    assert cmd[cmd.index("--python-version") + 1] == device_site.GPU_PYTHON and "--no-deps" in cmd
    pins = [a for a in cmd if "==" in a]
    assert pins == [f"{n}=={metadata.version(n)}" for n in device_site.BARE_GPU_WHEELS]
    device_site.write_wheels(tmp_path / "w", names=("docstring-parser",))
    got = [p.name.split("-")[:2] for p in (tmp_path / "w").glob("*.whl")]
    assert got == [["docstring_parser", metadata.version("docstring-parser")]]


def test_long_runs_plot_has_a_panel_per_part_and_its_legends_outside(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    path = tmp_path / "ledger.csv"
    for run, part, pesq, secs in (("r/dec", "decoder", 2.0, float("nan")), ("f/flow", "flow", 3.0, float("nan")),
                                  ("s/full", "adapter", float("nan"), 0.7)):
        ledger.append(path, {"run": run, "part": part, "recipe": "x", "device": "cpu", "cpu_model": "x", "steps": 1,
                             "hours": 0.5, "heldout_pesq": pesq, "heldout_mel_l1": 0.3, "heldout_secs": secs,
                             "commit": "abc", "date": "2026-11-26"})
    fig = ledger.plot_parts(ledger.read(path))
    fig.canvas.draw()
    axes = fig.axes
    assert [a.get_title(loc="left") for a in axes] == ["decoder", "flow", "adapter"]
    for ax in axes:  # each legend sits right of its axes, not over the curves
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1


def test_regress_istft_apnet_arm_starts_from_the_regression_pack_and_packs_under_its_own_name(tmp_path):
    """The discriminator-free arm is a run configuration of regress-istft: --amp-weight/--phase-weight swap the
    spectral term for APNet's losses, the run `istft<d>x<b>-apnet` starts from the regression pack and counts on
    from its steps and machine-hours, and its recipe is named in run.json and the pack."""
    from lib.voices.artefacts import save_part
    from lib.voices.istft_decoder import FrameRateDecoder
    dec = FrameRateDecoder(192, 32, 1)
    save_part(dec, tmp_path / "init" / "istft32x1-regress", "istft_decoder", dec.config,
              extra={"steps": 3, "hours": 0.5, "recipe": "regression-first"})
    train_job.main(["regress-istft", "--work", str(tmp_path / "w"), "--init-from", str(tmp_path / "init"),
                    "--dim", "32", "--blocks", "1", "--steps", "6", "--warm-restart", "--amp-weight", "45",
                    "--phase-weight", "100", "--corpus-limit", "1", "--batch", "1", "--frames", "16",
                    "--checkpoint-every", "3", "--eval-every", "0", "--log-every", "1", "--threads", "2"])
    curve = pd.read_csv(tmp_path / "w" / "istft32x1-apnet" / "curve.csv")
    assert len(curve) == 6 - 3 and "loss_spec" not in curve.columns  # --steps is the total, the pack had 3
    assert np.isfinite(curve[["loss_amp", "loss_ip", "loss_gd", "loss_iaf"]]).all().all()
    assert json.loads((tmp_path / "w" / "run.json").read_text())["recipe"] == "regression-first+apnet"
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    config = json.loads((tmp_path / "out" / "istft32x1-apnet" / "config.json").read_text())
    assert config["steps"] == 6 and config["hours"] > 0.5 and config["recipe"] == "regression-first+apnet"


def test_a_cheap_adversarial_phase_names_what_is_not_pipers():
    """The ledger's recipe names say which lighter discriminators, precision and window an adversarial phase used;
    piper's own (mpd, mrd) keep the name they had."""
    from lib.jobs import regress_job, run_configs
    plain = run_configs.RegressIstft(work="w", adversarial_steps=10, discriminators=["mpd", "mrd"])
    assert plain.recipe_name() == "regression-first+adversarial"
    cheap = run_configs.RegressIstft(work="w", adversarial_steps=10, discriminators=["wave-unet-small"],
                                     disc_bf16=True, disc_segment=2048)
    assert cheap.recipe_name() == "regression-first+adversarial(wave-unet-small, bf16, 2048 samples)"
    rec = cheap.recipe(0)
    assert rec.discriminators == ("wave-unet-small",) and rec.disc_bf16 and rec.disc_segment == 2048
    assert regress_job.apnet_name("istft192x6-regress") == "istft192x6-apnet"
    assert plain.phase_name("istft192x6-regress") == "istft192x6-adv"  # a judged voice of its own per discriminator
    assert cheap.phase_name("istft192x6-regress") == "istft192x6-adv-wave-unet-small"
    alone = run_configs.RegressIstft(work="w", adversarial_steps=10, discriminators=["mrd"], disc_bf16=True)
    assert alone.phase_name("istft192x6-regress") == "istft192x6-adv-mrd"  # MRD alone is not piper's ensemble
    assert alone.recipe_name() == "regression-first+adversarial(mrd, bf16)"
    assert run_configs.RegressIstft(work="w", adversarial_steps=10).phase_name("istft192x6-regress") == "istft192x6-adv"
    faster = run_configs.Regress(work="w", adversarial_steps=10, discriminators=["wave-unet-small"], lr_d=1e-3)
    assert faster.recipe(0).lr_d == 1e-3 and cheap.recipe(0).lr_d == 1e-4  # piper's rate unless told
    assert faster.phase_name("dec128-regress") == "dec128-adv-wave-unet-small-lrd1e-03"  # its own run and voice
    assert faster.recipe_name() == "regression-first+adversarial(wave-unet-small, lr_d 0.001)"
    gan = run_configs.RegressIstft(work="w", adversarial_steps=10, discriminators=["mpd-2"], gan_objective=True)
    assert gan.recipe(0).gan_objective and not faster.recipe(0).gan_objective
    assert gan.phase_name("istft192x6-regress") == "istft192x6-adv-mpd-2-gan"
    assert gan.recipe_name() == "regression-first+adversarial(mpd-2, HiFi-GAN objective)"
    with pytest.raises(ValueError, match="gan_objective"):  # nothing to switch to without discriminators
        run_configs.RegressIstft(work="w", gan_objective=True).recipe(0)


def test_a_varied_front_end_goes_on_from_the_harvard_front_ends_pack(tmp_path):
    """Issue 39: `--varied-sentences` names the part `fe<h>-varied`, adds varied text to its training sentences and
    the next ones of that family to its held-out check, and starts from the Harvard front end's pack, counting on."""
    common = ["--hidden", "16", "--filter", "32", "--corpus-limit", "2", "--batch", "2", "--checkpoint-every", "3",
              "--eval-every", "3", "--log-every", "1", "--threads", "2"]
    train_job.main(["regress-frontend", "--work", str(tmp_path / "w"), "--steps", "3", *common])
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    train_job.main(["regress-frontend", "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    "--varied-sentences", "2", "--steps", "5", *common])
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    first = distill.recorded_students(tmp_path / "out")[0]["fe16"][1]
    varied = distill.recorded_students(tmp_path / "out2")[0]["fe16-varied"][1]
    assert varied["kind"] == "frontend" and varied["steps"] == 5 and varied["hours"] > first["hours"]
    assert np.isfinite(pd.read_csv(tmp_path / "w2" / "fe16-varied" / "curve.csv")["heldout_loss"].dropna()).all()


def test_an_adversarial_phase_packs_its_discriminators_and_a_run_from_the_pack_resumes_them(tmp_path):
    """Issue 66: `regress-istft --adversarial-steps` packs MRD (weights and moments, safetensors) beside the
    generator with the discriminators' steps in its config; a run started from that pack (--init-part names it)
    loads them instead of fresh ones and counts their steps on; piper's MPD, over the size limit, is named as left
    out rather than packed."""
    from lib.training import disc_state, discriminators
    from lib.voices.artefacts import save_part
    from lib.voices.istft_decoder import FrameRateDecoder
    dec = FrameRateDecoder(192, 32, 1)
    save_part(dec, tmp_path / "init" / "istft32x1-regress", "istft_decoder", dec.config,
              extra={"steps": 3, "hours": 0.5, "recipe": "regression-first"})
    common = ["--dim", "32", "--blocks", "1", "--corpus-limit", "1", "--batch", "1", "--frames", "16",
              "--checkpoint-every", "3", "--eval-every", "0", "--log-every", "1", "--threads", "2", "--warm-restart",
              "--discriminators", "mrd", "mpd-2", "--disc-warmup", "1"]
    train_job.main(["regress-istft", "--work", str(tmp_path / "w"), "--init-from", str(tmp_path / "init"),
                    "--steps", "6", "--adversarial-steps", "3", *common])
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu",
                    "--disc-limit-mb", "16"])
    name = "istft32x1-adv-mrd-mpd-2"
    config = json.loads((tmp_path / "out" / name / "config.json").read_text())
    assert config["disc_steps"] == 3 and config["discriminators"] == ["mrd"]
    assert "mpd-2" in config["discriminators_left_out"]
    assert disc_state.info(tmp_path / "out" / name)["discriminators"] == ["mrd"]
    packed = disc_state.info(tmp_path / "out" / name)
    train_job.main(["regress-istft", "--work", str(tmp_path / "w2"), "--init-from", str(tmp_path / "out"),
                    "--init-part", name, "--steps", "8", "--adversarial-steps", "2", *common])
    train_job.main(["pack", "--work", str(tmp_path / "w2"), "--out", str(tmp_path / "out2"), "--device", "cpu"])
    again = json.loads((tmp_path / "out2" / name / "config.json").read_text())
    assert again["steps"] == 8 and again["disc_steps"] == 3 + 2 and packed["disc_steps"] == 3
    from safetensors.torch import load_file
    first = load_file(str(tmp_path / "out" / name / disc_state.WEIGHTS))
    d = discriminators.build(["mrd"])
    opt = torch.optim.AdamW(d.parameters())
    assert disc_state.load(tmp_path / "out" / name, d, opt)["loaded"] == ["mrd"]
    assert all(torch.equal(p, first[k]) for k, p in d.named_parameters())
    with pytest.raises(Exception, match="init-part"):
        train_job.main(["regress-istft", "--work", str(tmp_path / "w3"), "--init-from", str(tmp_path / "out"),
                        "--init-part", "nothing-here", "--steps", "8", "--adversarial-steps", "2", *common])
