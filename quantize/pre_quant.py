"""Block-by-block calibration (AWQ's ``run_awq``), and plain round-to-nearest.

For decoder layer i: run it on the cached inputs while capturing the inputs of each linear group,
search the scales of every group on those (fp) inputs, fold them in, search the clips on the scaled
inputs, quantise the layer's linears, then run the quantised layer again: its outputs are layer i+1's
inputs, so later layers calibrate against the errors of earlier ones.

Groups (Llama family: Llama, Mistral, Qwen2; the layer's modules are found by attribute, not class name):
  q/k/v  <- input_layernorm           objective: self_attn output (subset of sequences)
  o      <- v_proj rows               objective: o_proj output (Gram, all tokens); only when v and o
                                      have the same shape, i.e. no GQA (as AutoAWQ)
  gate/up <- post_attention_layernorm objective: mlp output (subset of sequences)
  down   <- up_proj rows              objective: down_proj output (Gram, all tokens)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from . import auto_clip, auto_scale
from .quantizer import QuantizedWeight

LINEAR_NAMES = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
NO_CLIP = ("self_attn.q_proj", "self_attn.k_proj")
DEFAULT_SEARCH_SAMPLES = 2  # sequences the attention / MLP objectives run on (20 candidates each)
_CHUNK = 8  # sequences per forward pass of a layer


@dataclass
class LayerReport:
    index: int
    alphas: dict[str, float] = field(default_factory=dict)  # group -> chosen alpha
    gain: dict[str, float] = field(default_factory=dict)  # group -> objective at alpha / at RTN


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama-family causal LM, checked for the modules AWQ needs."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ValueError(
            f"{type(model).__name__} has no model.layers; only Llama-family decoders (Llama, Mistral, Qwen2) are supported"
        )
    needed = LINEAR_NAMES + ("input_layernorm", "post_attention_layernorm")
    for name in needed:
        try:
            layers[0].get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"decoder layers of {type(model).__name__} lack {name}; only Llama-family decoders (Llama, Mistral, Qwen2) are supported"
            ) from None
    return layers


def quantizable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Full name -> linear, for every linear AWQ quantises (the decoder layers'; not lm_head)."""
    return {
        f"model.layers.{i}.{name}": layer.get_submodule(name)
        for i, layer in enumerate(decoder_layers(model))
        for name in LINEAR_NAMES
    }


def run_rtn(model: nn.Module, group_size: int) -> dict[str, QuantizedWeight]:
    """Plain round-to-nearest of every decoder linear; the model's weights become the fake-quantised ones."""
    quantized = {}
    for name, linear in tqdm(quantizable_linears(model).items(), desc="RTN", unit="linear"):
        quantized[name] = _quantize_in_place(linear, group_size)
    return quantized


def run_awq(
    model: nn.Module,
    calib_ids: torch.Tensor,
    group_size: int,
    clip: bool = True,
    search_samples: int = DEFAULT_SEARCH_SAMPLES,
    grid: int = auto_scale.DEFAULT_GRID,
) -> tuple[dict[str, QuantizedWeight], list[LayerReport]]:
    """AWQ over ``calib_ids`` [n, L]; returns the quantised weights by full linear name, and per-layer reports.

    The model (float32) is modified in place: scales folded, clips applied, linears fake-quantised.
    """
    layers = decoder_layers(model)
    num_samples, seqlen = calib_ids.shape
    search_idx = torch.linspace(0, num_samples - 1, min(search_samples, num_samples)).round().long().unique()
    with torch.no_grad():
        hidden = model.model.embed_tokens(calib_ids).float()  # [n, L, H]
        position_ids = torch.arange(seqlen)[None]
        position_embeddings = model.model.rotary_emb(hidden[:1], position_ids)  # (cos, sin) [1, L, head_dim]
    quantized: dict[str, QuantizedWeight] = {}
    reports = []
    progress = tqdm(layers, desc="AWQ", unit="block")
    for i, layer in enumerate(progress):
        layer_quantized, report = quantize_layer(layer, hidden, position_embeddings, group_size, clip, search_idx, grid)
        quantized.update({f"model.layers.{i}.{name}": qw for name, qw in layer_quantized.items()})
        report.index = i
        reports.append(report)
        hidden = _run_layer(layer, hidden, position_embeddings)
        progress.set_postfix({k: f"a={report.alphas[k]:.2f}" for k in report.alphas})
    return quantized, reports


def quantize_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    position_embeddings,
    group_size: int,
    clip: bool = True,
    search_idx: torch.Tensor | None = None,
    grid: int = auto_scale.DEFAULT_GRID,
) -> tuple[dict[str, QuantizedWeight], LayerReport]:
    """AWQ one decoder layer in place on its inputs ``hidden`` [n, L, H]; returns its quantised linears by local name.

    search_idx: the sequences of ``hidden`` the attention / MLP objectives run on (default: all).
    """
    if search_idx is None:
        search_idx = torch.arange(len(hidden))
    report = LayerReport(-1)
    feats = _capture_inputs(layer, hidden, position_embeddings)
    _search_and_apply_scales(layer, feats, search_idx, position_embeddings, group_size, grid, report)
    quantized = {}
    grams: dict[int, torch.Tensor] = {}  # id(input) -> Gram matrix, shared by linears with one input
    for name in LINEAR_NAMES:
        linear = layer.get_submodule(name)
        if clip and name not in NO_CLIP:
            x = feats[name]  # [N, in], scaled like the weights
            if id(x) not in grams:
                grams[id(x)] = x.t() @ x
            blocks = auto_clip.gram_blocks(grams[id(x)], group_size)
            auto_clip.apply_clip(
                linear.weight.data, auto_clip.search_clip(linear.weight.data, blocks, group_size), group_size
            )
        quantized[name] = _quantize_in_place(linear, group_size)
    return quantized, report


