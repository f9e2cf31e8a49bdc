"""AutoAWQ "gemm" 4-bit packing, and its exact conversion to the core's 4-bit layout.

The AutoAWQ "gemm" format (AutoAWQ's ``WQLinear_GEMM``; what ``*-AWQ`` hub repos, vLLM,
LMDeploy and HF transformers read), for a linear with K inputs, N outputs, group size g:

    qweight int32   [K, N / 8]   nibble i (bits 4i..4i+3) of word c holds output column
                                 8c + AWQ_ORDER[i], AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
    qzeros  int32   [K / g, N / 8]  packed the same way
    scales  float16 [K / g, N]
    w[k, n] = (q[k, n] - z[k / g, n]) * s[k / g, n]      (q, z in 0..15, no offset)

Note the orientation: AutoAWQ stores [in, out], the core [out, in] (like torch
``Linear.weight``). The core's layout (``W4Matrix``, csrc/kernels/cpu/ops.h):

    codes  uint8   [N, K / 2]  in each run of 32 inputs of a row, byte j holds input j
                               (low nibble) and input j + 16 (high nibble)
    scales float32 [N, K / g], mins float32 [N, K / g]
    w[n, k] = code[n, k] * scale + min

Exactness of ``awq_to_core``: scale = float32(s), min = -(z * s) in float32. For a
scale with at most 11 significant bits (float16, bfloat16) every one of q*s, z*s and
(q - z)*s has at most 15 significant bits and lies far inside float32's normal range,
so each is exact in float32; the sum q*s + min is then the exactly representable value
(q - z)*s, so code*scale + min == (q - z)*s with error 0, whether the core evaluates it
as mul-then-add or as an FMA. AutoAWQ's own dequantisation (``dequantize_gemm``) works in
float16, i.e. it is this exact value rounded once to float16.
"""

from __future__ import annotations

import numpy as np

from .._bf16 import bf16_bits_to_float32
from . import CheckpointError, W4Part
from .safetensors import FLOAT_DTYPES, TensorRef

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # nibble i of a word holds column 8c + AWQ_ORDER[i]

AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)  # column 8c + j sits in nibble AWQ_REVERSE_ORDER[j]

CORE_GROUP_SIZES = (32, 64, 128)

_RUN = 32  # the core packs inputs in runs of 32: byte j = input j | input j + 16 << 4

_SHIFTS = np.arange(0, 32, 4, dtype=np.uint32)  # [8]


class AwqFormatError(ValueError):
    """Arrays that do not form a valid AutoAWQ gemm / core 4-bit tensor."""


