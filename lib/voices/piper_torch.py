"""Piper's VITS voice rebuilt in PyTorch from its ONNX export: the architecture read off the graph
(`piper_hparams`) and piper-tts's own `SynthesizerTrn` filled from the initialisers (`load_piper_torch`)."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from lib.voices.parts import fold_weight_norm


class VoiceFileError(FileNotFoundError):
    """A voice model or config file that is missing or unreadable; the message names the file."""


def hop_length(model) -> int:
    """Samples per latent frame of a piper voice (or anything with its hparams): the decoder's upsampling."""
    return int(np.prod(model.hparams["upsample_rates"]))


def check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise VoiceFileError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise VoiceFileError(f"{what} is empty: {path}")
    return path


def _onnx_tables(onnx_path: Path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(onnx_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    return inits, nodes


def _attr(node, name):
    for a in node.attribute:
        if a.name == name:
            return list(a.ints) if a.ints else a.i
    return None


def piper_hparams(inits: dict, nodes: dict) -> dict:
    """SynthesizerTrn arguments read off the ONNX graph, so low/medium/high Piper voices all rebuild."""
    emb = inits[nodes["/enc_p/emb/Gather"].input[0]]
    hidden = emb.shape[1]
    n_layers = len({k.split(".")[3] for k in inits if k.startswith("enc_p.encoder.attn_layers.")})
    k_channels = inits["enc_p.encoder.attn_layers.0.emb_rel_k"].shape[-1]
    ups = sorted(k for k in nodes if k.startswith("/dec/ups.") and nodes[k].op_type == "ConvTranspose")
    rates = tuple(_attr(nodes[u], "strides")[0] for u in ups)
    up_kernels = tuple(inits[f"dec.ups.{i}.weight"].shape[2] for i in range(len(ups)))
    n_res = len({k.split(".")[2] for k in inits if k.startswith("dec.resblocks.")}) // len(ups)
    res_kernels, res_dils, res_type = [], [], "2"
    for j in range(n_res):
        convs = sorted(n for n in nodes if n.startswith(f"/dec/resblocks.{j}/") and nodes[n].op_type == "Conv")
        if any("convs1" in c for c in convs):
            res_type = "1"
            convs = [c for c in convs if "convs1" in c]
        res_kernels.append(inits[nodes[convs[0]].input[1]].shape[2])
        res_dils.append(tuple(_attr(nodes[c], "dilations")[0] for c in convs))
    speakers = inits.get("emb_g.weight")
    return dict(
        n_speakers=int(speakers.shape[0]) if speakers is not None else 1,
        gin_channels=int(speakers.shape[1]) if speakers is not None else 0,
        n_vocab=emb.shape[0], spec_channels=513, segment_size=32,
        inter_channels=inits["enc_p.proj.weight"].shape[0] // 2, hidden_channels=hidden,
        filter_channels=inits["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[0],
        n_heads=hidden // k_channels, n_layers=n_layers,
        kernel_size=inits["enc_p.encoder.ffn_layers.0.conv_1.weight"].shape[2],
        p_dropout=0.0, resblock=res_type, resblock_kernel_sizes=tuple(res_kernels),
        resblock_dilation_sizes=tuple(res_dils), upsample_rates=rates,
        upsample_initial_channel=inits["dec.conv_pre.weight"].shape[0], upsample_kernel_sizes=up_kernels)


TRAINING_ONLY_PREFIXES = ("dp.post_", "dp.flows.1.")


def load_piper_torch(onnx_path: Path):
    """piper's SynthesizerTrn rebuilt from the ONNX file (`build_piper_torch`), a fresh copy each call: the build
    (about 2 s) is kept per process, keyed by the file's path, size and modification time."""
    import copy
    onnx_path = check_file(onnx_path, "voice model")
    st = onnx_path.stat()
    return copy.deepcopy(_built(str(onnx_path.resolve()), st.st_size, st.st_mtime_ns))


@functools.lru_cache(maxsize=4)
def _built(path: str, size: int, mtime_ns: int):
    return build_piper_torch(Path(path))


def inference_model(hp: dict):
    """piper's SynthesizerTrn for the architecture `hp` (piper_hparams), as a voice's weights fill it: no posterior
    encoder, the decoder's and flow's weight norm folded (the export holds folded weights), seeded initial values
    for the training-only parts."""
    import torch
    from piper.train.vits.models import SynthesizerTrn
    torch.manual_seed(0)
    model = SynthesizerTrn(**hp)
    del model.enc_q
    fold_weight_norm(model.dec)
    fold_weight_norm(model.flow)
    return model


def build_piper_torch(onnx_path: Path):
    """Build piper's SynthesizerTrn (inference path: enc_p, dp, flow, dec) and fill it from the ONNX initialisers.

    Most initialisers carry PyTorch names. The rest are found through the graph: the text embedding is the
    input of /enc_p/emb/Gather, weight-normed flow convolutions were folded into anonymous tensors read from
    their Conv node, and the duration flow's ElementwiseAffine `logs` survives only as exp(-logs).
    The posterior flows of the duration predictor (and the flow the reverse pass skips) are training-only and
    absent from the graph; they keep their initial values and are never used at inference.
    """
    import torch

    onnx_path = check_file(onnx_path, "voice model")
    try:
        inits, nodes = _onnx_tables(onnx_path)
    except Exception as exc:
        raise VoiceFileError(f"could not read ONNX model {onnx_path}: {exc}") from None
    try:
        hp = piper_hparams(inits, nodes)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise VoiceFileError(f"{onnx_path.name}: cannot read a Piper VITS architecture off the graph: "
                             f"{type(exc).__name__} {exc} is missing or unexpected (is it a piper export?)") from None
    model = inference_model(hp)
    state = model.state_dict()
    loaded, skipped = {}, []
    for key, tensor in state.items():
        value = _find_weight(key, inits, nodes)
        if value is None:
            if key.startswith(TRAINING_ONLY_PREFIXES):
                skipped.append(key)
                continue
            raise VoiceFileError(f"{onnx_path.name}: no weight found for {key}")
        if tuple(value.shape) != tuple(tensor.shape):
            raise VoiceFileError(f"{onnx_path.name}: {key} has shape {value.shape}, "
                                 f"model expects {tuple(tensor.shape)}")
        loaded[key] = torch.from_numpy(np.array(value, dtype=np.float32))
    model.load_state_dict(loaded, strict=False)
    model.eval()
    model.onnx_source = str(onnx_path)
    model.training_only_keys = skipped
    model.hparams = hp
    model.sample_rate = voice_sample_rate(onnx_path)
    return model


def voice_sample_rate(onnx_path: Path) -> int | None:
    """The voice's output rate, from the config piper keeps beside the model (`<model>.onnx.json`); None without one."""
    config = Path(str(onnx_path) + ".json")
    if not config.is_file():
        return None
    import json
    return int(json.loads(config.read_text())["audio"]["sample_rate"])


def _find_weight(key: str, inits: dict, nodes: dict):
    if key in inits:
        return inits[key]
    if key == "enc_p.emb.weight":
        return inits[nodes["/enc_p/emb/Gather"].input[0]]
    if key == "dp.flows.0.logs":  # reverse pass: exp(-logs), folded to a constant or kept as Exp of -logs
        if "/dp/flows.0/Exp_output_0" in inits:
            return -np.log(inits["/dp/flows.0/Exp_output_0"])
        exp = nodes.get("/dp/flows.0/Exp")
        if exp is not None and exp.input[0] in inits:
            return -inits[exp.input[0]]
    module, leaf = key.rsplit(".", 1)
    for op in ("Conv", "ConvTranspose"):
        node = nodes.get("/" + "/".join(_onnx_scope(module)) + f"/{op}")
        if node is not None:
            idx = {"weight": 1, "bias": 2}[leaf]
            if idx < len(node.input) and node.input[idx] in inits:
                return inits[node.input[idx]]
    return None


def _onnx_scope(module: str) -> list[str]:
    """'flow.flows.0.enc.in_layers.1' -> ['flow', 'flows.0', 'enc', 'in_layers.1'] (torch.onnx scope names)."""
    parts, out = module.split("."), []
    for p in parts:
        if p.isdigit() and out:
            out[-1] = f"{out[-1]}.{p}"
        else:
            out.append(p)
    return out
