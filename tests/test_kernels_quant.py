"""Quantised linear ops (lmrt._core.kernels.linear_w4 / linear_i8) against float64 NumPy
references of the dequantised weights, on every ISA path.

Each path this CPU supports is forced in turn; a path the CPU lacks is skipped with the
reason. Paths are also checked against the scalar path, for bit equality across thread
counts, and for batch invariance: a row computed inside any batch (the prefill path,
which dequantises a block of W into a buffer) is bit-identical to the same row computed
alone or in a small batch (the decode path, which dequantises in registers).

The 4-bit packing is done here in NumPy from the layout documented in ops.h (W4Matrix),
independently of the kernels.
"""

import numpy as np
import pytest
from kernel_paths import CPU_NEEDS, ISAS, assert_bits_equal, bits, isa, with_isa  # noqa: F401  (isa is a fixture)

from lmrt._core import kernels as K

EPS32 = 2.0**-24  # unit roundoff of fp32


def quant_tol(Kd):
    """Relative (to sum |x||w| + |bias|) error bound of one output in fp32.

    A length-K fp32 dot product (K*u, the worst-case bound used for linear in
    test_kernels.py), plus one rounding of the weight (w4: fma(code, scale, min) in fp32)
    or of the per-row scale product (i8), plus the bias add."""
    return (Kd + 2) * EPS32


PAIR_FACTOR = 2  # two paths against each other: each is within its bound of the exact value

rng = np.random.default_rng(4321)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- 4-bit


