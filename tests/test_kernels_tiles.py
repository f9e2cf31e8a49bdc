"""The bf16 tile paths (prefill_precision="bf16"): the tile GEMM (linear_bf16_tiles: x and w rounded to
bf16, products summed in fp32) and prefill attention on tiles (paged_attention(tile_unit=...): flash
attention, q/K/V and the softmax probabilities rounded to bf16).

Three tile units, each checked against float64 on the same bf16-rounded inputs: the software model of
AMX's instruction (runs on every CPU: it checks the packing, padding, blocking and threading), AMX tiles
where the CPU has AMX-BF16, and VDPBF16PS where it has AVX512-BF16 (each skipped elsewhere, with the
reason). The vector helpers around the tiles (bf16 rounding, softmax chunk, accumulator update, the
strip packers) run on each ISA path in turn.
"""

import numpy as np
import pytest
from kernel_paths import (  # noqa: F401  (isa is a fixture)
    ISAS,
    PagedCache,
    assert_bits_equal,
    attn_ref,
    bf16_round,
    isa,
    with_isa,
)

from lmrt import _bf16
from lmrt._core import kernels as K


# Summing K products in fp32 (exact products of bf16 inputs): each partial sum rounds once, so
# |error| <= K * 2^-24 * sum_k |x_k w_k| (the classic gamma_K bound); we allow twice that.
def fp32_sum_bound(xr, wr, bias):
    mag = np.abs(xr) @ np.abs(wr).T + (0 if bias is None else np.abs(bias))
    return 2 * (xr.shape[1] + 1) * 2.0**-24 * mag


UNITS = ["model", "amx", "avx512bf16"]
UNIT_MISSING = {
    "amx": "CPU lacks AMX-TILE/AMX-BF16, or the OS did not grant the tile state",
    "avx512bf16": "CPU lacks AVX-512 with AVX512-BF16",
}


def unit_available(name):
    return {"model": True, "amx": K.amx_available(), "avx512bf16": K.avx512bf16_available()}[name]


@pytest.fixture(params=UNITS)
def unit(request):
    if not unit_available(request.param):
        pytest.skip(UNIT_MISSING[request.param])
    return request.param


SHAPES = [  # (M, K, N): one tile, padding on every side, many blocks, the model's prefill shapes; decode batches
    (1, 32, 16),  # of 16 and 20 rows (a unit may compute only the rows needed: AVX512-BF16 rounds them up to 8)
    (5, 40, 20),
    (3, 17, 3),
    (16, 576, 960),
    (20, 96, 70),
    (33, 96, 70),
    (64, 576, 960),
    (40, 1536, 576),
    (45, 1216, 80),  # 38 steps, a partial row block and strip
    (260, 96, 70),  # 9 row blocks: the rows split among the threads (linear_bf16.cpp), the last block partial
]


@pytest.mark.parametrize("M,K_,N", SHAPES)
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_float64_on_bf16_inputs(unit, M, K_, N, with_bias):
    rng = np.random.default_rng(M * 1000 + K_ + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    w = (rng.standard_normal((N, K_)) / np.sqrt(K_)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
    y = K.linear_bf16_tiles(x, w, bias, tile_unit=unit)
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w)).astype(np.float64)
    ref = xr @ wr.T + (0 if bias is None else bias.astype(np.float64))
    err = np.abs(y - ref)
    bound = fp32_sum_bound(xr, wr, bias)
    assert (err <= bound).all(), f"max error {err.max():.3g}, worst ratio to the bound {(err / bound).max():.3g}"


@pytest.mark.parametrize("mode", ["store", "silu_mul"])
def test_a_row_does_not_depend_on_how_many_rows_run(unit, mode):
    # Each output row is its own dot products on every unit, whether its block computes all 32 rows (AMX, the
    # model, a full block) or only the rows needed (AVX512-BF16 on a partial block): the same bits. (Not "add":
    # a full block accumulates onto y inside the tiles, a partial one adds y after, two roundings.)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 96)).astype(np.float32)
    w = (rng.standard_normal((128, 96)) / np.sqrt(96)).astype(np.float32)
    full = K.linear_bf16_tiles(x, w, tile_unit=unit, mode=mode)
    for M in (1, 8, 13, 16, 20, 32, 47):
        assert_bits_equal(K.linear_bf16_tiles(x[:M], w, tile_unit=unit, mode=mode), full[:M], f"{M} rows")


