"""4-bit weights x int8 activations (lmrt._core.kernels.linear_w4 with activations="int8", and quantize_q8) on
every ISA path, each forced in turn, and on AVX-512 with and without VNNI; over the row layout and the interleaved
one (w4_interleave, interleaved=True).

References, in NumPy, from the contract in ops.h and nothing the kernels share:
  - the activation quantization: d = float32(max|x| / 127) per run of 32 inputs, q = round_half_even(x * (1 / d))
    in float32, which every path must reproduce bit for bit;
  - the product: float64 sum over the same q, d, codes, scales and mins; each path within RTOL_A8 of
    sum |d q| |w| (its fp32 accumulation of exact integer block sums);
  - the exact product: |y - x w^T| <= sum_k |w[n, k]| d_b(k) / 2 (what rounding x to q costs), plus fp32 slack.
"""

import numpy as np
import pytest
from kernel_paths import isa, with_isa  # noqa: F401  (isa is a fixture)
from test_kernels_quant import make_w4, pack_w4, w4_dequant64

from lmrt._core import kernels as K

# fp32 accumulation of per-block terms: a product d * scale, one fma per lane partial sum, the lane sums and the
# mins' terms; K / 32 blocks at most 1536 / 32 here. 2^-24 * (K / 32 + 8) * 4 is under 1e-5 for these K.
RTOL_A8 = 1e-5

rng = np.random.default_rng(8642)


def activations(M, Kd):
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    x[:, 7] *= 40.0  # an outlier channel, as LLM hidden states have
    if M > 1:
        x[1, 32:64] = 0.0  # an all-zero run: d = 0, q = 0
    return x


