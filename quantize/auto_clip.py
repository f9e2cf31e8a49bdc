"""Per-group weight clipping search (AWQ's ``auto_clip``).

For each output row and group, the clip ``max|w|·r`` for r on a grid (1.0 down to 0.55, as AutoAWQ)
bounds the weights symmetrically before asymmetric quantisation; the r minimising that group's
contribution to the linear's output error is kept. The error of group k of row n over the
calibration tokens is ``Δw_nkᵀ G_k Δw_nk`` with G_k the k-th diagonal g x g block of the input's
Gram matrix, so each candidate ratio is one batched product over all rows and groups.
q/k are not clipped (AutoAWQ skips them: their error is amplified by the softmax).
"""

from __future__ import annotations

import torch

from .quantizer import fake_quantize

DEFAULT_RATIOS = tuple(1.0 - i / 20 for i in range(10))  # 1.0, 0.95, ..., 0.55


def gram_blocks(gram: torch.Tensor, group_size: int) -> torch.Tensor:
    """Diagonal blocks of the Gram matrix: [in, in] -> [n_group, g, g]."""
    n_group = gram.shape[0] // group_size
    g4 = gram.reshape(n_group, group_size, n_group, group_size)  # [k, i, l, j]
    return g4.diagonal(dim1=0, dim2=2).permute(2, 0, 1).contiguous()  # [k, i, j]


def search_clip(weight: torch.Tensor, blocks: torch.Tensor, group_size: int, ratios=DEFAULT_RATIOS) -> torch.Tensor:
    """Best clip value per row and group: float32 [out, n_group].

    weight [out, in]; blocks [n_group, g, g] from ``gram_blocks`` of the linear's input.
    """
    out_features, in_features = weight.shape
    n_group = in_features // group_size
    wg = weight.float().reshape(out_features, n_group, group_size)  # w [out, in] -> [out, n_group, g]
    max_abs = wg.abs().amax(-1)  # [out, n_group]
    best_err = torch.full_like(max_abs, float("inf"))
    best_clip = max_abs.clone()
    for ratio in ratios:
        clip = (max_abs * ratio)[..., None]
        quantized = fake_quantize(torch.clamp(wg, -clip, clip), group_size)  # [out, n_group, g]
        delta = wg - quantized
        delta_k = delta.transpose(0, 1)  # [n_group, out, g]
        err = (torch.bmm(delta_k, blocks) * delta_k).sum(-1).t()  # [out, n_group]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_clip = torch.where(better, max_abs * ratio, best_clip)
    return best_clip


def apply_clip(weight: torch.Tensor, clip: torch.Tensor, group_size: int) -> None:
    """Clamp ``weight`` [out, in] in place to ±clip [out, n_group] per group."""
    with torch.no_grad():
        wg = weight.view(weight.shape[0], -1, group_size)
        c = clip.to(weight.dtype)[..., None]
        wg.copy_(torch.maximum(torch.minimum(wg, c), -c))