def pack_w4(codes):
    """codes [N, K] in 0..15 -> [N, K/2] uint8: in each run of 32 inputs, byte j holds
    input j in the low nibble and input j + 16 in the high nibble."""
    N, Kd = codes.shape
    c = codes.astype(np.uint8).reshape(N, Kd // 32, 2, 16)
    return np.ascontiguousarray((c[:, :, 0, :] | (c[:, :, 1, :] << 4)).reshape(N, Kd // 2))


def make_w4(N, Kd, g, style="awq"):
    codes = rng.integers(0, 16, size=(N, Kd), dtype=np.uint8)
    G = Kd // g
    scales = rng.uniform(0.002, 0.05, size=(N, G)).astype(np.float32)
    if style == "awq":  # min = -zero * scale, zero an integer code
        mins = (-rng.integers(0, 16, size=(N, G)) * scales).astype(np.float32)
    else:  # free fp32 mins (GGUF Q4_1 style)
        mins = rng.uniform(-0.4, 0.0, size=(N, G)).astype(np.float32)
    return codes, scales, mins


def w4_dequant64(codes, scales, mins, g):
    rep = lambda a: np.repeat(a.astype(np.float64), g, axis=1)  # noqa: E731
    return codes.astype(np.float64) * rep(scales) + rep(mins)


def ref64(x, w64, bias):
    x64 = x.astype(np.float64)
    y = x64 @ w64.T
    bound = np.abs(x64) @ np.abs(w64).T
    if bias is not None:
        y += bias
        bound += np.abs(bias)
    return y, bound


def w4(x, codes, scales, mins, g, bias=None, threads=1):
    return K.linear_w4(x, pack_w4(codes), scales, mins, g, bias, num_threads=threads)


# (g, K) pairs: SmolLM2 K = 576 (hidden) and 1536 (intermediate); 576 is not a multiple of 128.
W4_GK = [(32, 576), (64, 576), (32, 1536), (64, 1536), (128, 1536), (128, 256)]
W4_MN = [(1, 61), (1, 960), (3, 37), (8, 49), (9, 13), (130, 50)]  # M=9: just past the decode tile


@pytest.mark.parametrize("g,Kd", W4_GK)
@pytest.mark.parametrize("M,N", W4_MN)
def test_w4_vs_reference(isa, g, Kd, M, N):
    if isa == "scalar" and M * N * Kd > 4e6:
        M = min(M, 8)  # the scalar path is slow; its M>8 path is the same as for M<=8
    style = "awq" if N % 2 else "free"
    codes, scales, mins = make_w4(N, Kd, g, style)
    x = randn(M, Kd)
    bias = randn(N) if N % 2 else None
    y = w4(x, codes, scales, mins, g, bias)
    ref, bound = ref64(x, w4_dequant64(codes, scales, mins, g), bias)
    assert y.shape == (M, N) and y.dtype == np.float32
    err = np.abs(y - ref)
    assert np.all(err <= quant_tol(Kd) * bound + 1e-30), (err / bound).max() / EPS32


def test_w4_nibble_layout(isa):
    """One-hot codes: w[n, k] = (k == n), so y = x[:, :N] exactly; pins the nibble order."""
    Kd, g = 128, 32
    N = Kd
    codes = np.eye(N, Kd, dtype=np.uint8)
    scales = np.ones((N, Kd // g), np.float32)
    mins = np.zeros((N, Kd // g), np.float32)
    x = randn(3, Kd)
    assert_bits_equal(w4(x, codes, scales, mins, g), x, "one-hot identity (decode)")
    xb = randn(40, Kd)
    assert_bits_equal(w4(xb, codes, scales, mins, g), xb, "one-hot identity (prefill)")
    # code 15, scale 2, min -1 -> w = 29 in input 17 only
    c2 = np.zeros((1, Kd), np.uint8)
    c2[0, 17] = 15
    s2 = np.full((1, Kd // g), 2.0, np.float32)
    m2 = np.zeros((1, Kd // g), np.float32)
    m2[0, 0] = -1.0  # group 0: every other weight of the group is -1
    y = w4(x, c2, s2, m2, g)
    w64 = np.zeros((1, Kd))
    w64[0, :32] = -1.0
    w64[0, 17] = 29.0
    assert np.array_equal(w4_dequant64(c2, s2, m2, g), w64)
    ref, bound = ref64(x, w64, None)
    assert np.all(np.abs(y - ref) <= quant_tol(Kd) * bound)


@pytest.mark.parametrize("g,Kd", [(32, 576), (128, 1536)])
@pytest.mark.parametrize("M", [1, 8, 40])
def test_w4_vs_scalar(isa, g, Kd, M):
    N = 45
    codes, scales, mins = make_w4(N, Kd, g)
    x = randn(M, Kd)
    y = w4(x, codes, scales, mins, g, threads=2)
    ys = with_isa("scalar", lambda: w4(x, codes, scales, mins, g))
    _, bound = ref64(x, w4_dequant64(codes, scales, mins, g), None)
    assert np.all(np.abs(y - ys) <= PAIR_FACTOR * quant_tol(Kd) * bound)


@pytest.mark.parametrize("g", [32, 64, 128])
@pytest.mark.parametrize("threads", [1, 2])
def test_w4_batch_invariance(isa, g, threads):
    M, Kd, N = 150, 256, 61
    codes, scales, mins = make_w4(N, Kd, g)
    bias = randn(N)
    x = randn(M, Kd)
    p = pack_w4(codes)
    run = lambda xs, t=threads: K.linear_w4(xs, p, scales, mins, g, bias, num_threads=t)  # noqa: E731
    big = run(x)
    for r in range(M):  # every row position inside every tile, against the decode path
        assert_bits_equal(run(x[r : r + 1]), big[r : r + 1], f"row {r} alone")
    for a, b in [(0, 3), (5, 12), (0, 8), (3, 12), (3, 20), (63, 130), (1, 150)]:
        assert_bits_equal(run(x[a:b]), big[a:b], f"rows {a}:{b}")
    assert_bits_equal(run(x, 3 - threads), big, "1 vs 2 threads")


@pytest.mark.parametrize("g", [32, 128])
def test_w4_prefill_smollm_shape_threads(isa, g):
    if isa == "scalar":
        pytest.skip("scalar prefill at this size takes seconds; covered by the smaller shapes")
    Kd, N, M = 1536, 576, 512  # down_proj
    codes, scales, mins = make_w4(N, Kd, g)
    x = randn(M, Kd)
    y1 = w4(x, codes, scales, mins, g, threads=1)
    y2 = w4(x, codes, scales, mins, g, threads=2)
    assert_bits_equal(y1, y2, "1 vs 2 threads")
    for r in (0, 77, 511):
        assert_bits_equal(w4(x[r : r + 1], codes, scales, mins, g, threads=2), y1[r : r + 1], f"row {r} alone")
    ref, bound = ref64(x, w4_dequant64(codes, scales, mins, g), None)
    assert np.all(np.abs(y2 - ref) <= quant_tol(Kd) * bound)


def test_w4_validation():
    Kd, N, g = 64, 5, 32
    codes, scales, mins = make_w4(N, Kd, g)
    p = pack_w4(codes)
    x = randn(2, Kd)
    with pytest.raises(ValueError, match="group_size"):
        K.linear_w4(x, p, scales, mins, 16)
    with pytest.raises(ValueError, match="group_size"):
        K.linear_w4(
            randn(2, 96), np.zeros((N, 48), np.uint8), np.ones((N, 1), np.float32), np.ones((N, 1), np.float32), 64
        )  # K=96 not a multiple of 64
    with pytest.raises(ValueError, match="group_size"):
        K.linear_w4(
            randn(2, 576), np.zeros((N, 288), np.uint8), np.ones((N, 4), np.float32), np.ones((N, 4), np.float32), 128
        )  # SmolLM2 hidden with g=128
    with pytest.raises(ValueError, match="codes"):
        K.linear_w4(x, p[:, :-1].copy(), scales, mins, g)
    with pytest.raises(ValueError, match="uint8"):
        K.linear_w4(x, p.astype(np.int16), scales, mins, g)
    with pytest.raises(ValueError, match="scales"):
        K.linear_w4(x, p, scales[:, :1].copy(), mins, g)
    with pytest.raises(ValueError, match="mins"):
        K.linear_w4(x, p, scales, mins[:-1].copy(), g)
    with pytest.raises(ValueError, match="bias"):
        K.linear_w4(x, p, scales, mins, g, randn(N + 1))
    with pytest.raises(ValueError, match="num_threads"):
        K.linear_w4(x, p, scales, mins, g, num_threads=0)
    with pytest.raises(ValueError, match="x must be 2-D"):
        K.linear_w4(randn(Kd), p, scales, mins, g)


# ---------------------------------------------------------------- int8


def make_i8(N, Kd):
    q = rng.integers(-128, 128, size=(N, Kd), dtype=np.int8)
    scales = rng.uniform(0.001, 0.02, size=N).astype(np.float32)
    return q, scales


I8_SHAPES = [(1, 576, 61), (1, 37, 13), (3, 133, 29), (8, 1536, 49), (9, 576, 13), (17, 96, 101), (130, 71, 38)]


@pytest.mark.parametrize("M,Kd,N", I8_SHAPES)
def test_i8_vs_reference(isa, M, Kd, N):
    q, scales = make_i8(N, Kd)
    x = randn(M, Kd)
    bias = randn(N) if N % 2 else None
    y = K.linear_i8(x, q, scales, bias)
    ref, bound = ref64(x, q.astype(np.float64) * scales.astype(np.float64)[:, None], bias)
    assert y.shape == (M, N) and y.dtype == np.float32
    err = np.abs(y - ref)
    assert np.all(err <= quant_tol(Kd) * bound + 1e-30), (err / bound).max() / EPS32


@pytest.mark.parametrize("M", [1, 8, 40])
def test_i8_vs_scalar(isa, M):
    Kd, N = 203, 45
    q, scales = make_i8(N, Kd)
    x = randn(M, Kd)
    y = K.linear_i8(x, q, scales, num_threads=2)
    ys = with_isa("scalar", lambda: K.linear_i8(x, q, scales))
    _, bound = ref64(x, q.astype(np.float64) * scales.astype(np.float64)[:, None], None)
    assert np.all(np.abs(y - ys) <= PAIR_FACTOR * quant_tol(Kd) * bound)


@pytest.mark.parametrize("Kd", [77, 576])
@pytest.mark.parametrize("threads", [1, 2])
def test_i8_batch_invariance(isa, Kd, threads):
    M, N = 150, 61
    q, scales = make_i8(N, Kd)
    bias = randn(N)
    x = randn(M, Kd)
    run = lambda xs, t=threads: K.linear_i8(xs, q, scales, bias, num_threads=t)  # noqa: E731
    big = run(x)
    for r in range(M):
        assert_bits_equal(run(x[r : r + 1]), big[r : r + 1], f"row {r} alone")
    for a, b in [(0, 3), (5, 12), (0, 8), (3, 12), (3, 20), (63, 130), (1, 150)]:
        assert_bits_equal(run(x[a:b]), big[a:b], f"rows {a}:{b}")
    assert_bits_equal(run(x, 3 - threads), big, "1 vs 2 threads")


def test_i8_validation():
    q, scales = make_i8(5, 16)
    x = randn(2, 16)
    with pytest.raises(ValueError, match="K"):
        K.linear_i8(randn(2, 17), q, scales)
    with pytest.raises(ValueError, match="int8"):
        K.linear_i8(x, q.astype(np.int32), scales)
    with pytest.raises(ValueError, match="int8"):
        K.linear_i8(x, q.view(np.uint8), scales)
    with pytest.raises(ValueError, match="scales"):
        K.linear_i8(x, q, scales[:4].copy())
    with pytest.raises(ValueError, match="bias"):
        K.linear_i8(x, q, scales, randn(4))
    with pytest.raises(ValueError, match="C-contiguous"):
        K.linear_i8(x, np.asfortranarray(q), scales)
    with pytest.raises(ValueError, match="num_threads"):
        K.linear_i8(x, q, scales, num_threads=0)
