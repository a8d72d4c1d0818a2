"""Any Piper voice, not only joe: voices made here with piper-tts's own SynthesizerTrn at x_low and high widths and a
multi-speaker one, random weights, exported the way piper exports (`piper.train.export_onnx`: opset 15, the
decoder's weight norm removed, `sid` for several speakers) with an .onnx.json, then loaded, rebuilt in PyTorch
and checked for parity exactly like joe. A random voice proves the plumbing, never quality."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.core import params
from lib.voices import piper_torch, synth as voices


SHAPES = {
    # piper's x_low: hidden/inter 96, filter 384, the low decoder; 16 kHz
    "x_low": dict(hidden_channels=96, inter_channels=96, filter_channels=384, resblock="2",
                  resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
                  upsample_rates=(8, 8, 4), upsample_initial_channel=256, upsample_kernel_sizes=(16, 16, 8),
                  sample_rate=16000, n_speakers=1),
    # piper's high: resblock type 1 and four upsampling stages from 512 channels
    "high": dict(hidden_channels=192, inter_channels=192, filter_channels=768, resblock="1",
                 resblock_kernel_sizes=(3, 7, 11), resblock_dilation_sizes=((1, 3, 5), (1, 3, 5), (1, 3, 5)),
                 upsample_rates=(8, 8, 2, 2), upsample_initial_channel=512, upsample_kernel_sizes=(16, 16, 4, 4),
                 sample_rate=22050, n_speakers=1),
    # a multi-speaker low voice (3 speakers, speaker embedding of 64)
    "multi": dict(hidden_channels=96, inter_channels=96, filter_channels=384, resblock="2",
                  resblock_kernel_sizes=(3, 5, 7), resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
                  upsample_rates=(8, 8, 4), upsample_initial_channel=128, upsample_kernel_sizes=(16, 16, 8),
                  sample_rate=22050, n_speakers=3, gin_channels=64),
}


def make_piper_voice(folder: Path, shape: str) -> tuple[Path, Path]:
    """A random-weight Piper voice of `shape`, exported as piper exports its checkpoints."""
    import torch
    from piper.train.vits.models import SynthesizerTrn
    spec = dict(SHAPES[shape])
    sample_rate, n_speakers = spec.pop("sample_rate"), spec.pop("n_speakers")
    _, joe_config = voices.joe_paths()
    config = json.loads(Path(joe_config).read_text())
    torch.manual_seed(0)
    model = SynthesizerTrn(n_vocab=config["num_symbols"], spec_channels=513, segment_size=32, n_heads=2, n_layers=6,
                           kernel_size=3, p_dropout=0.0, n_speakers=n_speakers, **spec).eval()
    with torch.no_grad():
        for p in model.parameters():  # trained voices have no two equal tensors (the exporter would merge them)
            p.add_(torch.randn_like(p) * 1e-3)
        model.dec.remove_weight_norm()

    def infer_forward(text, text_lengths, scales, sid=None):  # as piper.train.export_onnx does
        return model.infer(text, text_lengths, noise_scale=scales[0], length_scale=scales[1],
                           noise_scale_w=scales[2], sid=sid)[0].unsqueeze(1)

    model.forward = infer_forward

    x = torch.randint(1, config["num_symbols"], (1, 50), dtype=torch.long)
    args = (x, torch.tensor([50]), torch.tensor([0.667, 1.0, 0.8]))
    names = ["input", "input_lengths", "scales"]
    if n_speakers > 1:
        args, names = args + (torch.tensor([0]),), names + ["sid"]
    onnx_path = folder / f"test-{shape}.onnx"
    import warnings
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(onnx_path), dynamo=False, opset_version=15, input_names=names,
                          output_names=["output"], dynamic_axes={"input": {0: "batch_size", 1: "phonemes"},
                                                                 "input_lengths": {0: "batch_size"},
                                                                 "output": {0: "batch_size", 2: "time"}})
    config["audio"]["sample_rate"] = sample_rate
    config["num_speakers"] = n_speakers
    config["speaker_id_map"] = {f"spk{i}": i for i in range(n_speakers)} if n_speakers > 1 else {}
    config_path = Path(str(onnx_path) + ".json")
    config_path.write_text(json.dumps(config))
    return onnx_path, config_path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    folder = tmp_path_factory.mktemp("own_voices")
    return {shape: make_piper_voice(folder, shape) for shape in SHAPES}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_own_voice_loads_rebuilds_and_matches(made, shape):
    onnx_path, config_path = made[shape]
    hp = piper_torch.load_piper_torch(onnx_path).hparams
    want = dict(SHAPES[shape])
    assert hp["hidden_channels"] == want["hidden_channels"] and hp["filter_channels"] == want["filter_channels"]
    assert hp["resblock"] == want["resblock"] and hp["upsample_rates"] == want["upsample_rates"]
    assert hp["upsample_initial_channel"] == want["upsample_initial_channel"]
    assert hp["n_speakers"] == want["n_speakers"]
    quiet = dict(model_path=onnx_path, config_path=config_path, noise_scale=0.0, noise_w=0.0, normalize=False,
                 threads=1)
    speakers = range(want["n_speakers"]) if want["n_speakers"] > 1 else [None]
    outs = []
    for sid in speakers:
        ort_v = voices.load_voice(backend="ort-cpu", speaker_id=sid, **quiet)
        torch_v = voices.load_voice(backend="torch-cpu", speaker_id=sid, **quiet)
        assert ort_v.sample_rate == want["sample_rate"]
        a = ort_v.synthesize("The birch canoe slid on the smooth planks.").samples
        b = torch_v.synthesize("The birch canoe slid on the smooth planks.").samples
        assert len(a) == len(b) and len(a) > 0
        assert 10 * np.log10(np.mean((a - b) ** 2) / (np.mean(a ** 2) + 1e-20) + 1e-30) < -60
        outs.append(a)
    if len(outs) > 1:
        assert not np.allclose(outs[0][:1000], outs[1][:1000]), "speaker id changed nothing"


def test_speaker_out_of_range_is_named(made):
    onnx_path, config_path = made["multi"]
    with pytest.raises(piper_torch.VoiceFileError, match="speaker id 7 is out of range.*3 speaker"):
        voices.load_voice(model_path=onnx_path, config_path=config_path, speaker_id=7)


def test_unmappable_graph_fails_naming_what(made, tmp_path):
    import onnx
    onnx_path, _ = made["x_low"]
    model = onnx.load(str(onnx_path))
    for init in model.graph.initializer:
        if init.name == "enc_p.proj.weight":
            init.name = "renamed.weight"
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    with pytest.raises(piper_torch.VoiceFileError,
                       match="broken.onnx: cannot read a Piper VITS architecture.*enc_p.proj.weight"):
        piper_torch.load_piper_torch(broken)


def test_profile_voice_file_points_every_notebook_at_it(made, tmp_path, monkeypatch):
    onnx_path, config_path = made["multi"]
    prof = tmp_path / "mine"
    prof.mkdir()
    (prof / "voice.yaml").write_text(f"model: {onnx_path}\nspeaker: 2\n")
    monkeypatch.setattr(params, "PARAMS", tmp_path)
    env = params.voice_env("mine")
    assert env == {"TTS_LAB_VOICE": str(onnx_path), "TTS_LAB_VOICE_CONFIG": str(config_path), "TTS_LAB_SPEAKER": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert voices.piper_paths() == (onnx_path, config_path)
    assert voices.piper_label() == "piper:test-multi"
    assert voices.load_voice(voices.piper_label(), threads=1).speaker_id == 2
    (prof / "voice.yaml").write_text("model: nowhere.onnx\n")
    with pytest.raises(params.ParamsError, match="voice.yaml: the voice's model file .*nowhere.onnx does not exist"):
        params.voice_env("mine")
    (prof / "voice.yaml").write_text(f"model: {onnx_path}\nspeakr: 1\n")
    with pytest.raises(params.ParamsError, match="speakr"):
        params.voice_env("mine")
    out = subprocess.run([str(Path(sys.executable).parent / "tts-lab"), "run", "mine"], capture_output=True, text=True,
                         env={**os.environ, "TTS_LAB_PARAMS": str(tmp_path)}, cwd=Path(__file__).parent.parent)
    assert out.returncode == 2 and "speakr" in out.stderr and "[1/" not in out.stderr, "refused before any notebook"


def test_a_long_run_learns_from_the_voice_it_is_given_and_its_pack_belongs_to_it(made, tmp_path, monkeypatch):
    """Issue 51: `--voice` on the training commands. A frame-rate decoder's run on an x_low voice records that voice's
    sha256 as its teacher in run.json and in its pack, and the lab's own voice refuses the pack, naming both."""
    from lib.core.env import TEACHER_BUNDLE
    from lib.jobs import train_job
    from lib.voices import artefacts
    # recorded, so the test leaves them as found
    for name in (voices.VOICE_ENV, voices.CONFIG_ENV, TEACHER_BUNDLE.name):
        monkeypatch.setenv(name, "")
    onnx_path, _ = made["x_low"]
    train_job.main(["regress-istft", "--voice", str(onnx_path), "--work", str(tmp_path / "w"), "--dim", "16",
                    "--blocks", "1", "--steps", "2", "--corpus-limit", "1", "--batch", "1", "--frames", "8",
                    "--checkpoint-every", "2", "--eval-every", "2", "--log-every", "1"])
    info = json.loads((tmp_path / "w" / "run.json").read_text())
    assert info["teacher"] == artefacts.file_identity(onnx_path)
    monkeypatch.setenv(voices.VOICE_ENV, "")
    monkeypatch.setenv(voices.CONFIG_ENV, "")
    train_job.main(["pack", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    packed = tmp_path / "out" / "istft16x1-regress"
    assert json.loads((packed / "config.json").read_text())["teacher"]["sha256"] == info["teacher"]["sha256"]
    monkeypatch.setenv(voices.VOICE_ENV, "")  # pack set the run's voice for its process: the lab's again
    monkeypatch.setenv(voices.CONFIG_ENV, "")
    joe = piper_torch.load_piper_torch(voices.joe_paths()[0])
    with pytest.raises(artefacts.ArtefactError, match=f"{onnx_path.name}.*en_US-joe-medium"):
        artefacts.load_part(packed, joe)
