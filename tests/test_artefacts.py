"""Trained parts as loadable files: safetensors + config.json round-trip, a whole student voice exported as ONNX
(one model.onnx + model.onnx.json) that piper's own runtime opens and speaks, and clear errors for a missing or
corrupt file."""
import json

import pytest
import torch

from lib.voices import artefacts, parts, piper_torch, synth as voices
from lib.techniques import distill, export


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    onnx, config = voices.joe_paths()
    teacher = piper_torch.load_piper_torch(onnx)
    dec = distill.decoder_student(teacher, 64, "prune")
    out = tmp_path_factory.mktemp("student")
    artefacts.save_part(parts.fold_weight_norm(dec), out, "decoder", parts.decoder_build(teacher, 64))
    return teacher, dec, out, config


def test_part_round_trips_bit_exactly(student):
    _, dec, out, _ = student
    loaded, config = artefacts.load_part(out)
    assert config["kind"] == "decoder" and config["build"]["upsample_initial_channel"] == 64
    z = torch.randn(1, 192, 20)
    with torch.no_grad():
        assert torch.equal(loaded(z), dec(z))


def test_student_voice_opens_in_piper_runtime(student, tmp_path):
    teacher, dec, _, config = student
    onnx_path = export.export_voice(distill.with_parts(teacher, decoder=dec), tmp_path, config)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["model.onnx", "model.onnx.json"]  # the two files a piper voice is: no external data beside
    spoken = export.piper_runtime_check(onnx_path)
    assert spoken["sample_rate"] == 22050 and spoken["samples"] > 22050 and spoken["rms"] > 1e-3
    ours = voices.load_voice(model_path=onnx_path, config_path=config, noise_scale=0.0, noise_w=0.0, threads=1)
    assert ours.synthesize("Hello there.").duration > 0.3


