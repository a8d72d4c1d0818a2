"""LoRA that reaches a decoder's dilated and transposed convolutions (issue 50, item 4): each layer equals its base
convolution at initialisation, learns, merges exactly, and saves and loads as a normal PEFT adapter."""
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from lib.techniques import finetune, lora_conv


class Tiny(nn.Module):
    """A HiFi-GAN stage in miniature: a transposed upsampling, a dilated residual convolution, a plain one."""

    def __init__(self):
        super().__init__()
        self.up = nn.ConvTranspose1d(8, 4, 16, 8, padding=4)
        self.res = nn.Conv1d(4, 4, 3, dilation=3, padding=3)
        self.post = nn.Conv1d(4, 1, 7, padding=3)

    def forward(self, x):
        return self.post(torch.relu(self.res(torch.relu(self.up(x)))))


def _adapted(model, r=2):
    return get_peft_model(model, lora_conv.register(LoraConfig(r=r, lora_alpha=r,
                                                               target_modules=["up", "res", "post"])))


def test_each_layer_equals_its_base_at_initialisation_and_keeps_its_geometry():
    torch.manual_seed(0)
    base, x = Tiny(), torch.randn(2, 8, 10)
    ref = base(x)
    peft = _adapted(base)
    assert torch.equal(peft(x), ref)
    up, res = peft.base_model.model.up, peft.base_model.model.res
    assert isinstance(up, lora_conv.LoraConvTranspose1d) and isinstance(res, lora_conv.DilatedLoraConv1d)
    assert res.lora_A["default"].dilation == (3,) and up.lora_A["default"].stride == (8,)
    for layer, inp in ((up, x), (res, torch.randn(2, 4, 80))):
        assert layer.lora_B["default"](layer.lora_A["default"](inp)).shape == layer.get_base_layer()(inp).shape


def test_an_adapter_saves_loads_and_merges_as_peft_does(tmp_path):
    torch.manual_seed(1)
    base, x = Tiny(), torch.randn(2, 8, 10)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    peft = _adapted(base)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(p, std=0.1)
    y = peft(x)
    fresh = Tiny()
    fresh.load_state_dict(state)
    assert not torch.allclose(y, fresh(x), atol=1e-4), "the adapter moves the output"
    peft.save_pretrained(tmp_path)
    loaded = PeftModel.from_pretrained(fresh, tmp_path, config=lora_conv.register(LoraConfig.from_pretrained(tmp_path)))
    assert torch.allclose(loaded(x), y, atol=1e-6)
    merged = loaded.merge_and_unload()
    assert type(merged.up) is nn.ConvTranspose1d and torch.allclose(merged(x), y, atol=1e-5)


def test_the_voices_targets_reach_the_decoders_upsampling_and_dilated_layers():
    from lib.voices.teacher_bundle import teacher
    voice = teacher()
    targets = finetune.lora_targets(voice)
    dec = [t for t in targets if t.startswith("dec.")]
    assert any(t.startswith("dec.ups.") for t in dec)
    dilated = [t for t in dec if tuple(getattr(voice.get_submodule(t), "dilation", (1,))) != (1,)]
    assert len(dilated) >= 6
    counts = finetune.target_counts(targets)
    assert counts["decoder"] == len(dec) and counts["text path"] == 0
