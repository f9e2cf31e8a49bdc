"""4-bit weight formats lmrt reads, converted to the core's layout (NumPy only, no torch).

The core's 4-bit layout (``W4Matrix`` in csrc/kernels/cpu/ops.h), for a linear with
N outputs and K inputs and group size g (32, 64 or 128) along K:

    codes  uint8   [N, K / 2]  in each run of 32 inputs of a row, byte j holds input j
                               (low nibble) and input j + 16 (high nibble)
    scales float32 [N, K / g]
    mins   float32 [N, K / g]
    w[n, k] = code[n, k] * scales[n, k / g] + mins[n, k / g]

``awq_format``: AutoAWQ "gemm" packing (the checkpoint format), and its exact map onto this.
``gguf_format``: GGUF Q4_0 / Q4_1 tensors, imported losslessly onto this.
"""

from .awq_format import (
    CORE_GROUP_SIZES,
    AwqFormatError,
    awq_to_core,
    core_to_dense,
    dequantize_awq,
    pack_awq,
    pack_core_codes,
    unpack_awq,
    unpack_core_codes,
)

__all__ = [
    "CORE_GROUP_SIZES",
    "AwqFormatError",
    "awq_to_core",
    "core_to_dense",
    "dequantize_awq",
    "pack_awq",
    "pack_core_codes",
    "unpack_awq",
    "unpack_core_codes",
]
