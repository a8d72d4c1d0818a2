"""Track B of the fine-tuning study: SpeechT5 full fine-tuning, LoRA and QLoRA through the same code the `full`
profile runs on the hub model, here on a tiny random SpeechT5 and a tiny dataset saved locally. The loss must go
down and adapters must save and load; nothing claims quality."""
import numpy as np
import pytest
import torch

from lib.core import text
from lib.core.audio import Audio
from lib.voices import hub
from lib.techniques import speecht5
from lib.harness.judges import Judges
from lib.jobs import speecht5_bench


from tests import tiny_hub


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("t5")
    model_dir, _ = tiny_hub.tiny_speecht5(tmp)
    data = tiny_hub.tiny_speech_dataset(tmp / "lj", "ljspeech", n=4, sr=16000)
    sentences, refs = hub.reference_set("ljspeech", 4, source=str(data), sample_rate=16000)
    from transformers import SpeechT5Processor
    proc = SpeechT5Processor.from_pretrained(model_dir)
    examples = speecht5.speecht5_examples(proc, sentences, refs, reduction_factor=2)
    xvec = np.random.default_rng(0).normal(size=64)
    return tmp, model_dir, proc, examples, xvec


def _fixed_loss(net, examples, xvec, pad_id, train_mode=False):
    """The loss on one fixed batch of every example, seeded. QLoRA is measured in train mode: on a CPU with
    avx512_bf16, bitsandbytes repacks 4-bit weights for its inference kernel at the first eval-mode call, and
    a repacked layer can no longer train."""
    batch = speecht5.speecht5_batches(examples, xvec, len(examples), pad_id)(np.random.default_rng(123))
    torch.manual_seed(0)
    net.train(train_mode)
    with torch.no_grad():
        return float(speecht5.speecht5_loss(net, *batch))


@pytest.mark.parametrize("method,lr", [("full", 2e-3), ("lora-r4", 1e-2), ("qlora-r4", 1e-2)])
def test_speecht5_methods_learn_and_adapters_round_trip(setup, method, lr):
    tmp, model_dir, proc, examples, xvec = setup
    pad = proc.tokenizer.pad_token_id
    assert all(m.shape[0] % 2 == 0 for _, m in examples)
    net = speecht5.prepare_speecht5(str(model_dir), method)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters())
    if method == "full":
        assert trainable == total
    else:
        assert 0 < trainable < 0.5 * total
        names = [n for n, p in net.named_parameters() if p.requires_grad]
        assert all("lora_" in n for n in names) and any("q_proj" in n for n in names)
    if method.startswith("qlora"):
        import bitsandbytes as bnb
        assert any(isinstance(m, bnb.nn.Linear4bit) for m in net.modules()), "base not in 4-bit"
    qlora = method.startswith("qlora")
    before = _fixed_loss(net, examples, xvec, pad, train_mode=qlora)
    batches = speecht5.speecht5_batches(examples, xvec, 4, pad)
    from lib.training import loop as training
    recipe = training.Recipe(steps=60, lr=lr, lr_decay=1.0, grad_clip=10.0, checkpoint_every=60, log_every=1)
    log = training.Trainer(net, batches, recipe, tmp / f"ckpt_{method}", loss_fn=speecht5.speecht5_step,
                           progress=None).fit()
    after = _fixed_loss(net, examples, xvec, pad, train_mode=qlora)
    assert len(log.loss) == 60 and after < before - 0.05, (before, after)
    if method != "full":
        net.save_pretrained(tmp / f"adapter_{method}")
        from peft import PeftModel
        base = speecht5.prepare_speecht5(str(model_dir), "full").eval()
        reloaded = PeftModel.from_pretrained(base, str(tmp / f"adapter_{method}"))
        trained = {k.replace(".default", ""): v for k, v in net.state_dict().items() if "lora_" in k}
        loaded = {k.replace(".default", ""): v for k, v in reloaded.state_dict().items() if "lora_" in k}
        assert trained.keys() == loaded.keys() and all(torch.equal(trained[k], loaded[k]) for k in trained)
        if not qlora:
            assert abs(_fixed_loss(reloaded, examples, xvec, pad) - after) < 1e-4