def pack_awq(q: np.ndarray, zeros: np.ndarray, scales: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pack codes ``q`` [K, N] and ``zeros`` [K/g, N] (0..15) with float16 ``scales`` [K/g, N] as AutoAWQ does.

    Returns (qweight int32 [K, N/8], qzeros int32 [K/g, N/8], scales float16 [K/g, N]).
    """
    q, zeros = _as_nibbles(q, "q"), _as_nibbles(zeros, "zeros")
    scales = np.asarray(scales)
    if scales.dtype != np.float16:
        raise AwqFormatError(f"scales must be float16 (AutoAWQ's dtype), got {scales.dtype}")
    if q.ndim != 2 or zeros.ndim != 2 or scales.ndim != 2:
        raise AwqFormatError(f"q, zeros, scales must be 2-D, got {q.shape}, {zeros.shape}, {scales.shape}")
    K, N = q.shape
    if zeros.shape != scales.shape or zeros.shape[1] != N:
        raise AwqFormatError(f"zeros {zeros.shape} and scales {scales.shape} must both be [K/g, N={N}]")
    if zeros.shape[0] == 0 or K % zeros.shape[0]:
        raise AwqFormatError(f"{zeros.shape[0]} groups do not divide K={K} inputs")
    return _pack_columns(q), _pack_columns(zeros), np.ascontiguousarray(scales)


def unpack_awq(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``pack_awq``: (q uint8 [K, N], zeros uint8 [K/g, N], scales as given [K/g, N])."""
    qweight, qzeros, scales = _check_awq(qweight, qzeros, scales)
    return _unpack_columns(qweight), _unpack_columns(qzeros), scales


def dequantize_awq(qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """AutoAWQ's w[k, n] = (q - z) * s as float32 [K, N] (exact: see the module docstring)."""
    q, zeros, scales = unpack_awq(qweight, qzeros, scales)
    _check_group_size(q.shape[0], zeros.shape[0], group_size)
    z = np.repeat(zeros, group_size, axis=0).astype(np.float32)
    s = np.repeat(scales.astype(np.float32), group_size, axis=0)
    return (q.astype(np.float32) - z) * s


def awq_to_core(
    qweight: np.ndarray, qzeros: np.ndarray, scales: np.ndarray, group_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One AutoAWQ gemm linear -> the core's (codes uint8 [N, K/2], scales f32 [N, K/g], mins f32 [N, K/g]).

    min = -zero * scale in float32; code * scale + min equals (q - z) * s exactly in
    float32 for float16 / bfloat16 scales (proof in the module docstring).
    """
    q, zeros, scales = unpack_awq(qweight, qzeros, scales)
    K = q.shape[0]
    _check_group_size(K, zeros.shape[0], group_size)
    if K % _RUN:
        raise AwqFormatError(f"K={K} inputs is not a multiple of {_RUN}, which the core's 4-bit layout needs")
    codes = pack_core_codes(np.ascontiguousarray(q.T))  # [N, K/2]
    scales_f32 = np.ascontiguousarray(scales.astype(np.float32).T)  # [N, K/g]
    mins = -(np.ascontiguousarray(zeros.T).astype(np.float32) * scales_f32) + np.float32(0.0)  # +0.0: no -0.0
    return codes, scales_f32, mins


def pack_core_codes(q: np.ndarray) -> np.ndarray:
    """Codes uint8 [N, K] (0..15, K a multiple of 32) -> the core's packed uint8 [N, K/2]."""
    q = _as_nibbles(q, "q")
    if q.ndim != 2 or q.shape[1] % _RUN:
        raise AwqFormatError(f"codes must be [N, K] with K a multiple of {_RUN}, got shape {q.shape}")
    N, K = q.shape
    runs = q.reshape(N, K // _RUN, 2, _RUN // 2)  # [N, K/32, (low, high), 16]
    return np.ascontiguousarray((runs[:, :, 0] | (runs[:, :, 1] << 4)).reshape(N, K // 2))


def unpack_core_codes(codes: np.ndarray) -> np.ndarray:
    """The core's packed uint8 [N, K/2] -> codes uint8 [N, K]."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] % (_RUN // 2):
        raise AwqFormatError(
            f"packed codes must be uint8 [N, K/2] with K a multiple of {_RUN}, got {codes.dtype} {codes.shape}"
        )
    N, half = codes.shape
    runs = codes.reshape(N, half // (_RUN // 2), 1, _RUN // 2)
    return np.concatenate([runs & 0x0F, runs >> 4], axis=2).reshape(N, half * 2)


def core_to_dense(codes: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> np.ndarray:
    """Dequantise the core's layout: float32 [N, K], code * scale + min (mul, then add, in float32)."""
    q = unpack_core_codes(codes)
    N, K = q.shape
    scales, mins = np.asarray(scales), np.asarray(mins)
    if scales.dtype != np.float32 or mins.dtype != np.float32:
        raise AwqFormatError(f"scales and mins must be float32, got {scales.dtype} and {mins.dtype}")
    if (
        scales.shape != mins.shape
        or scales.ndim != 2
        or scales.shape[0] != N
        or scales.shape[1] == 0
        or K % scales.shape[1]
    ):
        raise AwqFormatError(f"scales {scales.shape} and mins {mins.shape} must both be [N={N}, K/g] for K={K}")
    g = K // scales.shape[1]
    return q.astype(np.float32) * np.repeat(scales, g, axis=1) + np.repeat(mins, g, axis=1)


def awq_part(source: dict[str, TensorRef], module: str, shape: tuple[int, int], group_size: int) -> W4Part:
    """One AutoAWQ gemm linear ``module`` of core shape [N, K] -> (codes, scales, mins)."""
    N, K = shape
    refs = {x: source[f"{module}.{x}"] for x in ("qweight", "qzeros", "scales")}
    file = refs["qweight"].file
    if K % group_size:
        raise CheckpointError(
            f"{file}: {module} has K={K} inputs, which group_size {group_size} (config.json quantization_config) "
            f"does not divide"
        )
    expected = {"qweight": (K, N // 8), "qzeros": (K // group_size, N // 8), "scales": (K // group_size, N)}
    dtypes = {"qweight": ("I32",), "qzeros": ("I32",), "scales": FLOAT_DTYPES}
    for x, ref in refs.items():
        if N % 8 or ref.shape != expected[x]:
            raise CheckpointError(
                f"{ref.file}: {module}.{x} has shape {list(ref.shape)}, expected {list(expected[x])} for an AutoAWQ gemm "
                f"linear with {K} inputs, {N} outputs, group_size {group_size}"
            )
        if ref.dtype not in dtypes[x]:
            raise CheckpointError(f"{ref.file}: {module}.{x} is {ref.dtype}, expected {' or '.join(dtypes[x])}")
    scales = refs["scales"]
    scales = scales.array() if scales.dtype != "BF16" else bf16_bits_to_float32(scales.array())
    try:
        return awq_to_core(refs["qweight"].array(), refs["qzeros"].array(), scales, group_size)
    except AwqFormatError as e:
        raise CheckpointError(f"{file}: {module}: {e}") from e


def _pack_columns(values: np.ndarray) -> np.ndarray:
    """uint8 [R, N] (0..15) -> int32 [R, N/8], AutoAWQ's nibble order."""
    R, N = values.shape
    if N % 8:
        raise AwqFormatError(f"AutoAWQ packs 8 columns per int32: N={N} is not a multiple of 8")
    groups = values.reshape(R, N // 8, 8)[:, :, list(AWQ_ORDER)].astype(np.uint32)  # nibble i <- column AWQ_ORDER[i]
    words = np.bitwise_or.reduce(groups << _SHIFTS, axis=2)
    return np.ascontiguousarray(words.astype(np.uint32).view(np.int32))


def _unpack_columns(words: np.ndarray) -> np.ndarray:
    """int32 [R, C] -> uint8 [R, 8C], undoing AutoAWQ's nibble order."""
    R, C = words.shape
    nibbles = ((words.view(np.uint32)[:, :, None] >> _SHIFTS) & 0xF).astype(np.uint8)  # [R, C, 8] by nibble
    return np.ascontiguousarray(nibbles[:, :, list(AWQ_REVERSE_ORDER)].reshape(R, 8 * C))


def _as_nibbles(values: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise AwqFormatError(f"{name} must be integer codes in 0..15, got dtype {values.dtype}")
    if values.size and (values.min() < 0 or values.max() > 15):
        raise AwqFormatError(f"{name} must be 4-bit codes in 0..15, got values in [{values.min()}, {values.max()}]")
    return values.astype(np.uint8)


def _check_awq(qweight, qzeros, scales) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    qweight, qzeros, scales = np.asarray(qweight), np.asarray(qzeros), np.asarray(scales)
    if qweight.dtype != np.int32 or qzeros.dtype != np.int32:
        raise AwqFormatError(f"qweight and qzeros must be int32, got {qweight.dtype} and {qzeros.dtype}")
    if scales.dtype not in (np.float16, np.float32):
        raise AwqFormatError(f"scales must be float16 (or float32), got {scales.dtype}")
    if qweight.ndim != 2 or qzeros.ndim != 2 or scales.ndim != 2:
        raise AwqFormatError(
            f"qweight, qzeros, scales must be 2-D, got {qweight.shape}, {qzeros.shape}, {scales.shape}"
        )
    K, C = qweight.shape
    if qzeros.shape[1] != C or scales.shape != (qzeros.shape[0], 8 * C):
        raise AwqFormatError(
            f"AutoAWQ shapes do not agree: qweight {list(qweight.shape)} is [K, N/8], so qzeros must be "
            f"[K/g, {C}] and scales [K/g, {8 * C}]; got qzeros {list(qzeros.shape)}, scales {list(scales.shape)}"
        )
    return qweight, qzeros, scales


def _check_group_size(K: int, num_groups: int, group_size: int) -> None:
    if group_size not in CORE_GROUP_SIZES:
        raise AwqFormatError(
            f"group size {group_size} is not supported; supported: {', '.join(map(str, CORE_GROUP_SIZES))}"
        )
    if K % group_size:
        raise AwqFormatError(f"group size {group_size} does not divide K={K} inputs")
    if num_groups * group_size != K:
        raise AwqFormatError(
            f"{num_groups} groups of {group_size} do not cover K={K} inputs (expected {K // group_size})"
        )