@pytest.mark.parametrize(
    "M,K_,N", [(5, 40, 20), (64, 576, 960), (40, 96, 70), (64, 1536, 576), (45, 1216, 80), (260, 96, 70)]
)
def test_add_mode_accumulates_into_y(unit, M, K_, N):
    rng = np.random.default_rng(M + K_ + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    w = (rng.standard_normal((N, K_)) / np.sqrt(K_)).astype(np.float32)
    y0 = rng.standard_normal((M, N)).astype(np.float32)
    for bias in (None, rng.standard_normal(N).astype(np.float32)):
        y = K.linear_bf16_tiles(x, w, bias, tile_unit=unit, mode="add", y0=y0)
        xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
        wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w)).astype(np.float64)
        ref = y0 + xr @ wr.T + (0 if bias is None else bias)
        bound = fp32_sum_bound(xr, wr, bias) + 2 * 2.0**-24 * np.abs(ref)  # one more rounded add: y0 + c
        assert (np.abs(y - ref) <= bound).all()


# silu(g) * u of fp32 values within their sum bound, then rounded once to bf16 (2^-9 relative).
@pytest.mark.parametrize(
    "M,K_,N", [(5, 40, 64), (64, 576, 256), (33, 96, 128), (20, 96, 128), (40, 1216, 128), (260, 96, 128)]
)
def test_silu_mul_mode_pairs_gates_with_their_ups(unit, isa, M, K_, N):
    rng = np.random.default_rng(M * 7 + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    w = (rng.standard_normal((N, K_)) / np.sqrt(K_)).astype(np.float32)
    act = _bf16.bf16_bits_to_float32(K.linear_bf16_tiles(x, w, tile_unit=unit, mode="silu_mul"))  # bf16 bits
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w)).astype(np.float64)
    c = xr @ wr.T
    g, u = c[:, : N // 2], c[:, N // 2 :]
    ref = g / (1 + np.exp(-g)) * u
    bound = fp32_sum_bound(xr, wr, None)
    # d(silu(g) u) = (silu'(g) u) dg + silu(g) du, |silu'| <= 1.1
    err_in = 1.1 * np.abs(u) * bound[:, : N // 2] + np.abs(g) * bound[:, N // 2 :]
    assert act.shape == (M, N // 2)
    assert (np.abs(act - ref) <= err_in + 2.0**-8 * np.abs(ref) + 1e-30).all()
    with pytest.raises(ValueError, match="multiple of 64"):
        K.linear_bf16_tiles(x, w[:32], tile_unit=unit, mode="silu_mul")


# Gates far past e^-g's fp32 range (|g| up to ~400): silu(g) u saturates to g u above and to 0 below (the bf16
# epilogue's e^-g has no clamps: inf there, so 1 / (1 + e) = 0), within the same bound, never NaN.
def test_silu_mul_mode_saturates_far_gates(unit, isa):
    rng = np.random.default_rng(9)
    M, K_, N = 40, 96, 128
    x = (80 * rng.standard_normal((M, K_))).astype(np.float32)
    w = (rng.standard_normal((N, K_)) / np.sqrt(K_)).astype(np.float32)
    act = _bf16.bf16_bits_to_float32(K.linear_bf16_tiles(x, w, tile_unit=unit, mode="silu_mul"))
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w)).astype(np.float64)
    c = xr @ wr.T
    g, u = c[:, : N // 2], c[:, N // 2 :]
    assert np.abs(g).max() > 200 and (g < -100).any() and (g > 100).any()
    with np.errstate(over="ignore"):
        ref = g / (1 + np.exp(-g)) * u
    bound = fp32_sum_bound(xr, wr, None)
    err_in = 1.1 * np.abs(u) * bound[:, : N // 2] + np.abs(g) * bound[:, N // 2 :]
    assert np.isfinite(act).all()
    assert (np.abs(act - ref) <= err_in + 2.0**-8 * np.abs(ref) + 1e-30).all()


# int8 weights (the output matrix) on the tiles: q is exact in bf16, each raw dot times its row's scale after.
@pytest.mark.parametrize("M,K_,N", [(5, 40, 20), (16, 576, 100), (33, 96, 70)])
def test_int8_weights_match_float64_and_every_isa_packs_the_same_bits(unit, M, K_, N):
    rng = np.random.default_rng(M + K_ + N)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    q = rng.integers(-128, 128, (N, K_), dtype=np.int8)
    scales = rng.uniform(1e-3, 2e-2, N).astype(np.float32)
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    qf = q.astype(np.float64)
    ref = (xr @ qf.T) * scales
    bound = fp32_sum_bound(xr, qf, None) * scales + 2 * 2.0**-24 * np.abs(ref)  # and the scale's product
    ys = {}
    for name in ISAS:  # the strip packers: widened in registers (AVX-512), or i8_dequant then tile_pack16
        if not K.isa_supported(name):
            continue
        ys[name] = with_isa(name, lambda: K.linear_i8(x, q, scales, num_threads=2, tile_unit=unit))
        assert (np.abs(ys[name] - ref) <= bound).all(), name
    for name, y in ys.items():
        assert_bits_equal(y, ys["scalar"], f"{name} vs scalar")


def pack_w4_codes(codes):
    """codes [N, K] in 0..15 -> [N, K/2] uint8 (the core's layout, as in test_kernels_quant.py)."""
    N, Kd = codes.shape
    c = codes.astype(np.uint8).reshape(N, Kd // 32, 2, 16)
    return np.ascontiguousarray((c[:, :, 0, :] | (c[:, :, 1, :] << 4)).reshape(N, Kd // 2))


# 4-bit weights on the tiles: each strip is dequantised (fma in fp32) and rounded to bf16 as it is packed;
# the AVX-512 packers do it in registers. Against float64 on the same bf16-rounded weights, and every ISA's
# packer against the scalar one (the same bits: dequantisation and rounding are exact operations).
@pytest.mark.parametrize(
    "M,K_,N,g", [(5, 64, 20, 32), (64, 576, 960, 64), (40, 1536, 576, 128), (33, 128, 48, 32), (260, 576, 100, 64)]
)
def test_w4_weights_on_tiles(unit, isa, M, K_, N, g):
    rng = np.random.default_rng(M + K_ + N + g)
    codes = rng.integers(0, 16, size=(N, K_), dtype=np.uint8)
    scales = rng.uniform(0.002, 0.05, size=(N, K_ // g)).astype(np.float32)
    mins = rng.uniform(-0.4, 0.0, size=(N, K_ // g)).astype(np.float32)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    y = K.linear_w4(x, pack_w4_codes(codes), scales, mins, g, bias, num_threads=2, tile_unit=unit)
    rep = lambda a: np.repeat(a, g, axis=1)  # noqa: E731
    w32 = (codes.astype(np.float32) * rep(scales) + rep(mins)).astype(np.float32)  # fma vs mul+add: within 1 ulp
    wr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(w32)).astype(np.float64)
    xr = _bf16.bf16_bits_to_float32(_bf16.float32_to_bf16_bits(x)).astype(np.float64)
    ref = xr @ wr.T + bias
    # + the rare weight that fma rounds to the other side of a bf16 tie from mul+add: 2^-8 of it
    bound = fp32_sum_bound(xr, wr, bias) + 2.0**-8 * np.abs(xr) @ np.abs(wr).T / K_
    assert (np.abs(y - ref) <= bound).all()
    from kernel_paths import with_isa

    base = with_isa(
        "scalar", lambda: K.linear_w4(x, pack_w4_codes(codes), scales, mins, g, bias, num_threads=2, tile_unit=unit)
    )
    assert_bits_equal(y, base, f"{isa} packer vs scalar")


# int8 rows (the output matrix when many rows need logits): q is exact in bf16, so only x rounds; each raw
# dot (the fp32 sum bound) is then multiplied by its row scale (one more rounding). Every ISA's int8 widening
# gives the same bits (float(q) is exact).
@pytest.mark.parametrize("M,K_,N", [(5, 40, 20), (64, 576, 1000), (33, 96, 70)])
def test_int8_weights_on_tiles(unit, isa, M, K_, N):
    rng = np.random.default_rng(M + K_ + N)
    q = rng.integers(-127, 128, size=(N, K_), dtype=np.int8)
    scales = rng.uniform(1e-3, 2e-2, size=N).astype(np.float32)
    x = rng.standard_normal((M, K_)).astype(np.float32)
    y = K.linear_i8(x, q, scales, num_threads=2, tile_unit=unit)
    xr = bf16_round(x).astype(np.float64)
    qd = q.astype(np.float64)
    ref = (xr @ qd.T) * scales.astype(np.float64)
    bound = fp32_sum_bound(xr, qd, None) * scales + 2 * 2.0**-24 * np.abs(ref)
    assert (np.abs(y - ref) <= bound).all()
    from kernel_paths import with_isa

    base = with_isa("scalar", lambda: K.linear_i8(x, q, scales, num_threads=2, tile_unit=unit))
    assert_bits_equal(y, base, f"{isa} int8 widening vs scalar")
    with pytest.raises(ValueError, match="no bias"):
        K.linear_i8(x, q, scales, np.zeros(N, np.float32), tile_unit=unit)


def test_bf16_weights_equal_rounded_fp32_weights(unit):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((20, 64)).astype(np.float32)
    w = rng.standard_normal((48, 64)).astype(np.float32)
    a = K.linear_bf16_tiles(x, w, tile_unit=unit)
    b = K.linear_bf16_tiles(x, _bf16.float32_to_bf16_bits(w), wdtype="bf16", tile_unit=unit)
    assert_bits_equal(a, b, "bf16 weights vs the same weights given as fp32")


@pytest.mark.parametrize("M", [100, 520])
@pytest.mark.parametrize("threads", [2, 3])
def test_threads_change_no_bit(unit, threads, M):
    # 520 rows (17 blocks): 1 and 2 threads split the rows (groups of 8 blocks a thread or more), 3 the strips
    rng = np.random.default_rng(threads)
    x = rng.standard_normal((M, 192)).astype(np.float32)
    w = rng.standard_normal((192, 192)).astype(np.float32)
    for mode in ("store", "silu_mul"):
        one = K.linear_bf16_tiles(x, w, tile_unit=unit, mode=mode)
        got = K.linear_bf16_tiles(x, w, num_threads=threads, tile_unit=unit, mode=mode)
        assert_bits_equal(got, one, f"{mode}: {threads} threads vs 1")


@pytest.mark.parametrize("missing", ["amx", "avx512bf16"])
def test_a_missing_unit_is_refused_with_the_way_out(missing):
    if unit_available(missing):
        pytest.skip(f"this CPU has {missing}: the refusal cannot be shown")
    with pytest.raises(ValueError, match="tile_unit='model'"):
        K.linear_bf16_tiles(np.ones((2, 32), np.float32), np.ones((16, 32), np.float32), tile_unit=missing)
    with pytest.raises(ValueError, match="tile_unit must be"):
        K.linear_bf16_tiles(np.ones((2, 32), np.float32), np.ones((16, 32), np.float32), tile_unit="fast")


# ---------------------------------------------------------------- attention on tiles


# Against float64 on bf16-rounded q, K, V, the error comes from the probabilities' bf16 rounding
# (|p~ - p| <= 2^-9 p, in the weighted sum and in its normaliser: at most 2 * 2^-9 * max|v|), plus the
# fp32 scores and exp (the exact path's bound, attn_tol in test_kernels.py: far smaller).
def attn_tiles_tol(hd):
    return 2 * 2.0**-9 + 4 * (hd + 16) * 2.0**-24


ATTN_TILE_CONFIGS = [  # (n_heads, n_kv_heads, head_dim, block_size)
    (9, 3, 64, 64),  # SmolLM2-135M, the default block size
    (9, 3, 64, 16),  # blocks smaller than a key chunk
    (4, 2, 128, 32),  # Llama-3-8B's head size
    (2, 1, 48, 24),  # head_dim not a multiple of 32 (padded), blocks not a power of 2
]
# (cached length, query positions): a whole prompt with a partial last chunk; a later chunk of a prompt
# (chunked prefill / prefix cache hit); a short chunk and a decode row (both on the exact path).
ATTN_TILE_SEQS = [(150, np.arange(150)), (130, np.arange(70, 130)), (40, np.arange(20, 40)), (51, np.array([50]))]


def build_tile_case(n_heads, n_kv, hd, bs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    c = PagedCache(90 * 64 // bs, n_kv, hd, bs, dtype, rng)
    seqs = []
    for length, pos in ATTN_TILE_SEQS:
        table, k, v = c.new_seq(length)
        seqs.append(
            (rng.standard_normal((len(pos), n_heads * hd)).astype(np.float32), table, pos.astype(np.int32), k, v)
        )
    return c, seqs


def run_tiles(c, seqs, n_heads, scale, threads, tile_unit, min_rows=32):
    """tile_unit None: the exact path."""
    return c.attend(seqs, n_heads, scale, threads, tile_unit, min_rows)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", ATTN_TILE_CONFIGS)
def test_attention_tiles_match_float64(unit, isa, n_heads, n_kv, hd, bs, dtype):
    c, seqs = build_tile_case(n_heads, n_kv, hd, bs, dtype)
    scale = hd**-0.5
    outs = run_tiles(c, seqs, n_heads, scale, 2, unit)
    exact = run_tiles(c, seqs, n_heads, scale, 2, None)
    for (q, _table, pos, k, v), out, ex in zip(seqs, outs, exact):
        if len(pos) < 32:  # fewer rows than min_rows: the exact path, bit for bit
            assert_bits_equal(out, ex, f"{len(pos)}-row sequence")
            continue
        ref = attn_ref(bf16_round(q), bf16_round(k), bf16_round(v), pos, n_heads, n_kv, hd, scale)
        err = np.abs(out - ref).max() / np.abs(bf16_round(v)).max()
        assert err <= attn_tiles_tol(hd), f"{len(pos)} rows: max error {err:.3g} of max|v|"


# The rounding of a unit's inputs (to_bf16_fn(unit)): to nearest even, ties and NaN as f32_to_bf16; a hardware
# unit's (AVX512-BF16's instruction where the ISA is AVX-512) makes a denormal a zero of its sign, as the unit treats a
# denormal input anyway.
def test_tile_input_rounding_is_rne_and_a_hardware_unit_flushes_denormals(unit, isa):
    rng = np.random.default_rng(5)
    bits = np.concatenate(
        [
            rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32),  # every class of value
            np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x00000001, 0x807FFFFF, 0x00400000], np.uint32),
            np.array([0x7F800000, 0xFF800000, 0x00000000, 0x80000000], np.uint32),
        ]
    )
    vals = bits.view(np.float32)
    finite = ~np.isnan(vals)
    got = K.f32_to_bf16(vals, tile_unit=unit)
    want = K.f32_to_bf16(vals)
    flush = unit != "model" and isa == "avx512"
    denormal = (np.abs(vals) < np.finfo(np.float32).tiny) & (vals != 0)
    if flush:
        want = np.where(denormal, (bits >> 16).astype(np.uint16) & 0x8000, want)
    np.testing.assert_array_equal(got[finite], want[finite])
    assert np.all((got[~finite] & 0x7FFF) > 0x7F80)  # a NaN stays a NaN
    assert denormal.sum() > 0 and (not flush or np.all(got[denormal] & 0x7FFF == 0))


# AttnSeq::out_bf16 (the o product's input on the tile prefill): every sequence's output written as bf16 by the
# attention itself, the tiled ones and those on the exact path alike, is the fp32 output rounded as the unit's
# inputs are (to_bf16_fn(unit)), bit for bit.
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", ATTN_TILE_CONFIGS)
def test_attention_tiles_bf16_output_is_the_fp32_output_rounded(unit, isa, n_heads, n_kv, hd, bs):
    c, seqs = build_tile_case(n_heads, n_kv, hd, bs, "bf16", seed=3)
    outs = c.attend(seqs, n_heads, hd**-0.5, 2, unit)
    bits = c.attend(seqs, n_heads, hd**-0.5, 2, unit, bf16_out=True)
    for (_q, _table, pos, _k, _v), out, b in zip(seqs, outs, bits):
        assert b.dtype == np.uint16 and b.shape == out.shape
        assert_bits_equal(b, K.f32_to_bf16(out, tile_unit=unit), f"{len(pos)}-row sequence")
    with pytest.raises(ValueError, match="bf16_out=True takes a tile_unit"):
        c.attend(seqs, n_heads, hd**-0.5, 2, None, bf16_out=True)


# The softmax works in base 2 against an offset per row that it raises only when a chunk's scores pass it by more
# than kSoftmaxSlack (16 in log2 units; ops: isa_kernels.h): scores that jump by ~29 (a raise and a rescale of the
# accumulator), then by ~9 (no raise: probabilities up to 2^9 with the offset kept), then fall back, against float64.
def test_attention_tiles_scores_that_pass_the_offset_and_stay_within_it(unit, isa):
    rng = np.random.default_rng(7)
    hd, L = 64, 256
    c = PagedCache(8, 1, hd, 64, "f32", rng)
    table = np.array([c.free.pop() for _ in range(L // 64)], np.int32)
    level = np.repeat([0.0, 20.0, 26.0, 10.0], 64) + rng.standard_normal(L)  # scale * q.k per key, natural log units
    k = (0.1 * rng.standard_normal((L, hd))).astype(np.float32)
    k[:, 0] = level  # q = 8 e0 and scale 1/8: scale * q.k = level
    v = rng.standard_normal((L, hd)).astype(np.float32)
    c.store(k, v, table[np.arange(L) // 64].astype(np.int64) * 64 + np.arange(L) % 64)
    q = np.zeros((L, hd), np.float32)
    q[:, 0] = 8.0
    pos = np.arange(L, dtype=np.int32)
    (out,) = c.attend([(q, table, pos)], 1, 0.125, 2, unit)
    ref = attn_ref(bf16_round(q), bf16_round(k), bf16_round(v), pos, 1, 1, hd, 0.125)
    err = np.abs(out - ref).max() / np.abs(bf16_round(v)).max()
    assert err <= attn_tiles_tol(hd), f"max error {err:.3g} of max|v|"


def test_attention_tiles_threads_and_batch_change_no_bit(unit):
    n_heads, n_kv, hd, bs = 9, 3, 64, 64
    c, seqs = build_tile_case(n_heads, n_kv, hd, bs, "f32", seed=1)
    tiles = unit
    one = run_tiles(c, seqs, n_heads, 0.125, 1, tiles)
    for threads in (2, 3):
        for i, (a, b) in enumerate(zip(run_tiles(c, seqs, n_heads, 0.125, threads, tiles), one)):
            assert_bits_equal(a, b, f"sequence {i}, {threads} threads vs 1")
    # A sequence's rows do not depend on the other sequences in the call (each item is one head's
    # 32-row block of one sequence).
    alone = run_tiles(c, seqs[:1], n_heads, 0.125, 2, tiles)[0]
    assert_bits_equal(alone, one[0], "first sequence alone")


def test_attention_tiles_min_rows_and_validation(unit):
    n_heads, n_kv, hd, bs = 4, 2, 32, 16
    c, seqs = build_tile_case(n_heads, n_kv, hd, bs, "f32", seed=2)
    exact = run_tiles(c, seqs, n_heads, 0.2, 1, None)
    # min_rows above every sequence's row count: everything takes the exact path.
    for a, b in zip(run_tiles(c, seqs, n_heads, 0.2, 1, unit, min_rows=1000), exact):
        assert_bits_equal(a, b, "min_rows=1000")
    with pytest.raises(ValueError, match="tile_unit must be"):
        run_tiles(c, seqs, n_heads, 0.2, 1, "fast")


@pytest.mark.parametrize("missing", ["amx", "avx512bf16"])
def test_attention_tiles_on_a_missing_unit_the_error_names_the_way_out(missing):
    if unit_available(missing):
        pytest.skip(f"this CPU has {missing}: the refusal cannot be shown")
    c, seqs = build_tile_case(4, 2, 32, 16, "f32")
    with pytest.raises(ValueError, match="tile_unit='model'"):
        run_tiles(c, seqs, 4, 0.2, 1, missing)
