"""GGUF Q4_0 / Q4_1 tensors onto the core's 4-bit layout, losslessly (NumPy only).

A GGUF matrix of N rows (outputs) and K columns (inputs) is stored row by row in
blocks of 32 inputs:

    Q4_0  18 bytes: d float16, qs[16]          w = (q - 8) * d   -> scale d, min -8 d
    Q4_1  20 bytes: d float16, m float16, qs[16]  w = q * d + m  -> scale d, min m

and byte j of qs holds input j in its low nibble and input j + 16 in its high nibble:
exactly the core's order within a run of 32, so the code bytes are copied as they are,
with group size 32.

Exactness (core_to_dense = code * scale + min in float32, vs gguf.quants.dequantize):
  Q4_0: d, 8 d, q d and (q - 8) d all have at most 15 significant bits, so every one is
        exact in float32 and code * d + (-8 d) == (q - 8) * d exactly (mul-add or FMA).
  Q4_1: q * d is exact, q * d + m is rounded once to float32 (the same operations and
        order as gguf.quants.dequantize, so equal bit for bit); against the exact real
        value the error is at most half an ulp of the result (relative <= 2^-24). A core
        that fuses the multiply-add (FMA) gets the same bound.

Other tensor types (F32, F16, Q8_0, K-quants, ...) are not 4-bit-with-one-(scale, min)-per-32
and are dequantised to float32 by the ``gguf`` package (``import_tensor``).
"""

from __future__ import annotations

import numpy as np

GROUP_SIZE = 32  # GGUF Q4_0 / Q4_1 blocks
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}


class GgufFormatError(ValueError):
    """A GGUF tensor's bytes do not match its type and shape."""


def q4_0_to_core(blocks: np.ndarray, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_0 bytes of a [num_rows, num_cols] matrix -> (codes uint8 [N, K/2], scales f32 [N, K/32], mins f32)."""
    data = _blocks(blocks, "Q4_0", num_rows, num_cols)  # [N, K/32, 18]
    d = np.ascontiguousarray(data[:, :, 0:2]).view(np.float16)[:, :, 0].astype(np.float32)
    codes = np.ascontiguousarray(data[:, :, 2:]).reshape(num_rows, num_cols // 2)
    mins = d * np.float32(-8.0) + np.float32(0.0)  # exact; +0.0 turns -0.0 into 0.0
    return codes, d, mins


def q4_1_to_core(blocks: np.ndarray, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 bytes of a [num_rows, num_cols] matrix -> (codes uint8 [N, K/2], scales f32 [N, K/32], mins f32)."""
    data = _blocks(blocks, "Q4_1", num_rows, num_cols)  # [N, K/32, 20]
    d = np.ascontiguousarray(data[:, :, 0:2]).view(np.float16)[:, :, 0].astype(np.float32)
    m = np.ascontiguousarray(data[:, :, 2:4]).view(np.float16)[:, :, 0].astype(np.float32)
    codes = np.ascontiguousarray(data[:, :, 4:]).reshape(num_rows, num_cols // 2)
    return codes, d, m


def import_tensor(data: np.ndarray, type_name: str, shape: tuple[int, ...]):
    """One GGUF tensor (``ReaderTensor.data``, its type's name, its numpy shape: [rows, cols] or [n]).

    Returns the core's (codes, scales, mins) for a Q4_0 / Q4_1 matrix, else a float32 array
    of ``shape`` (F32 and F16 widened exactly, other types via ``gguf.quants.dequantize``).
    """
    shape = tuple(int(n) for n in shape)
    if type_name in _BLOCK_BYTES and len(shape) == 2:
        convert = q4_0_to_core if type_name == "Q4_0" else q4_1_to_core
        return convert(data, *shape)
    if type_name in ("F32", "F16"):
        out = np.asarray(data).astype(np.float32, copy=False)
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        try:
            qtype = GGMLQuantizationType[type_name]
        except KeyError as e:
            raise GgufFormatError(f"GGUF tensor type {type_name} is not known to the gguf package") from e
        out = dequantize(data, qtype).astype(np.float32, copy=False)
    if out.size != int(np.prod(shape)):
        raise GgufFormatError(f"{type_name} tensor has {out.size} values, its shape {list(shape)} needs {int(np.prod(shape))}")
    return np.ascontiguousarray(out.reshape(shape))


def _blocks(blocks: np.ndarray, type_name: str, num_rows: int, num_cols: int) -> np.ndarray:
    block_bytes = _BLOCK_BYTES[type_name]
    if num_cols % GROUP_SIZE:
        raise GgufFormatError(f"{type_name} rows of {num_cols} values are not whole blocks of {GROUP_SIZE}")
    blocks = np.asarray(blocks)
    expected = num_rows * (num_cols // GROUP_SIZE) * block_bytes
    if blocks.dtype != np.uint8 or blocks.size != expected:
        raise GgufFormatError(
            f"{type_name} [{num_rows}, {num_cols}] needs {expected} bytes (uint8), got {blocks.size} of {blocks.dtype}"
        )
    return blocks.reshape(num_rows, num_cols // GROUP_SIZE, block_bytes)