def _quantize_in_place(linear: nn.Linear, group_size: int) -> QuantizedWeight:
    qw = QuantizedWeight.from_weight(linear.weight.data, group_size)
    with torch.no_grad():
        linear.weight.copy_(qw.dequantize().to(linear.weight.dtype))
    return qw


def _call_layer(layer: nn.Module, x: torch.Tensor, position_embeddings) -> torch.Tensor:
    # attention_mask=None with the sdpa attention is causal attention over each whole sequence.
    out = layer(x, attention_mask=None, position_embeddings=position_embeddings)
    return out[0] if isinstance(out, tuple) else out


def _run_layer(layer: nn.Module, hidden: torch.Tensor, position_embeddings) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat(
            [_call_layer(layer, hidden[j : j + _CHUNK], position_embeddings) for j in range(0, len(hidden), _CHUNK)]
        )


def _capture_inputs(layer: nn.Module, hidden: torch.Tensor, position_embeddings) -> dict[str, torch.Tensor]:
    """Run the layer on ``hidden`` [n, L, H]; the input of every linear, name -> [n, L, in] (q/k/v share one)."""
    captured: dict[str, list[torch.Tensor]] = {
        "self_attn.q_proj": [],
        "self_attn.o_proj": [],
        "mlp.gate_proj": [],
        "mlp.down_proj": [],
    }
    hooks = [
        layer.get_submodule(name).register_forward_hook(
            lambda _m, args, _o, name=name: captured[name].append(args[0].detach())
        )
        for name in captured
    ]
    try:
        _run_layer(layer, hidden, position_embeddings)
    finally:
        for hook in hooks:
            hook.remove()
    feats = {name: torch.cat(chunks) for name, chunks in captured.items()}
    feats["self_attn.k_proj"] = feats["self_attn.v_proj"] = feats["self_attn.q_proj"]
    feats["mlp.up_proj"] = feats["mlp.gate_proj"]
    return {
        name: x.reshape(-1, x.shape[-1]) if name in ("self_attn.o_proj", "mlp.down_proj") else x
        for name, x in feats.items()
    }


def _search_and_apply_scales(
    layer, feats, search_idx, position_embeddings, group_size, grid, report: LayerReport
) -> None:
    """Search every group's scales on the captured fp inputs, then fold them all in; the captured inputs are scaled to match."""
    attn, mlp = layer.self_attn, layer.mlp
    plans = []  # (group name, prev module, linears, scales)

    # q/k/v: objective is the attention output on the search sequences.
    x = feats["self_attn.q_proj"]  # [n, L, H]
    qkv = [attn.q_proj, attn.k_proj, attn.v_proj]

    def call_attn(module, xs, overrides):
        return functional_call(
            module, overrides, (xs,), {"position_embeddings": position_embeddings, "attention_mask": None}
        )[0]

    loss = auto_scale.module_loss(attn, ["q_proj.weight", "k_proj.weight", "v_proj.weight"], x[search_idx], call_attn)
    result = auto_scale.search_scale(_abs_mean(x), [m.weight.data.float() for m in qkv], loss, group_size, grid)
    plans.append(("qkv", layer.input_layernorm, qkv, result))

    # o <- v rows: only when every o input channel is one v output channel (no GQA).
    if attn.v_proj.weight.shape == attn.o_proj.weight.shape:
        x = feats["self_attn.o_proj"]  # [N, H]
        loss = auto_scale.gram_loss(attn.o_proj.weight.data, x.t() @ x, len(x))
        result = auto_scale.search_scale(_abs_mean(x), [attn.o_proj.weight.data.float()], loss, group_size, grid)
        plans.append(("o", attn.v_proj, [attn.o_proj], result))

    # gate/up: objective is the MLP output on the search sequences.
    x = feats["mlp.gate_proj"]  # [n, L, H]
    gate_up = [mlp.gate_proj, mlp.up_proj]

    def call_mlp(module, xs, overrides):
        return functional_call(module, overrides, (xs,))

    loss = auto_scale.module_loss(mlp, ["gate_proj.weight", "up_proj.weight"], x[search_idx], call_mlp)
    result = auto_scale.search_scale(_abs_mean(x), [m.weight.data.float() for m in gate_up], loss, group_size, grid)
    plans.append(("gate_up", layer.post_attention_layernorm, gate_up, result))

    # down <- up rows.
    x = feats["mlp.down_proj"]  # [N, I]
    loss = auto_scale.gram_loss(mlp.down_proj.weight.data, x.t() @ x, len(x))
    result = auto_scale.search_scale(_abs_mean(x), [mlp.down_proj.weight.data.float()], loss, group_size, grid)
    plans.append(("down", mlp.up_proj, [mlp.down_proj], result))

    scaled_inputs = {
        "qkv": "self_attn.q_proj",
        "o": "self_attn.o_proj",
        "gate_up": "mlp.gate_proj",
        "down": "mlp.down_proj",
    }
    for group, prev, linears, result in plans:
        auto_scale.apply_scale(prev, linears, result.scales)
        feats[scaled_inputs[group]].div_(result.scales)  # shared tensors: k/v and up see it too
        report.alphas[group] = result.alpha
        report.gain[group] = result.loss / result.rtn_loss if result.rtn_loss else 1.0
    flat: dict[int, torch.Tensor] = {}  # one [N, in] view per captured tensor, so shared inputs stay shared
    for name, x in feats.items():
        feats[name] = flat.setdefault(id(x), x.reshape(-1, x.shape[-1]))


def _abs_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean |x| per channel over all tokens: [..., C] -> [C]."""
    return x.reshape(-1, x.shape[-1]).abs().mean(0)