def q8_reference(x):
    M, Kd = x.shape
    xb = x.reshape(M, Kd // 32, 32)
    d = (np.abs(xb).max(-1) / np.float32(127)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1) / d  # float32 reciprocal, then a float32 product per input (llama.cpp's quantizer)
        q = np.where(d[..., None] > 0, np.rint(xb * inv[..., None]), 0).astype(np.int8)
    return q.reshape(M, Kd), d


def a8_references(x, w, bias):
    """For x [M, K] against float64 weights w [N, K]: (the float64 product over the quantized activations, the sum of
    |terms| that bounds its fp32 rounding, what quantizing x costs against the exact product, the exact product)."""
    M, Kd = x.shape
    q, d = q8_reference(x)
    xq = (q.reshape(M, -1, 32) * d[..., None].astype(np.float64)).reshape(M, Kd)
    qerr = (np.repeat(d, 32, 1).astype(np.float64) / 2) @ np.abs(w).T
    return xq @ w.T + bias, np.abs(xq) @ np.abs(w).T + np.abs(bias), qerr, x.astype(np.float64) @ w.T + bias


def vnni_modes(isa_name):
    if isa_name != "avx512":
        return [True]
    return [True, False] if K.vnni_available() else [False]


def int8_units(isa_name):
    """The units of the interleaved products under this ISA, each forced (linear_w4 / linear_i8 keywords): the vector
    path (VNNI where present), maddubs (AVX-512 without VNNI) and AMX-INT8 tiles (where the CPU grants them; the
    tests that use this say so when it does not)."""
    if isa_name != "avx512":
        return [{"amx": False}]
    units = [{"amx": False}] + ([{"vnni": False}] if K.vnni_available() else [])
    return units + ([{"amx": True}] if K.amx_int8_available() else [])


@pytest.mark.parametrize("Kd", [576, 1632])
def test_quantize_q8_matches_reference(isa, Kd):
    """Kd 576 and 1632: one and two steps of 16 runs at once (AVX-512's quant_runs16), then 2 and 3 runs alone."""
    x = activations(5, Kd)
    # A run where x * (1 / d) and x / d round to different codes (-57 and -58): the contract's product, not a division
    x[2, 96:128] = 0.5
    x[2, 96], x[2, 97] = 3.1262762546539307, -1.4154399633407593
    x[3, Kd - 576 : Kd - 544] = 0.0  # an all-zero run in the last 16-run step (or the first)
    x[4, 512 + 5] = -300.0  # the largest |x| of a run is negative
    q, d = K.quantize_q8(x)
    qr, dr = q8_reference(x)
    assert np.array_equal(d.view(np.uint32), dr.view(np.uint32)), "d differs in bits"
    assert np.array_equal(q, qr), f"{int((q != qr).sum())} codes differ"
    assert np.abs(q).max() == 127


# K values: whole chunks of 128 inputs, and chunks ending in 1, 2 or 3 blocks; M: each row-block size and more.
W4A8_CASES = [
    (1, 50, 576, 32),
    (3, 37, 160, 32),
    (5, 29, 384, 64),
    (9, 70, 1536, 128),
    (4, 8, 96, 32),
    (17, 13, 64, 64),
    (2, 41, 224, 32),
    (8, 25, 768, 128),
]


@pytest.mark.parametrize("M,N,Kd,g", W4A8_CASES)
def test_w4a8_vs_reference(isa, M, N, Kd, g):
    x = activations(M, Kd)
    codes, scales, mins = make_w4(N, Kd, g, style="awq" if g != 64 else "q4_1")
    packed = pack_w4(codes)
    bias = rng.standard_normal(N).astype(np.float32)
    ref, scale, qerr, exact = a8_references(x, w4_dequant64(codes, scales, mins, g), bias)
    for vnni in vnni_modes(isa):
        for threads in (1, 2):
            y = K.linear_w4(x, packed, scales, mins, g, bias=bias, num_threads=threads, activations="int8", vnni=vnni)
            err = np.abs(y - ref)
            assert (err <= RTOL_A8 * scale + 1e-30).all(), (
                f"vnni={vnni} threads={threads}: max err / bound {(err / (RTOL_A8 * scale)).max():.3g}"
            )
            assert (np.abs(y - exact) <= qerr + 2 * RTOL_A8 * scale).all()


def test_w4a8_is_not_the_fp32_product(isa):
    """The mode is really int8: on inputs that int8 cannot hold exactly it differs from linear_w4's fp32 result
    (guards against a dispatch that silently runs the exact path)."""
    x = activations(2, 576)
    codes, scales, mins = make_w4(40, 576, 32)
    packed = pack_w4(codes)
    a = K.linear_w4(x, packed, scales, mins, 32, activations="int8")
    b = K.linear_w4(x, packed, scales, mins, 32)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("g", [32, 128])
def test_w4a8_batch_invariance(isa, g):
    """A row's outputs do not depend on the rows around it (row blocks of 1..4, any thread split)."""
    Kd, N = 640, 90
    x = activations(23, Kd)
    codes, scales, mins = make_w4(N, Kd, g)
    packed = pack_w4(codes)
    for vnni in vnni_modes(isa):
        full = K.linear_w4(x, packed, scales, mins, g, num_threads=2, activations="int8", vnni=vnni)
        for lo, hi in [(0, 1), (5, 8), (10, 12), (3, 23)]:
            part = K.linear_w4(x[lo:hi], packed, scales, mins, g, num_threads=1, activations="int8", vnni=vnni)
            assert np.array_equal(part.view(np.uint32), full[lo:hi].view(np.uint32)), (lo, hi, vnni)


def test_w4a8_vnni_matches_maddubs():
    """Where the CPU has VNNI: both AVX-512 variants form the same integer sums, so the same bits."""
    if not K.isa_supported("avx512"):
        pytest.skip("CPU lacks avx512 (avx512f/bw/vl/dq with OS ZMM state)")
    if not K.vnni_available():
        pytest.skip("CPU lacks AVX512-VNNI (or the build has no VNNI code)")
    x = activations(6, 1536)
    codes, scales, mins = make_w4(33, 1536, 64)
    packed = pack_w4(codes)

    def run(vnni):
        return K.linear_w4(x, packed, scales, mins, 64, activations="int8", vnni=vnni)

    a, b = with_isa("avx512", lambda: run(True)), with_isa("avx512", lambda: run(False))
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


# Interleaved weights (W4Interleaved, linear_w4a8_il): N a multiple of 16; M up to past the 128-row work items.
IL_CASES = [
    (1, 48, 576, 32),
    (3, 32, 160, 32),
    (5, 64, 384, 64),
    (9, 80, 1536, 128),
    (4, 16, 96, 32),
    (17, 32, 64, 64),
    (33, 48, 224, 32),
    (150, 32, 128, 32),
]


def interleave_reference(packed, scales, mins):
    """W4Interleaved's layout from its contract (csrc/kernels/ops.h), in NumPy: (strip t, run b, quad u, output n,
    byte j) = packed[16 t + n, 16 b + 4 u + j]; (t, g, n) = scales[16 t + n, g] as an IEEE half (NumPy's float16:
    round to nearest even)."""
    N, half = packed.shape
    c = packed.reshape(N // 16, 16, half // 16, 4, 4)  # t, n, b, u, j
    codes = c.transpose(0, 2, 3, 1, 4).reshape(N, half)
    per = lambda a: a.reshape(N // 16, 16, -1).transpose(0, 2, 1).reshape(N, -1).astype(np.float16)  # noqa: E731
    return codes, per(scales), per(mins)


def halves(a):
    """The fp32 values an interleaved matrix holds for these scales or mins (rounded to IEEE halves)."""
    return a.astype(np.float16).astype(np.float32)


def test_w4_interleave_matches_its_layout():
    codes, scales, mins = make_w4(48, 256, 64)
    packed = pack_w4(codes)
    got = K.w4_interleave(packed, scales, mins, 64)
    for a, b, what in zip(got, interleave_reference(packed, scales, mins), ("codes", "scales", "mins")):
        assert a.dtype == b.dtype and np.array_equal(a, b), what


def test_w4_interleave_rounds_scales_and_mins_to_halves_as_numpy():
    """Halves keep GGUF Q4_0 / Q4_1 and AutoAWQ scales exactly (they are halves already); anything else rounds to
    nearest, ties to even, as NumPy's float16: values around the subnormal range, exact ties, beyond the largest
    half (infinity), both signs."""
    N, G = 16, 8
    special = np.array(
        [
            1e-8,
            3e-8,
            6.1e-5,
            6.0975552e-05,
            2.0**-24 * 1.5,
            2.0**-24 * 2.5,
            1 + 2.0**-11,
            1 + 3 * 2.0**-11,
            65504.0,
            65519.0,
            65520.0,
            1e6,
            0.0,
            -0.0,
            1.0 / 3.0,
            2.0**-14 * (1 - 2.0**-12),
        ],
        np.float32,
    )
    scales = np.abs(rng.standard_normal((N, G))).astype(np.float32)
    scales[:, 0] = special
    scales[:, 1] = rng.uniform(0.002, 0.05, N).astype(np.float16).astype(np.float32)  # halves already: exact
    mins = -scales[:, ::-1].copy()
    packed = pack_w4(rng.integers(0, 16, (N, G * 32), dtype=np.uint8))
    _, s16, m16 = K.w4_interleave(packed, scales, mins, 32)
    with np.errstate(over="ignore"):  # 1e6 -> inf, as the contract says
        _, want_s, want_m = interleave_reference(packed, scales, mins)
    assert np.array_equal(s16.view(np.uint16), want_s.view(np.uint16))
    assert np.array_equal(m16.view(np.uint16), want_m.view(np.uint16))
    # column 1 (halves already) comes back as the same values
    got = s16.reshape(N // 16, G, 16)[0, 1].astype(np.float32)
    assert np.array_equal(got, scales[:, 1])


@pytest.mark.parametrize("M,N,Kd,g", IL_CASES)
def test_w4a8_interleaved_vs_reference(isa, M, N, Kd, g):
    """The same integers as the row layout's product: within RTOL_A8 of the float64 product over the same q, d and
    weights, and within what quantizing x costs of the exact product."""
    x = activations(M, Kd)
    codes, scales, mins = make_w4(N, Kd, g, style="awq" if g != 64 else "q4_1")
    il = K.w4_interleave(pack_w4(codes), scales, mins, g)
    bias = rng.standard_normal(N).astype(np.float32)
    # the weights it holds: its scales and mins are halves
    ref, scale, qerr, exact = a8_references(x, w4_dequant64(codes, halves(scales), halves(mins), g), bias)
    for unit in int8_units(isa):
        for threads in (1, 2):
            y = K.linear_w4(x, *il, g, bias=bias, num_threads=threads, activations="int8", interleaved=True, **unit)
            err = np.abs(y - ref)
            assert (err <= RTOL_A8 * scale + 1e-30).all(), (
                f"{unit} threads={threads}: max err / bound {(err / (RTOL_A8 * scale)).max():.3g}"
            )
            assert (np.abs(y - exact) <= qerr + 2 * RTOL_A8 * scale).all()


@pytest.mark.parametrize("g", [32, 64, 128])
def test_w4a8_interleaved_paths_give_the_same_bits(g):
    """ops.h: every path does the same fp32 operations per output in the same order, so scalar, AVX-512 (maddubs),
    AVX-512 VNNI and AMX-INT8 agree bit for bit, with 1 or 2 threads, at decode's row counts (1-2, AMX's tile of 16
    rows mostly padding) and more (37: two full tiles and a partial one)."""
    codes, scales, mins = make_w4(96, 640, g)
    il = K.w4_interleave(pack_w4(codes), scales, mins, g)
    bias = rng.standard_normal(96).astype(np.float32)
    for M in (1, 2, 37):
        x = activations(M, 640)

        def run(unit, threads):
            return K.linear_w4(x, *il, g, bias=bias, num_threads=threads, activations="int8", interleaved=True, **unit)

        ref = with_isa("scalar", lambda: run({}, 1))
        for name in ["avx2", "avx512"]:
            if not K.isa_supported(name):
                continue  # the scalar path alone is still checked against float64 above
            for unit in int8_units(name):
                for threads in (1, 2):
                    got = with_isa(name, lambda: run(unit, threads))
                    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (M, name, unit, threads)


def test_w4a8_interleaved_batch_invariance(isa):
    """A row's outputs do not depend on the rows around it (row blocks of 1..4, AMX's tiles of 16, work items of 64
    rows, threads), nor on the unit the engine's row count picks (amx=None: AMX from amx_min_rows rows where present)."""
    Kd, N, g = 640, 80, 32
    x = activations(140, Kd)
    codes, scales, mins = make_w4(N, Kd, g)
    il = K.w4_interleave(pack_w4(codes), scales, mins, g)
    for unit in int8_units(isa) + [{}]:
        full = K.linear_w4(x, *il, g, num_threads=2, activations="int8", interleaved=True, **unit)
        for lo, hi in [(0, 1), (5, 8), (10, 12), (3, 23), (60, 139)]:
            part = K.linear_w4(x[lo:hi], *il, g, num_threads=1, activations="int8", interleaved=True, **unit)
            assert np.array_equal(part.view(np.uint32), full[lo:hi].view(np.uint32)), (lo, hi, unit)


@pytest.mark.parametrize("M", [1, 2, 5, 37])
@pytest.mark.parametrize("I,g", [(48, 32), (80, 128)])
def test_w4a8_interleaved_silu_mul_is_the_two_steps(isa, M, I, g):
    """linear_w4a8_il_silu (the MLP's gate/up product and silu_mul in one pass) gives the bits of the product
    followed by silu_mul on the same ISA, for decode's 1-2 rows (two gate/up pairs at once) and larger row counts,
    on each vector path and thread count; and silu(gate) * up within silu_mul's bound of float64 on them."""
    Kd = 640
    x = activations(M, Kd)
    codes, scales, mins = make_w4(2 * I, Kd, g)  # gates [I], then ups [I]
    il = K.w4_interleave(pack_w4(codes), scales, mins, g)
    for unit in int8_units(isa):
        gu = K.linear_w4(x, *il, g, activations="int8", interleaved=True, **unit)
        want = K.silu_mul(gu)
        gate, up = gu[:, :I].astype(np.float64), gu[:, I:].astype(np.float64)
        ref = gate / (1 + np.exp(-gate)) * up
        for threads in (1, 2):
            y = K.linear_w4(x, *il, g, num_threads=threads, activations="int8", interleaved=True, silu_mul=True, **unit)
            assert y.shape == (M, I)
            assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), (unit, threads)
            assert (np.abs(y - ref) <= 8 * 2.0**-23 * np.abs(ref) + 1e-30).all()


@pytest.mark.skipif(not K.amx_int8_available(), reason="this CPU (or OS, or build) has no AMX-INT8")
@pytest.mark.parametrize("g", [32, 64, 128])
def test_w4a8_interleaved_amx_is_the_vector_path(g):
    """AMX-INT8 (a tile product per run of 32 inputs and 16 rows, its dots taken into fp32 by the vector units) gives
    the vector path's bits at every row count around its tiles of 16 (a padded partial tile, a full one, one more
    row, several work items of 64), every group size, gate/up pairs and both thread counts; and amx=None (the
    engine's choice: AMX from amx_min_rows rows) is the same."""
    Kd = 1536
    codes, scales, mins = make_w4(160, Kd, g)
    codes[:16, :64] = 15  # the codes' extremes, with activations of both signs (unsigned x signed bytes)
    codes[16:32, :64] = 0
    il = K.w4_interleave(pack_w4(codes), scales, mins, g)
    bias = rng.standard_normal(160).astype(np.float32)
    for M in (1, 15, 16, 17, 33, 150):
        x = activations(M, Kd)
        for threads in (1, 2):
            kw = dict(num_threads=threads, activations="int8", interleaved=True)
            want = K.linear_w4(x, *il, g, bias=bias, amx=False, **kw)
            for amx in (True, None):
                got = K.linear_w4(x, *il, g, bias=bias, amx=amx, **kw)
                assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (M, threads, amx)
            want = K.linear_w4(x, *il, g, amx=False, silu_mul=True, **kw)
            got = K.linear_w4(x, *il, g, amx=True, silu_mul=True, **kw)
            assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (M, threads, "silu_mul")


@pytest.mark.parametrize("g", [32, 64, 128])
def test_tiles_packed_from_the_interleaved_layout_are_the_row_layouts(g):
    """linear_w4(..., interleaved=True, tile_unit=...) (the int8 mode's large steps on an AMX host: bf16 tiles packed
    from the interleaved layout) gives the row layout's tile product bit for bit where the scales and mins are halves
    (as interleaving leaves them): every tile unit here (the software model on any CPU), the AVX-512 packer and the
    scalar one (dequantize, then pack), 1 and 2 threads, partial blocks of rows and outputs, with the rows split among
    the threads (300 rows on 1 thread) or the strips (on 2)."""
    N, Kd = 80, 640
    codes, scales, mins = make_w4(N, Kd, g)
    scales, mins = halves(scales), halves(mins)
    rows = pack_w4(codes)
    il = K.w4_interleave(rows, scales, mins, g)
    bias = rng.standard_normal(N).astype(np.float32)
    units = ["model"] + (["amx"] if K.amx_available() else []) + (["avx512bf16"] if K.avx512bf16_available() else [])
    for M in (5, 70, 300):
        x = activations(M, Kd)
        for unit in units:
            for name in ["scalar", "avx512"]:
                if not K.isa_supported(name):
                    continue
                for threads in (1, 2):
                    kw = dict(bias=bias, tile_unit=unit, num_threads=threads)
                    want = with_isa(name, lambda: K.linear_w4(x, rows, scales, mins, g, **kw))
                    got = with_isa(name, lambda: K.linear_w4(x, *il, g, interleaved=True, **kw))
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), (M, unit, name, threads)


def test_w4a8_interleaved_amx_refusals():
    """amx=True asks for AMX-INT8: an error where the CPU has none, and it names only the interleaved products."""
    x = activations(2, 64)
    codes, scales, mins = make_w4(16, 64, 32)
    il = K.w4_interleave(pack_w4(codes), scales, mins, 32)
    with pytest.raises(ValueError, match="pass interleaved=True"):
        K.linear_w4(x, pack_w4(codes), scales, mins, 32, activations="int8", amx=True)
    with pytest.raises(ValueError, match="vnni=False names the maddubs path"):
        K.linear_w4(x, *il, 32, activations="int8", interleaved=True, amx=True, vnni=False)
    with pytest.raises(ValueError, match="pass offsets"):
        K.linear_i8(x, np.zeros((16, 64), np.int8), np.ones(16, np.float32), amx=True)
    if K.amx_int8_available():
        pytest.skip("this CPU has AMX-INT8: the refusal of amx=True cannot be shown (the checks above ran)")
    with pytest.raises(ValueError, match="has no AMX-INT8"):
        K.linear_w4(x, *il, 32, activations="int8", interleaved=True, amx=True)


# The int8 output matrix with int8 activations over interleaved weights (linear_i8a8_il): V a multiple of 16.
I8_IL_CASES = [(1, 48, 576), (3, 32, 160), (5, 64, 96), (17, 32, 1536), (150, 16, 64)]


def test_i8_interleave_matches_its_layout():
    q = rng.integers(-127, 128, (32, 96), dtype=np.int8)
    qi, off = K.i8_interleave(q)
    ref = q.reshape(2, 16, 24, 4).transpose(0, 2, 1, 3).reshape(32, 96)  # (t, n, v, j) -> (t, v, n, j)
    assert np.array_equal(qi, ref)
    sums = 128 * q.astype(np.int64).reshape(2, 16, 3, 32).sum(-1).transpose(0, 2, 1)  # (t, b, n)
    assert np.array_equal(off, sums.reshape(-1))


@pytest.mark.parametrize("M,N,Kd", I8_IL_CASES)
def test_i8a8_interleaved_vs_reference(isa, M, N, Kd):
    """The same activation integers as the 4-bit products; within RTOL_A8 of the float64 product over them."""
    x = activations(M, Kd)
    q = rng.integers(-127, 128, (N, Kd), dtype=np.int8)
    scales = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    qi, off = K.i8_interleave(q)
    ref, scale, _, _ = a8_references(x, q.astype(np.float64) * scales[:, None], bias)
    for unit in [u for u in int8_units(isa) if "vnni" not in u]:
        for threads in (1, 2):
            y = K.linear_i8(x, qi, scales, bias=bias, num_threads=threads, offsets=off, **unit)
            err = np.abs(y - ref)
            assert (err <= RTOL_A8 * scale + 1e-30).all(), f"{unit} {threads}: {(err / (RTOL_A8 * scale)).max():.3g}"
    # and on the exact product's terms: not the fp32 path (x does not survive int8 exactly)
    assert not np.array_equal(y, K.linear_i8(x, q, scales, bias=bias))


@pytest.mark.parametrize("N", [64, 80, 144])
def test_i8a8_interleaved_paths_give_the_same_bits(N):
    """VNNI (the only vector path), AMX-INT8 and scalar do the same fp32 operations per output in the same order,
    whichever strips a work item holds (4, 5 or 9 strips of 16 outputs on 1 and 2 threads: VNNI's 2-strip and
    1-strip kernels both run; gcc had contracted the 2-strip kernel's scale and bias into an fma)."""
    x = activations(37, 640)
    q = rng.integers(-127, 128, (N, 640), dtype=np.int8)
    q[3, :32] = -128  # AMX multiplies signed by signed: the int8 extremes, with activations of both signs
    scales = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    qi, off = K.i8_interleave(q)
    ref = with_isa("scalar", lambda: K.linear_i8(x, qi, scales, bias=bias, offsets=off))
    for name in ["avx2", "avx512"]:
        if K.isa_supported(name):
            for unit in [u for u in int8_units(name) if "vnni" not in u]:
                for threads in (1, 2):
                    got = with_isa(
                        name, lambda: K.linear_i8(x, qi, scales, bias=bias, num_threads=threads, offsets=off, **unit)
                    )
                    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (name, unit, threads)
    part = K.linear_i8(x[5:9], qi, scales, offsets=off)  # batch invariance
    assert np.array_equal(
        part.view(np.uint32), K.linear_i8(x, qi, scales, num_threads=2, offsets=off)[5:9].view(np.uint32)
    )


# The int8 output matrix with int16 activations per row (linear_i8(..., activations="int16"), I8Activations::Int16Rows,
# the head's where AMX-INT8 runs it): references in NumPy from ops.h / isa_kernels.h (A16Rows).
def a16_reference(x):
    """(hi, lo, alpha, c): alpha = float32(max|x| / 32767) per row, c = round_half_even(x * (1 / alpha)) in float32
    (0 for a zero row), hi = (c >> 8) + 128, lo = c & 255."""
    a = (np.abs(x).max(1) / np.float32(32767)).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(a > 0, np.float32(1) / a, np.float32(0)).astype(np.float32)
    c = np.rint(x * inv[:, None]).astype(np.int64)
    return ((c >> 8) + 128).astype(np.uint8), (c & 255).astype(np.uint8), a, c


# fp32 rounding of y = ((256 float(H) + float(L)) * alpha) * scale + bias: float(H) and float(L) may round once each
# (|H|, |L| past 2^24), then fma, two products and the bias add: 6 roundings of at most 2^-24 of the sum of |terms|.
RTOL_A16 = 6 * 2.0**-24


def test_quantize_a16_matches_reference(isa):
    x = activations(6, 40)  # K not a multiple of 16: the vector path's tail
    x[2] = 0.0  # a zero row: alpha 0, codes 0
    x[3, 5] = -x[3].__abs__().max() * 2  # the row's extreme negative: c = -32767
    x[4, :] = np.float32(0.5) ** 20  # tiny values: alpha tiny, every code 32767
    hi, lo, alpha = K.quantize_a16(x)
    rh, rl, ra, c = a16_reference(x)
    assert np.array_equal(alpha.view(np.uint32), ra.view(np.uint32)), "alpha differs in bits"
    assert np.array_equal(hi, rh) and np.array_equal(lo, rl), f"{int((hi != rh).sum() + (lo != rl).sum())} bytes differ"
    assert c.min() == -32767 and c.max() == 32767
    assert np.array_equal((hi.astype(np.int64) - 128) * 256 + lo, c)


@pytest.mark.parametrize("M,N,Kd", I8_IL_CASES)
def test_i8a16_interleaved_vs_reference(isa, M, N, Kd):
    """Within RTOL_A16 of the float64 product over the same integers, on every unit; the int8-per-run activations of
    the same product miss that bound by far (the int16 codes are what make it this close)."""
    x = activations(M, Kd)
    q = rng.integers(-127, 128, (N, Kd), dtype=np.int8)
    q[0, :64] = -128
    scales = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    qi, off = K.i8_interleave(q)
    _, _, a, c = a16_reference(x)
    w = q.astype(np.float64) * scales[:, None].astype(np.float64)
    xq = c.astype(np.float64) * a[:, None].astype(np.float64)
    ref, scale = xq @ w.T + bias, np.abs(xq) @ np.abs(w).T + np.abs(bias)
    units = [u for u in int8_units(isa) if "vnni" not in u]
    for unit in [u for u in units if not (u.get("amx") and Kd % 64)]:  # AMX: K a multiple of 64 (refused below)
        for threads in (1, 2):
            y = K.linear_i8(x, qi, scales, bias=bias, num_threads=threads, offsets=off, activations="int16", **unit)
            err = np.abs(y - ref)
            assert (err <= RTOL_A16 * scale).all(), f"{unit} {threads}: {(err / (RTOL_A16 * scale)).max():.3g}"
    y8 = K.linear_i8(x, qi, scales, bias=bias, offsets=off)
    assert not (np.abs(y8 - ref) <= RTOL_A16 * scale).all()


@pytest.mark.parametrize("N", [64, 80, 144])
def test_i8a16_interleaved_paths_give_the_same_bits(N):
    """AMX-INT8 (the dots over all of K in the tiles), VNNI and scalar form the same integers and the same fp32
    operations per output: the same bits, whichever strips a work item holds (pairs and a lone strip), on 1 and 2
    threads; a row's outputs do not depend on the rows beside it."""
    x = activations(37, 640)
    q = rng.integers(-127, 128, (N, 640), dtype=np.int8)
    q[3, :64] = -128
    scales = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    qi, off = K.i8_interleave(q)
    ref = with_isa("scalar", lambda: K.linear_i8(x, qi, scales, bias=bias, offsets=off, activations="int16"))
    for name in ["avx2", "avx512"]:
        if K.isa_supported(name):
            for unit in [u for u in int8_units(name) if "vnni" not in u]:
                for threads in (1, 2):
                    got = with_isa(
                        name,
                        lambda: K.linear_i8(
                            x, qi, scales, bias=bias, num_threads=threads, offsets=off, activations="int16", **unit
                        ),
                    )
                    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), (name, unit, threads)
    part = K.linear_i8(x[5:9], qi, scales, offsets=off, activations="int16")  # batch invariance
    full = K.linear_i8(x, qi, scales, num_threads=2, offsets=off, activations="int16")
    assert np.array_equal(part.view(np.uint32), full[5:9].view(np.uint32))


def test_i8a16_validation():
    x = activations(16, 96)  # K = 96: not a multiple of 64
    q = rng.integers(-127, 128, (16, 96), dtype=np.int8)
    qi, off = K.i8_interleave(q)
    s = np.ones(16, np.float32)
    with pytest.raises(ValueError, match="activations must be 'int8' .* or 'int16' .* got 'int4'"):
        K.linear_i8(x, qi, s, offsets=off, activations="int4")
    with pytest.raises(ValueError, match="activations='int16' runs over interleaved weights: pass offsets"):
        K.linear_i8(x, q, s, activations="int16")
    if K.amx_int8_available():
        with pytest.raises(ValueError, match="need K a multiple of 64, got 96; use Int8Unit::Auto"):
            K.linear_i8(x, qi, s, offsets=off, activations="int16", amx=True)
    # Auto at 16 rows (the AMX row count) takes the vector path for this K: the scalar path's bits
    got = K.linear_i8(x, qi, s, offsets=off, activations="int16")
    ref = with_isa("scalar", lambda: K.linear_i8(x, qi, s, offsets=off, activations="int16"))
    assert np.array_equal(got.view(np.uint32), ref.view(np.uint32))


def test_w4a8_validation():
    x = activations(2, 64)
    codes, scales, mins = make_w4(4, 64, 32)
    packed = pack_w4(codes)
    with pytest.raises(ValueError, match="activations must be 'fp32' or 'int8'"):
        K.linear_w4(x, packed, scales, mins, 32, activations="int4")
    with pytest.raises(ValueError, match="pass no tile_unit"):
        K.linear_w4(x, packed, scales, mins, 32, activations="int8", tile_unit="model")
    with pytest.raises(ValueError, match="multiple of 32"):
        K.quantize_q8(np.zeros((1, 40), np.float32))
    with pytest.raises(ValueError, match="interleaved=True takes activations='int8' \\(or a tile_unit"):
        K.linear_w4(x, packed, scales, mins, 32, interleaved=True)
    with pytest.raises(ValueError, match=r"scales must be w4_interleave's \(C-contiguous float16\) .* float32"):
        K.linear_w4(x, packed, scales, mins, 32, activations="int8", interleaved=True)
    s16, m16 = scales.astype(np.float16), mins.astype(np.float16)
    with pytest.raises(ValueError, match="N a multiple of 16, got 4"):
        K.linear_w4(x, packed, s16, m16, 32, activations="int8", interleaved=True)
    with pytest.raises(ValueError, match="silu_mul=True takes interleaved=True"):
        K.linear_w4(x, packed, scales, mins, 32, activations="int8", silu_mul=True)
    codes16, scales16, mins16 = make_w4(16, 64, 32)
    c16, s16_16, m16_16 = K.w4_interleave(pack_w4(codes16), scales16, mins16, 32)
    with pytest.raises(ValueError, match="silu_mul=True needs N .* a multiple of 32, got 16"):
        K.linear_w4(x, c16, s16_16, m16_16, 32, activations="int8", interleaved=True, silu_mul=True)
    with pytest.raises(ValueError, match="silu_mul=True takes no bias"):
        K.linear_w4(
            x,
            c16,
            s16_16,
            m16_16,
            32,
            bias=np.zeros(16, np.float32),
            activations="int8",
            interleaved=True,
            silu_mul=True,
        )
    with pytest.raises(ValueError, match="N must be a multiple of 16, got 4"):
        K.w4_interleave(packed, scales, mins, 32)
    q = np.zeros((16, 40), np.int8)
    with pytest.raises(ValueError, match="K must be a positive multiple of 32, got 40"):
        K.i8_interleave(q)
    with pytest.raises(ValueError, match="offsets must hold N \\* K / 32 int32"):
        K.linear_i8(
            np.zeros((1, 64), np.float32),
            np.zeros((16, 64), np.int8),
            np.ones(16, np.float32),
            offsets=np.zeros(3, np.int32),
        )