def test_missing_or_corrupt_files_are_named(student, tmp_path):
    _, _, out, _ = student
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(artefacts.ArtefactError, match="model.safetensors is missing"):
        artefacts.load_part(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(artefacts.ArtefactError, match="model.safetensors cannot be read"):
        artefacts.load_part(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    cfg = json.loads((out / "config.json").read_text())
    cfg["build"]["upsample_initial_channel"] = 128
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(artefacts.ArtefactError, match="does not fit the decoder"):
        artefacts.load_part(tmp_path)
    with pytest.raises(artefacts.ArtefactError, match="model.onnx is missing"):
        export.piper_runtime_check(tmp_path / "model.onnx")


def test_a_whole_voice_variant_round_trips_without_pickles(student, tmp_path):
    """A voice with a pruned 64-channel decoder saved as safetensors + config.json comes back refitted to its
    shapes and speaks the same; a conversion variant is rebuilt by converting again; nothing is a pickle."""
    teacher, dec, _, _ = student
    voice = distill.with_parts(teacher, decoder=parts.fold_weight_norm(dec))
    out = artefacts.save_voice_module(voice, tmp_path / "v")
    assert json.loads((out / "config.json").read_text())["onnx"].endswith(".onnx")
    assert not list(out.glob("*.pt")) and (out / "model.safetensors").stat().st_size > 1e6
    back = artefacts.load_voice_module(out)
    assert back.dec.conv_pre.weight.shape == voice.dec.conv_pre.weight.shape != teacher.dec.conv_pre.weight.shape
    x = torch.tensor([[1, 20, 30, 40, 2]])
    run = lambda m: m.infer(x, torch.tensor([5]), noise_scale=0.0, noise_scale_w=0.0)[0]
    with torch.no_grad():
        assert torch.equal(run(back), run(voice))
    from lib.techniques import compress, variants
    dyn = variants.load_variant(artefacts.save_voice_module(compress.quantize_dynamic_torch(teacher)[0],
                                                            tmp_path / "d", convert={"torch_dynamic_int8": True}))
    with torch.no_grad():
        assert torch.allclose(run(dyn), run(teacher), atol=1e-4)
    with pytest.raises(ValueError, match="convert keys"):
        artefacts.save_voice_module(teacher, tmp_path / "x", convert={"magic": 1})
    with pytest.raises(artefacts.ArtefactError, match="onnx_source"):
        artefacts.save_voice_module(torch.nn.Linear(2, 2), tmp_path / "y")


def test_a_voice_of_students_round_trips_and_runs_in_a_fresh_process(student, tmp_path):
    """Every part a student: a frame-rate decoder, a flow of other width and the x_low front end. Shapes alone cannot
    rebuild them (hidden widths and the duration predictor live in attributes), so the config records each part's
    build; the reloaded voice speaks the same, in this process and in the fresh one the memory probe uses."""
    from lib.harness import bench, evaluate
    from lib.techniques import frontend_student
    from lib.voices import istft_decoder
    teacher = student[0]
    voice = distill.with_parts(teacher, decoder=istft_decoder.FrameRateDecoder(192, 32, 1),
                               flow=distill.flow_student(teacher, 32, n_layers=2),
                               frontend=frontend_student.frontend_student(teacher))
    out = artefacts.save_voice_module(voice, tmp_path / "v")
    assert set(json.loads((out / "config.json").read_text())["parts"]) == {"dec", "flow", "frontend"}
    back = artefacts.load_voice_module(out)
    x = torch.tensor([[1, 20, 30, 40, 2]])
    run = lambda m: m.infer(x, torch.tensor([5]), noise_scale=0.0, noise_scale_w=0.0)[0]
    with torch.no_grad():
        assert torch.equal(run(back), run(voice))
    peak = bench.peak_rss_in_subprocess(evaluate.run_voice_spec, {"name": "piper-joe", "backend": "torch-cpu",
                                                                    "module_dir": str(out)}, ["A small dog ran home."])
    assert peak > 100


def test_a_packed_part_exports_as_a_voice_piper_opens(tmp_path):
    """`tts-lab voice export` (issue 69 item 4): a long run's packed decoder becomes a voice named as piper names
    voices, with a card, that piper's own runtime speaks; three packs (a frame-rate decoder, a flow, a front end: the
    5x voice's shape) become one voice, whose export replaces the one before it in the folder and keeps foreign
    files; a folder that is no pack, or a role given twice, fails with a message naming it."""
    from lib.jobs import export_pack
    from lib.techniques import distill
    from lib.voices import parts, piper_torch, synth as voices
    from lib.voices.artefacts import save_part
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    dec = parts.fold_weight_norm(distill.decoder_student(teacher, 32, "scratch"))
    save_part(dec, tmp_path / "dec32-regress", "decoder", parts.decoder_build(teacher, 32),
              {"recipe": "regression-first"})
    result = export_pack.export([tmp_path / "dec32-regress"], tmp_path / "voice")
    assert sorted(p.name for p in (tmp_path / "voice").iterdir()) == [
        "README.md", "en_US-joe_dec32_regress-medium.onnx", "en_US-joe_dec32_regress-medium.onnx.json", "export.json"]
    assert result["samples"] > 1000 and result["sample_rate"] == teacher.sample_rate
    from huggingface_hub import ModelCard
    card = ModelCard.load(tmp_path / "voice" / "README.md")
    assert card.data.base_model == "rhasspy/piper-voices" and card.data.model_name == "en_US-joe_dec32_regress-medium"
    assert "`dec32-regress`: decoder" in card.text and "en_US-joe-medium.onnx" in card.text
    assert str(tmp_path) not in card.content
    from lib.techniques import frontend_student as fs  # a front end's pack: the teacher speaks through it
    fe = fs.frontend_student(teacher, 16, 32)
    save_part(fe, tmp_path / "fe16", "frontend", fs.frontend_build(teacher, 16, 32), {"recipe": "regression-first"})
    voice = export_pack.voice_from_packs(teacher, [tmp_path / "fe16"])
    assert not voice.use_sdp and torch.equal(voice.enc_p.emb.weight, fe.enc_p.emb.weight)
    from lib.voices.istft_decoder import FrameRateDecoder
    voc = FrameRateDecoder(teacher.hparams["inter_channels"], 16, 1)
    save_part(voc, tmp_path / "istft16x1", "istft_decoder", voc.config, {"recipe": "regression-first"})
    flow = parts.fold_weight_norm(distill.flow_student(teacher, 16))
    save_part(flow, tmp_path / "flow16", "flow", parts.flow_build(teacher, 16), {"recipe": "regression-first"})
    three = [tmp_path / "istft16x1", tmp_path / "flow16", tmp_path / "fe16"]
    (tmp_path / "voice" / "mine.txt").write_text("a user's file")
    result = export_pack.export(three, tmp_path / "voice", name="fast")
    assert result["samples"] > 1000, "one .onnx of the three packs, spoken by piper's runtime"
    assert sorted(p.name for p in (tmp_path / "voice").iterdir()) == [
        "README.md", "en_US-joe_fast-medium.onnx", "en_US-joe_fast-medium.onnx.json", "export.json", "mine.txt"]
    from lib import cli
    with pytest.raises(SystemExit, match="a second decoder"):
        cli.main(["voice", "export", "--pack", str(three[0]), "--pack", str(tmp_path / "dec32-regress"),
                  "--out", str(tmp_path / "v3")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="empty/config.json is missing: not a packed part"):
        cli.main(["voice", "export", "--pack", str(tmp_path / "empty"), "--out", str(tmp_path / "v2")])


def test_export_pack_names_a_cut_short_config(tmp_path):
    """A pack whose config.json was cut short: `export_pack` says which file, not only where the JSON broke; a config
    that is JSON but no pack's names the file too."""
    from lib.jobs import export_pack
    from lib.voices.istft_decoder import FrameRateDecoder
    dec = FrameRateDecoder(192, 8, 1)
    config = artefacts.save_part(dec, tmp_path / "istft8x1", "istft_decoder", dec.config) / "config.json"
    config.write_text(config.read_text()[:31])
    with pytest.raises(ValueError, match=f"{config}.*cut short"):
        export_pack.export([tmp_path / "istft8x1"], tmp_path / "voice")
    config.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{config} is not a pack's config"):
        export_pack.export([tmp_path / "istft8x1"], tmp_path / "voice")


def test_a_part_records_its_teacher_and_is_refused_in_another_voice(tmp_path):
    """Issue 51: a pack names the voice it learned from (sha256 of its ONNX file); another voice refuses it."""
    from types import SimpleNamespace
    from pathlib import Path
    flow = parts.fold_weight_norm(parts.build_part("flow", {"channels": 4, "hidden_channels": 4, "kernel_size": 3,
                                                            "dilation_rate": 1, "n_layers": 1, "n_flows": 1}))
    joe = SimpleNamespace(voice_identity={"voice": "joe.onnx", "sha256": "a" * 64})
    other = SimpleNamespace(voice_identity={"voice": "alba.onnx", "sha256": "b" * 64})
    folder = artefacts.save_part(flow, tmp_path / "flow4", "flow", {"channels": 4, "hidden_channels": 4,
                                 "kernel_size": 3, "dilation_rate": 1, "n_layers": 1, "n_flows": 1}, teacher=joe)
    assert artefacts.load_part(folder, joe)[1]["teacher"]["voice"] == "joe.onnx"
    with pytest.raises(artefacts.ArtefactError, match=r"joe\.onnx.*alba\.onnx"):
        artefacts.load_part(folder, other)
    assert artefacts.load_part(folder)[1]["kind"] == "flow", "without a voice to check against, it loads"
    root = Path(__file__).resolve().parents[1] / "outputs" / "recorded"
    packs = [json.loads(p.read_text()) for p in root.rglob("config.json")]
    packs = [c for c in packs if isinstance(c, dict) and c.get("kind") in parts.PARTS]
    assert packs and all(c.get("teacher", {}).get("voice") == "en_US-joe-medium.onnx" for c in packs)


def test_every_committed_card_is_valid_hub_metadata_offline():
    """Issue 51: each pack's, adapter's and posterior encoder's README.md loads through huggingface_hub with a real
    base model, its relation, the pipeline tag, a language and eval results, and names no local path."""
    import tempfile
    from pathlib import Path
    from huggingface_hub import ModelCard
    root = Path(__file__).resolve().parents[1] / "outputs" / "recorded" / "training"
    cards = [p for p in root.glob("*/*/README.md") if (p.parent / "config.json").exists()]
    assert {p.parent.name for p in cards} >= {"joe-medium", "joe-medium-shifted"}  # the posterior packs have theirs
    assert len(cards) >= 20
    for path in cards:
        card = ModelCard.load(path)
        assert card.data.base_model == "rhasspy/piper-voices" and card.data.pipeline_tag == "text-to-speech", path
        assert card.data.base_model_relation in ("finetune", "adapter") and card.data.language == ["en"], path
        # no folder of the machine it was made on
        local = (str(Path.home()), tempfile.gettempdir(), str(root.parents[2]))
        assert card.data.eval_results and not any(p in card.content for p in local), path


def test_cards_carry_the_base_voices_licence_as_its_own_card_states_it(tmp_path):
    """Issue 69 item 8: a voice's identity records the licence its own MODEL_CARD states; a card's Hub licence is
    the voice's where its card states one for the voice, 'other' where it states only its dataset's (piper's joe:
    'Dataset: CC0'), and its text says what the voice's card states beside the lab's licence for the code."""
    from lib.voices import cards
    made = {}
    for name, card in (("none", None), ("joe", "# Model card for x\n\n## Dataset\n\n* URL: u\n* License: CC0\n"),
                       ("both", "# x\n\n## Dataset\n* License: CC0\n\n## Model\n* License: CC-BY-4.0\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "en_US-x-medium.onnx").write_bytes(name.encode())
        if card:
            (tmp_path / name / "MODEL_CARD").write_text(card)
        made[name] = artefacts.file_identity(tmp_path / name / "en_US-x-medium.onnx")
    assert [made[n]["licence"] for n in made] == ["", "Dataset: CC0", "Dataset: CC0; Model: CC-BY-4.0"]
    assert [cards.hub_licence(made[n]) for n in made] == ["other", "other", "cc-by-4.0"]
    card = cards.export_card(name="en_US-x_y-medium", teacher=made["both"], packs=[], spoke={})
    assert card.data.license == "cc-by-4.0" and "own card states Dataset: CC0; Model: CC-BY-4.0" in card.text
    assert "the lab's code that made it is MIT" in card.text
    assert "came with no card stating a licence" in cards.licence_line(made["none"])
    assert "licence was not recorded" in cards.licence_line({"voice": "old.onnx"})  # a pack from before item 8


def test_an_export_for_sherpa_onnx_speaks_as_piper_does(tmp_path):
    """Issue 69 item 5: `--sherpa` writes the folder sherpa-onnx loads (the model with its metadata, tokens.txt,
    espeak-ng-data from piper's wheel); sherpa-onnx speaks the sentence piper's runtime speaks, noise off: lengths
    within 5 % and log-mel spectra within 0.1 (mean natural-log difference per bin and frame)."""
    import librosa
    import numpy as np
    import onnx
    from piper import PiperVoice, SynthesisConfig
    from lib.jobs import export_pack
    from lib.runtimes import sherpa
    from lib.voices.istft_decoder import FrameRateDecoder
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    voc = FrameRateDecoder(teacher.hparams["inter_channels"], 16, 1)
    artefacts.save_part(voc, tmp_path / "istft16x1", "istft_decoder", voc.config, {"recipe": "regression-first"})
    result = export_pack.export([tmp_path / "istft16x1"], tmp_path / "voice", sherpa=True)
    folder = tmp_path / "voice" / export_pack.SHERPA
    model = folder / "en_US-joe_istft16x1-medium.onnx"
    meta = {p.key: p.value for p in onnx.load(str(model), load_external_data=False).metadata_props}
    assert (meta["comment"], meta["model_type"], meta["voice"], meta["sample_rate"]) == ("piper", "vits", "en-us",
                                                                                       "22050")
    assert (folder / "tokens.txt").read_text().splitlines()[:3] == ["_ 0", "^ 1", "$ 2"]
    assert (folder / sherpa.ESPEAK_DATA / "en_dict").is_file() and result["sherpa_onnx"]["samples"] > 1000
    text = export.CHECK_SENTENCE
    theirs, rate = sherpa.speak(model, text)
    piper = PiperVoice.load(str(tmp_path / "voice" / model.name))
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0, normalize_audio=False)
    ours = np.concatenate([c.audio_float_array for c in piper.synthesize(text, syn_config=quiet)])
    assert rate == piper.config.sample_rate and abs(theirs.size / ours.size - 1) < 0.05
    n = min(theirs.size, ours.size)
    mel = lambda x: np.log(librosa.feature.melspectrogram(y=x[:n], sr=rate, n_mels=80) + 1e-5)
    assert np.abs(mel(theirs) - mel(ours)).mean() < 0.1


def test_a_streaming_export_streams_as_the_whole_voice_speaks(tmp_path):
    """Issue 69 item 6: `--streaming` writes the pair notebook 05 times (text -> latents, a fixed window of latents
    -> audio) and streaming.json; streamed chunk by chunk as it says, a sentence matches the whole synthesis with
    the same noise to notebook 05's chunk bound (MIN_CHUNK_SNR_DB)."""
    from lib.core.results import MIN_CHUNK_SNR_DB
    from lib.harness import scenarios
    from lib.jobs import export_pack
    from lib.runtimes.bench_engines import OnnxEngine
    from lib.voices.istft_decoder import FrameRateDecoder
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    voc = FrameRateDecoder(teacher.hparams["inter_channels"], 16, 1)
    artefacts.save_part(voc, tmp_path / "istft16x1", "istft_decoder", voc.config, {"recipe": "regression-first"})
    result = export_pack.export([tmp_path / "istft16x1"], tmp_path / "voice", sherpa=True, streaming=True)
    folder = tmp_path / "voice" / export_pack.STREAMING
    info = json.loads((folder / export_pack.STREAMING_JSON).read_text())
    assert result["streaming"]["decoder"] == info["decoder"] == f"decoder_{info['window_frames']}.onnx"
    assert result["sherpa_onnx"]["samples"] > 1000
    assert info["hop"] == 256 and info["sample_rate"] == 22050 and "z_noise" in info["inputs"]
    engine = OnnxEngine({"voice": folder / info["whole"], "latent": folder / info["latent"],
                         "decoder": folder / info["decoder"]}, channels=info["channels"], hop=info["hop"],
                        sample_rate=info["sample_rate"])
    ids = voices.PiperFrontend(voices.joe_paths()[1]).phoneme_ids("The birch canoe slid on the smooth planks.")[0]
    (row,) = scenarios.chunk_fidelity(engine, [ids], info["chunk_frames"], info["context_frames"])
    assert row["snr_db"] >= MIN_CHUNK_SNR_DB and abs(row["length_diff_samples"]) < info["hop"] * info["chunk_frames"]
