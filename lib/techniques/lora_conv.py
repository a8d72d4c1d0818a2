"""LoRA layers that reach a HiFi-GAN decoder's dilated and transposed 1-D convolutions, registered with PEFT's
custom-module mechanism (`LoraConfig._register_custom_module`), so adapters save and load as ordinary PEFT adapters.

PEFT's Conv1d LoRA builds its `lora_A` without the base layer's dilation (its output would be longer than the
layer's), and PEFT has no LoRA for ConvTranspose1d: in a piper voice's decoder only conv_pre, 3 of 18 resblock
convolutions and conv_post could carry adapters. Here `lora_A` copies the base layer's geometry (kernel, stride,
padding, dilation; output padding for a transposed one) and `lora_B` is a 1x1 convolution, as in PEFT's own layer.
Written here because PEFT ships neither; the rest (scaling, dropout, merge bookkeeping, saving) is PEFT's.
"""
from __future__ import annotations

import torch
from peft.tuners.lora.layer import Conv1d as PeftLoraConv1d
from torch import nn


class DilatedLoraConv1d(PeftLoraConv1d):
    """PEFT's Conv1d LoRA with `lora_A` dilated as its base layer (identical to PEFT's where the dilation is 1)."""

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs) -> None:
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        base = self.get_base_layer()
        if tuple(base.dilation) == (1,):
            return
        self.lora_A[adapter_name] = nn.Conv1d(self.in_features, r, base.kernel_size, base.stride, base.padding,
                                              dilation=base.dilation, bias=False)
        if config.init_lora_weights:
            self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)


class LoraConvTranspose1d(PeftLoraConv1d):
    """LoRA for ConvTranspose1d: `lora_A` a transposed convolution of the base layer's geometry into `r` channels,
    `lora_B` a 1x1 convolution out; B starts at zero, so the layer equals its base at initialisation."""

    def _get_in_out_features(self, module):
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        return base.in_channels, base.out_channels

    def update_layer(self, adapter_name, r, lora_alpha, config, **kwargs) -> None:
        super().update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config, **kwargs)
        base = self.get_base_layer()
        self.lora_A[adapter_name] = nn.ConvTranspose1d(self.in_features, r, base.kernel_size, base.stride,
                                                       base.padding, base.output_padding, dilation=base.dilation,
                                                       bias=False)
        self.lora_B[adapter_name] = nn.Conv1d(r, self.out_features, 1, bias=bool(config.lora_bias))
        if config.init_lora_weights:
            self.reset_lora_parameters(adapter_name, config.init_lora_weights)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def get_delta_weight(self, adapter) -> torch.Tensor:
        """The merged weight's change, in ConvTranspose1d's layout [in, out, kernel]: B's 1x1 map after A's taps."""
        a = self.lora_A[adapter].weight.float()  # [in, r, k]
        b = self.lora_B[adapter].weight.float()[..., 0]  # [out, r]
        return (torch.einsum("irk,or->iok", a, b) * self.scaling[adapter]).to(self.lora_A[adapter].weight.dtype)


CUSTOM_MODULES = {nn.ConvTranspose1d: LoraConvTranspose1d, nn.Conv1d: DilatedLoraConv1d}


def register(config):
    """The LoraConfig `config` with these layers registered (PEFT matches the first type a target is an instance
    of); call it before `get_peft_model` and before `PeftModel.from_pretrained` (the mapping is not saved)."""
    config._register_custom_module(CUSTOM_MODULES)
    return config