def test_speecht5_bad_method_is_named(setup):
    with pytest.raises(ValueError, match="'lora-attention-r4'"):
        speecht5.prepare_speecht5(str(setup[1]), "lora-attention-r4")


def test_speecht5_track_runs_end_to_end_on_the_tiny_model(setup, tmp_path, monkeypatch):
    from lib.core import results
    tmp, model_dir, proc, examples, xvec = setup
    monkeypatch.setattr(results, "OUTPUTS", tmp_path)
    vocoder_dir = model_dir.parent / "speecht5_hifigan"
    data = tiny_hub.tiny_speech_dataset(tmp_path / "lj", "ljspeech", n=4, sr=16000)
    w = results.ResultWriter("t", "nb")
    judges = Judges(asr="pocketsphinx", dnsmos=False, workers=1, cache_path=tmp_path / "c.sqlite")
    table, curves, per_clip = speecht5_bench.speecht5_track(
        str(model_dir), str(vocoder_dir), "ljspeech", ["full", "lora-r4", "qlora-r4"], 4, tmp_path / "work", judges, w,
        train_limit=3, eval_limit=1, speaker=xvec, source=str(data), progress=False)
    t = table.set_index("variant")
    assert t.loc["full", "trained_pct_of_full"] == 100.0 and t.loc["lora-r4", "trained_pct_of_full"] < 50
    assert t.loc["lora-r4", "adapter_mb"] < t.loc["full", "adapter_mb"]
    assert set(per_clip["variant"]) == {"base", "full", "lora-r4", "qlora-r4"}
    assert "mcd_db" in per_clip and "asr_hyp" in per_clip and len(curves) == 12
    rows = w.frame()
    assert set(rows[rows["metric"] == "wer"]["variant"]) == {"base", "full", "lora-r4", "qlora-r4"}
    assert set(rows[rows["metric"] == "trainable_params"]["variant"]) == {"full", "lora-r4", "qlora-r4"}


def test_linear4bit_to_float_keeps_the_nf4_product():
    import bitsandbytes as bnb
    torch.manual_seed(0)
    dense = torch.nn.Sequential(torch.nn.Linear(128, 64))
    q = torch.nn.Sequential(bnb.nn.Linear4bit(128, 64, quant_type="nf4", compute_dtype=torch.float32))
    q[0].load_state_dict(dense[0].state_dict())
    q[0].weight = bnb.nn.Params4bit(dense[0].weight.data.clone(), requires_grad=False, quant_type="nf4").to("cpu")
    back = speecht5.linear4bit_to_float(q)
    assert isinstance(back[0], torch.nn.Linear) and not isinstance(back[0], bnb.nn.Linear4bit)
    err = (back[0].weight - dense[0].weight).abs().mean() / dense[0].weight.abs().mean()
    assert 0.01 < err < 0.2, err


def test_speecht5_cost_counts_each_method(setup, tmp_path):
    tmp, model_dir, proc, examples, xvec = setup
    sentences = [text.Sentence(id=f"s{i}", text=t) for i, t in enumerate(
        ["the birch canoe slid on the smooth planks", "glue the sheet to the dark blue background"])]
    rng = np.random.default_rng(0)
    recordings = {s.id: Audio((0.1 * rng.standard_normal(16000)).astype(np.float32), 16000) for s in sentences}
    inputs = speecht5_bench.speecht5_cost_inputs(tmp_path / "in", sentences, recordings,
                                                 [s.text for s in sentences] * 5)
    small = dict(hidden_size=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, speech_decoder_prenet_units=64,
                 encoder_layerdrop=0.0, decoder_layerdrop=0.0)
    rows = {r["variant"]: r for r in speecht5_bench.speecht5_cost(inputs, ["full", "lora-r4"], steps=2, warmup=1,
                                                             batch=2, device="cpu", config=small)}
    assert rows["full"]["trainable_params"] == rows["full"]["total_params"]
    assert 0 < rows["lora-r4"]["trainable_params"] < 0.2 * rows["full"]["trainable_params"]
    assert rows["lora-r4"]["adapter_mb"] < rows["full"]["adapter_mb"]
    assert rows["full"]["train_s_per_step"] > 0 and rows["full"]["peak_gpu_mb"] is None
