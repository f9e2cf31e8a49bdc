"""Asymmetric round-to-nearest per group; the AutoAWQ "gemm" packing is lmrt's own (lmrt/formats/awq.py).

Per group of ``g`` inputs of one output row: ``scale = (max - min) / 15`` (rounded to float16,
as stored), ``zero = round(-min / scale)`` in 0..15, ``q = clamp(round(w / scale) + zero, 0, 15)``,
``w' = (q - zero) * scale``. The fake-quantized weights the search and evaluation use are exactly
what the packed checkpoint dequantizes to (in float32).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmrt.formats.awq import pack_awq


def quantize_groups(w: torch.Tensor, group_size: int, bits: int = 4):
    """Quantize the last dim of ``w`` in groups of ``group_size``.

    w [..., in] -> q [..., n_group, g] (float, integral 0..2^bits-1), zeros [..., n_group] (same),
    scales [..., n_group] (float32 values that are exact float16).
    """
    if w.shape[-1] % group_size:
        raise ValueError(f"group size {group_size} does not divide the input size {w.shape[-1]}")
    max_int = 2**bits - 1
    wg = w.float().reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size)  # [..., n_group, g]
    wmax, wmin = wg.amax(-1), wg.amin(-1)
    scales = ((wmax - wmin).clamp(min=1e-5) / max_int).half().float()
    zeros = (-torch.round(wmin / scales)).clamp(0, max_int)
    q = (torch.round(wg / scales[..., None]) + zeros[..., None]).clamp(0, max_int)
    return q, zeros, scales


def fake_quantize(w: torch.Tensor, group_size: int, bits: int = 4) -> torch.Tensor:
    """Quantize then dequantize ``w`` [..., in] per group; float32, same shape.

    Equal to ``(q - zero) * scale`` of ``quantize_groups``, written as clamp(round(w / scale), -zero,
    max - zero) * scale in place: the search calls this for every candidate, and it is memory-bound.
    """
    max_int = 2**bits - 1
    wg = w.float().reshape(*w.shape[:-1], w.shape[-1] // group_size, group_size)  # [..., n_group, g]
    wmin, wmax = torch.aminmax(wg, dim=-1)
    scales = ((wmax - wmin).clamp(min=1e-5) / max_int).half().float()[..., None]
    zeros = (-torch.round(wmin / scales[..., 0])).clamp(0, max_int)[..., None]
    out = torch.div(wg, scales).round_()
    torch.clamp(out, -zeros, max_int - zeros, out=out)
    return out.mul_(scales).reshape(w.shape)


@dataclass
class QuantizedWeight:
    """One linear's 4-bit weight, in the [out, in] orientation of ``nn.Linear``."""

    q: torch.Tensor  # uint8 [out, in], 0..15
    zeros: torch.Tensor  # uint8 [out, in/g], 0..15
    scales: torch.Tensor  # float16 [out, in/g]
    group_size: int

    @classmethod
    def from_weight(cls, w: torch.Tensor, group_size: int) -> "QuantizedWeight":
        q, zeros, scales = quantize_groups(w, group_size)
        return cls(q.reshape(w.shape).to(torch.uint8), zeros.to(torch.uint8), scales.half(), group_size)

    def dequantize(self) -> torch.Tensor:
        """float32 [out, in]: (q - zero) * scale, group by group."""
        g = self.group_size
        zeros = self.zeros.float().repeat_interleave(g, dim=1)
        scales = self.scales.float().repeat_interleave(g, dim=1)
        return (self.q.float() - zeros) * scales

    def to_awq(self) -> dict[str, torch.Tensor]:
        """AutoAWQ gemm tensors, packed by lmrt/formats/awq.py: qweight int32 [in, out/8], qzeros int32
        [in/g, out/8], scales fp16 [in/g, out]."""
        packed = pack_awq(self.q.t().numpy(), self.zeros.t().numpy(), self.scales.t().contiguous().numpy())
        return dict(zip(("qweight", "qzeros", "scales"), (torch.from_numpy(a) for a in packed)))
