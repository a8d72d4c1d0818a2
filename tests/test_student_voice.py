"""The 5x voice assembled from students (frame-rate iSTFT decoder, narrow flow, x_low front end) runs on every CPU
engine of notebook 05 with the same noise, streams in windows with a look-ahead, and its static window decoder is
NPU-ready. Random students: this shows the plumbing, never quality."""
import numpy as np
import pytest
import torch

from lib.core import audio as lab_audio
from lib.voices import istft_decoder, piper_torch, synth as voices
from lib.techniques import distill, export, frontend_student as fs
from lib.runtimes import bench_engines as eng
from lib.harness import scenarios


@pytest.fixture(scope="module")
def student():
    teacher = piper_torch.load_piper_torch(voices.joe_paths()[0])
    torch.manual_seed(0)
    dec = istft_decoder.FrameRateDecoder(192, dim=64, blocks=2)
    return distill.with_parts(teacher, decoder=dec, flow=distill.flow_student(teacher, 32, n_layers=2),
                              frontend=fs.frontend_student(teacher))


@pytest.fixture(scope="module")
def ids():
    return voices.PiperFrontend(voices.joe_paths()[1]).phoneme_ids("The birch canoe slid on the smooth planks.")[0]


def test_student_voice_runs_alike_in_pytorch_and_onnx_runtime(student, ids, tmp_path_factory):
    paths = export.export_noise_input(student, tmp_path_factory.mktemp("student"), chunk_frames=16, context_frames=8)
    torch_engine = eng.TorchEngine(student, "cpu", "fp32", threads=2)
    ort_engine = eng.OnnxEngine(paths, "ort-cpu", threads=2)
    a, b = torch_engine.synth([ids], seed=3)[0], ort_engine.synth([ids], seed=3)[0]
    assert a.size == b.size > 22050 // 2
    assert lab_audio.snr_db(a, b) > 40, "the same voice, the same noise: the same audio"
    ready = export.npu_readiness(paths["decoder"])
    assert ready["static_ready"] and ready["random_ops"] == []


def test_streaming_the_frame_rate_decoder_needs_look_ahead_that_covers_its_receptive_field(student, ids):
    """Inside an utterance, windows with 24 frames of context each side (the decoder sees +-21 frames, the iSTFT
    +-2) reproduce the whole utterance's audio; with 2 frames of context the chunk borders differ (far lower SNR).
    The utterance's own first and last frames are left out: there the window's zero padding and the whole pass's
    convolution padding differ, which a trained decoder meets only in silence."""
    engine = eng.TorchEngine(student, "cpu", "fp32", threads=2)
    z = engine.latent(ids, seed=1)
    with torch.no_grad():
        whole = student.dec(z).reshape(-1).numpy()
    inner = slice(24 * 256, (z.shape[-1] - 24) * 256)
    snr = {}
    for context in (24, 2):
        chunked = np.concatenate([c for _, c in scenarios.stream_latent(engine, z, 16, context)])
        assert chunked.size == whole.size
        snr[context] = lab_audio.snr_db(whole[inner], chunked[inner])
    assert snr[24] > 60 and snr[2] < snr[24] - 20, snr
