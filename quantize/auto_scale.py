"""Activation-aware per-input-channel scale search (AWQ's ``auto_scale``).

For a group of linears sharing one input x, candidate scales are ``s = mean|x|^alpha`` (normalised so
that max(s)·min(s) = 1) for alpha on a grid in [0, 1). Each candidate is scored by the error of the
module's output when its weights become ``Q(W·diag(s))·diag(1/s)`` (equivalently: x/s through the
quantised scaled weights); alpha = 0 is plain round-to-nearest, so the pick is never worse than RTN
on the objective. The winner is folded into the op before: ``prev /= s`` (RMSNorm weight, or the
rows of the previous linear), ``W *= s``.

Objectives are a few matrix products per candidate:
- a lone linear (v->o, up->down): the output error over *all* calibration tokens through the Gram
  matrix, ``sum_t |x_t ΔWᵀ|² = tr(ΔW G ΔWᵀ)``, ``G = XᵀX``: no pass over the tokens per candidate;
- a group feeding a non-linear module (q/k/v -> attention, gate/up -> SwiGLU MLP): that module's
  output on a subset of the calibration sequences, run with the candidate weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from .quantizer import fake_quantize

DEFAULT_GRID = 20

Loss = Callable[[Sequence[torch.Tensor]], float]  # fake-quantised weights (one per linear) -> error


@dataclass
class ScaleResult:
    scales: torch.Tensor  # float32 [in]
    alpha: float
    loss: float  # objective at the chosen alpha
    rtn_loss: float  # objective at alpha = 0 (plain round-to-nearest)


def candidate_scales(x_abs_mean: torch.Tensor, alpha: float) -> torch.Tensor:
    """s = mean|x|^alpha, clamped away from 0, normalised so that sqrt(max·min) = 1."""
    s = x_abs_mean.float().pow(alpha).clamp(min=1e-4)
    return s / (s.max() * s.min()).sqrt()


def search_scale(
    x_abs_mean: torch.Tensor,
    weights: Sequence[torch.Tensor],
    loss: Loss,
    group_size: int,
    grid: int = DEFAULT_GRID,
) -> ScaleResult:
    """Pick alpha in {0, 1/grid, ..., (grid-1)/grid} minimising ``loss`` of the scaled-and-quantised weights.

    x_abs_mean [in]: mean |x| per input channel; weights: the group's [out_i, in] float32 weights.
    """
    best = None
    rtn_loss = None
    for i in range(grid):
        alpha = i / grid
        s = candidate_scales(x_abs_mean, alpha)
        value = loss([fake_quantize(w * s, group_size) / s for w in weights])
        if i == 0:
            rtn_loss = value
        if best is None or value < best.loss:
            best = ScaleResult(s, alpha, value, rtn_loss)
    best.rtn_loss = rtn_loss
    return best


def gram_loss(weight: torch.Tensor, gram: torch.Tensor, num_tokens: int) -> Loss:
    """Mean squared output error of one linear over the tokens whose Gram matrix is ``gram`` [in, in]."""
    weight = weight.float()
    denom = float(num_tokens * weight.shape[0])

    def loss(quantized: Sequence[torch.Tensor]) -> float:
        delta = weight - quantized[0]  # [out, in]
        return float(((delta @ gram) * delta).sum()) / denom

    return loss


def module_loss(
    module: nn.Module, param_names: Sequence[str], x: torch.Tensor, call: Callable[..., torch.Tensor]
) -> Loss:
    """Mean squared error of ``call(module, x, params)`` with ``param_names`` replaced by the candidates.

    ``call(module, x, overrides)`` runs the module with the parameter overrides (``{}`` = its own weights)
    and returns its output tensor.
    """
    with torch.no_grad():
        reference = call(module, x, {})

    def loss(quantized: Sequence[torch.Tensor]) -> float:
        with torch.no_grad():
            out = call(module, x, dict(zip(param_names, quantized)))
        return float((out - reference).pow(2).mean())

    return loss


def apply_scale(prev: nn.Module, linears: Sequence[nn.Linear], scales: torch.Tensor) -> None:
    """Fold 1/s into ``prev`` (a norm's weight, or a linear's output rows and bias) and s into ``linears``' inputs."""
    with torch.no_grad():
        s = scales.to(prev.weight.dtype)
        if isinstance(prev, nn.Linear):
            prev.weight.div_(s[:, None])
        else:
            prev.weight.div_(s)
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s)
        for linear in linears:
            linear.weight.mul_(scales.to(linear.weight.dtype)[None, :])
