"""The parts of a voice by kind, as the config of a saved part names them (after ESPnet's AVAILABLE_GENERATERS): the
HiFi-GAN decoder and the flow (piper's own classes), the frame-rate decoder, the hybrid decoder (the teacher's first
stages, then an iSTFT head) and the x_low front end. What rebuilds each (its `build` arguments), which parts of a
voice a student replaced, and the one weight-norm fold."""
from __future__ import annotations

from typing import Callable


def _decoder(build: dict):
    from piper.train.vits.models import Generator
    b = dict(build)
    return Generator(b["inter_channels"], b["resblock"], tuple(b["resblock_kernel_sizes"]),
                     [tuple(d) for d in b["resblock_dilation_sizes"]], tuple(b["upsample_rates"]),
                     b["upsample_initial_channel"], tuple(b["upsample_kernel_sizes"]))


def _flow(build: dict):
    from piper.train.vits.models import ResidualCouplingBlock
    return ResidualCouplingBlock(build["channels"], build["hidden_channels"], build["kernel_size"],
                                 build["dilation_rate"], build["n_layers"], n_flows=build["n_flows"])


def _istft_decoder(build: dict):
    from lib.voices.istft_decoder import FrameRateDecoder  # deferred: torch; voices.synth imports parts
    return FrameRateDecoder(**build)


def _hybrid_decoder(build: dict):
    from lib.voices.hybrid_decoder import HybridDecoder  # deferred: torch; voices.synth imports parts
    return HybridDecoder(**build)


def _frontend(build: dict):
    from lib.voices.frontend import FrontEnd  # deferred: torch; voices.synth imports parts
    return FrontEnd(**build)


PARTS: dict[str, Callable[[dict], object]] = {  # torch loads with the first part built, not with this module
    "decoder": _decoder,
    "flow": _flow,
    "istft_decoder": _istft_decoder,
    "hybrid_decoder": _hybrid_decoder,
    "frontend": _frontend,
}


def build_part(kind: str, build: dict):
    """An untrained module of `kind` from its config's `build` arguments."""
    if kind not in PARTS:
        raise ValueError(f"cannot build a part of kind {kind!r}")
    return PARTS[kind](build)


def decoder_build(teacher_model, width: int) -> dict:
    """The arguments that rebuild a decoder student of `width` (the 'decoder' part)."""
    hp = teacher_model.hparams
    keys = ("inter_channels", "resblock", "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates",
            "upsample_kernel_sizes")
    return {**{k: hp[k] for k in keys}, "upsample_initial_channel": int(width)}


def hybrid_build(teacher_model, width: int, keep_stages: int, n_fft: int | None = None) -> dict:
    """The arguments that rebuild a hybrid decoder (the 'hybrid_decoder' part): the teacher decoder's first
    `keep_stages` stages at `width`, then an iSTFT head of `n_fft` (default 4 x its hop)."""
    return {**decoder_build(teacher_model, width), "keep_stages": int(keep_stages), "n_fft": n_fft}


def flow_build(teacher_model, hidden: int) -> dict:
    """The arguments that rebuild a flow student of `hidden` channels (the 'flow' part)."""
    wn = teacher_model.flow.flows[0].enc
    return {"channels": teacher_model.hparams["inter_channels"], "hidden_channels": int(hidden),
            "kernel_size": wn.kernel_size[0], "dilation_rate": wn.dilation_rate, "n_layers": wn.n_layers,
            "n_flows": len(teacher_model.flow.flows) // 2}


def fold_weight_norm(module):
    """Fold weight normalisation into plain weights (what inference, export and saved parts hold); a no-op when
    absent. Returns the module in eval mode."""
    import torch
    for m in module.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    return module.eval()


def student_parts(voice) -> dict:
    """{attribute: {kind, build}} for each part of a voice that a student replaced in a way a shape alone cannot
    say (a frame-rate or hybrid decoder, a flow of other hidden width, the x_low front end with its deterministic
    duration predictor): what `with_student_parts` rebuilds before the weights load."""
    from lib.voices.frontend import voice_frontend_build  # deferred: torch; voices.synth imports parts
    from lib.voices.hybrid_decoder import HybridDecoder  # deferred: torch; voices.synth imports parts
    from lib.voices.istft_decoder import FrameRateDecoder  # deferred: torch; voices.synth imports parts
    parts = {}
    if isinstance(voice.dec, FrameRateDecoder):
        parts["dec"] = {"kind": "istft_decoder", "build": dict(voice.dec.config)}
    elif isinstance(voice.dec, HybridDecoder):
        parts["dec"] = {"kind": "hybrid_decoder", "build": dict(voice.dec.config)}
    hidden = voice.flow.flows[0].enc.hidden_channels
    if hidden != voice.hparams["hidden_channels"]:
        parts["flow"] = {"kind": "flow", "build": flow_build(voice, hidden)}
    if getattr(voice, "use_sdp", True) is False:
        parts["frontend"] = {"kind": "frontend", "build": voice_frontend_build(voice)}
    return parts


def with_student_parts(model, parts: dict):
    """The rebuilt teacher with the parts `student_parts` recorded put in, untrained (the weights load next)."""
    from lib.voices.frontend import with_frontend  # deferred: torch; voices.synth imports parts
    for attr, part in parts.items():
        module = fold_weight_norm(build_part(part["kind"], part["build"]))
        if attr == "frontend":
            model = with_frontend(model, module)
        else:
            setattr(model, attr, module)
    return model
