"""The quantized KV cache (KVDType I8 / I4 / I4Channel, csrc/kernels/cpu/ops.h): quantize-on-write (and, for
I4Channel K, staging and sealing) against a NumPy reference of the same scheme (codes, scales and zero points
equal), and attention over the codes against a float64 reference of the same dequantised values on every ISA
path, each forced in turn, and on the bf16 tile path; then against attention over the unquantized values, with
the quantization's own bound."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_paths import (  # noqa: F401  (isa is a fixture)
    PagedCache,
    assert_bits_equal,
    attn_ref,
    bf16_round,
    held_row_scales,
    isa,
    quantize_kv_rows_ref,
    unpack_kv_codes,
)

from lmrt._core import kernels as K

EPS32 = 2.0**-24
rng = np.random.default_rng(77)
BITS = {"i8": 8, "i4": 4}


# The exact path over dequantised values is the fp32 kernel's arithmetic on those values (they are exact in fp32):
# the same bound as tests/test_kernels.py's attention, 4 (head_dim + 16) u relative to max|v|.
def attn_tol(hd):
    return 4 * (hd + 16) * EPS32


# The bf16 tile path over them: q, K, V and the probabilities rounded to bf16 (as tests/test_kernels_tiles.py).
def tile_tol(hd):
    return 2.0**-6


def rows_for_store_test(hd):
    """Rows of every kind the quantizer meets: both signs, all positive, all negative, zeros, a constant row,
    a tiny and a large magnitude, one outlier dim."""
    x = rng.standard_normal((12, hd)).astype(np.float32)
    x[1] = np.abs(x[1]) + 0.5
    x[2] = -np.abs(x[2]) - 0.5
    x[3] = 0.0
    x[4] = 1.25
    x[5] *= 1e-6
    x[6] *= 3e3
    x[7, 5] = 60.0  # an outlier channel, as keys have
    return x


@pytest.mark.parametrize("dtype,hd", [("i8", 64), ("i8", 20), ("i4", 64), ("i4", 96)])
def test_kv_store_quantizes_as_the_reference(isa, dtype, hd):
    """Every ISA path's quantizer gives the reference's codes, scales and zeros (head sizes with a partial vector)."""
    n_kv, bs = 2, 4
    c = PagedCache(8, n_kv, hd, bs, dtype, rng)
    x = rows_for_store_test(hd)  # 12 rows: 6 tokens x 2 kv heads
    k, v = x.reshape(6, n_kv * hd), (x[::-1] * 0.5).copy().reshape(6, n_kv * hd)
    table = np.array([5, 2], np.int32)
    slots = table[np.arange(6) // bs].astype(np.int64) * bs + np.arange(6) % bs
    # Rows written at different steps: one token at a time, as decoding writes them.
    for t in range(6):
        c.store(k[t : t + 1], v[t : t + 1], slots[t : t + 1])
    for which, src in (("k", k), ("v", v)):
        codes, scales, zeros = quantize_kv_rows_ref(src.reshape(12, hd), BITS[dtype])
        cache = c.k if which == "k" else c.v
        for t in range(6):
            for h in range(n_kv):
                row = (table[t // bs] * n_kv + h) * bs + t % bs
                got = unpack_kv_codes(cache[table[t // bs], h, t % bs], dtype)
                np.testing.assert_array_equal(got, codes[t * n_kv + h], err_msg=f"{which} token {t} head {h}")
                assert c.params[f"{which}_scales"][row] == scales[t * n_kv + h]
                assert c.params[f"{which}_zeros"][row] == zeros[t * n_kv + h]
        # The dequantised row is within half a step of the value (the range covers it; scale rounded up).
        held = c.held(which, table, 6).reshape(12, hd)
        step = scales.view(np.float16).astype(np.float64)[:, None]
        assert (np.abs(held.astype(np.float64) - src.reshape(12, hd)) <= 0.5 * step + 1e-30).all()


def test_int4_channel_keys_are_staged_then_sealed_per_channel(isa):
    """i4c K: each row staged as an i8 row (the i8 reference), and a full block quantized per channel from the
    staged values (the i4 reference applied to the block's columns); V is i4 per row."""
    hd, n_kv, bs = 64, 2, 4
    c = PagedCache(8, n_kv, hd, bs, "i4c", rng)
    x = rows_for_store_test(hd)
    k, v = x.reshape(6, n_kv * hd), (x[::-1] * 0.5).copy().reshape(6, n_kv * hd)
    table = np.array([5, 2], np.int32)
    slots = table[np.arange(6) // bs].astype(np.int64) * bs + np.arange(6) % bs
    for t in range(6):  # one token at a time: block 5 fills at token 3 and is sealed then; block 2 stays staged
        c.store(k[t : t + 1], v[t : t + 1], slots[t : t + 1])
    codes8, scales8, zeros8 = quantize_kv_rows_ref(k.reshape(12, hd), 8)
    st_codes, st_scales, st_zeros, of = c.stage
    staged = np.zeros((12, hd), np.float32)
    for t in range(6):
        for h in range(n_kv):
            srow = (of[table[t // bs]] * n_kv + h) * bs + t % bs
            i = t * n_kv + h
            np.testing.assert_array_equal(st_codes[srow], codes8[i], err_msg=f"staged token {t} head {h}")
            assert (st_scales[srow], st_zeros[srow]) == (scales8[i], zeros8[i])
            staged[i] = (codes8[i] - np.float32(zeros8[i])) * scales8[i : i + 1].view(np.float16).astype(np.float32)
    for h in range(n_kv):
        cols = staged.reshape(6, n_kv, hd)[:4, h].T  # block 5's 4 rows of head h, channel by channel
        codes4, scales4, zeros4 = quantize_kv_rows_ref(cols, 4)
        ch = slice((5 * n_kv + h) * hd, (5 * n_kv + h + 1) * hd)
        np.testing.assert_array_equal(c.params["k_scales"][ch], scales4)
        np.testing.assert_array_equal(c.params["k_zeros"][ch], zeros4)
        for t in range(4):
            np.testing.assert_array_equal(unpack_kv_codes(c.k[5, h, t], "i4"), codes4[:, t], err_msg=f"token {t}")
    # A query at token 3 or later reads block 5 sealed; one inside it reads the staged rows.
    seen_late, seen_inside = c.held("k", table, 6), c.held("k", table, 3, view=2)
    assert not np.array_equal(seen_late[:3], seen_inside)
    np.testing.assert_array_equal(seen_inside, staged.reshape(6, n_kv * hd)[:3])
    np.testing.assert_array_equal(seen_late[4:], staged.reshape(6, n_kv * hd)[4:])
    codes4v, scales4v, _ = quantize_kv_rows_ref(v.reshape(12, hd), 4)
    np.testing.assert_array_equal(unpack_kv_codes(c.v[2, 1, 1], "i4"), codes4v[5 * n_kv + 1])


def test_int4_channel_keys_beat_per_token_on_outlier_channels():
    """Why I4Channel: keys whose few channels carry large values (as real keys do) lose far less attention
    accuracy with a scale per channel than with one per row."""
    n_heads, n_kv, hd, bs = 4, 2, 64, 16
    r = np.random.default_rng(11)
    k = r.standard_normal((64, n_kv * hd)).astype(np.float32)
    k[:, [3, 40, 64 + 7]] *= 25.0  # outlier channels
    v = r.standard_normal((64, n_kv * hd)).astype(np.float32)
    q = r.standard_normal((1, n_heads * hd)).astype(np.float32)
    pos = np.array([63], np.int32)
    ref = attn_ref(q, k, v, pos, n_heads, n_kv, hd, hd**-0.5)
    err = {}
    for dtype in ("i4", "i4c"):
        c = PagedCache(8, n_kv, hd, bs, dtype, np.random.default_rng(0))
        table = np.array([c.free.pop() for _ in range(4)], np.int32)
        c.store(k, v, table[np.arange(64) // bs].astype(np.int64) * bs + np.arange(64) % bs)
        err[dtype] = np.abs(c.attend([(q, table, pos)], n_heads, hd**-0.5, 1)[0] - ref).max()
    assert err["i4c"] < 0.5 * err["i4"], err


@pytest.mark.parametrize("dtype", ["i8", "i4"])
@pytest.mark.parametrize("bad,at", [(np.nan, 3), (np.inf, 20), (-np.inf, 31)])
def test_a_non_finite_row_stays_non_finite(isa, dtype, bad, at):
    c = PagedCache(2, 1, 32, 2, dtype, rng)
    k = np.ones((1, 32), np.float32)
    k[0, at] = bad
    c.store(k, np.ones((1, 32), np.float32), np.array([0], np.int64))
    assert np.isnan(c.held("k", np.array([0], np.int32), 1)).all()
    assert np.isfinite(c.held("v", np.array([0], np.int32), 1)).all()


QUANT_CONFIGS = [  # (n_heads, n_kv_heads, head_dim, block_size)
    (9, 3, 64, 16),  # SmolLM2-135M
    (4, 4, 32, 8),
    (8, 2, 128, 16),  # Llama-3 shapes
]


def build_case(n_heads, n_kv, hd, bs, dtype, v_dtype=None, seed=0):
    r = np.random.default_rng(seed)
    c = PagedCache(48, n_kv, hd, bs, dtype, r, v_dtype)
    seqs = []
    # Prefill with a partial last block, decode far in, chunked prefill, one token.
    for length, pos in [(37, np.arange(37)), (51, np.array([50])), (30, np.arange(19, 30)), (1, np.array([0]))]:
        table, k, v = c.new_seq(length)
        q = r.standard_normal((len(pos), n_heads * hd)).astype(np.float32)
        seqs.append((q, table, pos.astype(np.int32), k, v))
    return c, seqs


def run(c, seqs, n_heads, scale, threads, tile_unit=None, min_rows=32):
    return c.attend(seqs, n_heads, scale, threads, tile_unit, min_rows)


KV_KINDS = [("i8", None), ("i4", None), ("i8", "i4"), ("i4c", None)]


def ref_held(c, q, table, pos, n_heads, scale, tile=False):
    """Float64 attention over what the cache holds, as the kernel reads it: for i4c K, each query (exact path) or
    the chunk's first query (tile path, which reads one view for all rows) decides which blocks read sealed.
    Returns (reference, max|v| held)."""
    length = int(pos.max()) + 1
    vq = c.held("v", table, length)
    if c.dtype != "i4c":
        kq = c.held("k", table, length)
        rnd = bf16_round if tile else (lambda a: a)
        return attn_ref(rnd(q), rnd(kq), rnd(vq), pos, n_heads, c.n_kv, c.hd, scale), vq
    out = np.zeros((len(pos), q.shape[1]))
    for m, p in enumerate(pos):
        kq = c.held("k", table, length, view=int(pos[0]) if tile else int(p))
        qm = bf16_round(q[m : m + 1]) if tile else q[m : m + 1]
        kq, vm = (bf16_round(kq), bf16_round(vq)) if tile else (kq, vq)
        out[m] = attn_ref(qm, kq, vm, pos[m : m + 1], n_heads, c.n_kv, c.hd, scale)[0]
    return out, vq


@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS)
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", QUANT_CONFIGS)
def test_attention_over_codes_matches_float64_of_the_same_values(isa, n_heads, n_kv, hd, bs, dtype, v_dtype):
    c, seqs = build_case(n_heads, n_kv, hd, bs, dtype, v_dtype)
    scale = hd**-0.5
    for (q, table, pos, _k, _v), out in zip(seqs, run(c, seqs, n_heads, scale, 2)):
        ref, vq = ref_held(c, q, table, pos, n_heads, scale)
        err = np.abs(out - ref).max() / np.abs(vq).max()
        assert err <= attn_tol(hd), f"{len(pos)} rows: {err:.3g} of max|v|"


@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS + [("f32", None), ("bf16", None)])
@pytest.mark.parametrize("n_heads,n_kv,hd", [(8, 1, 64), (6, 2, 32), (8, 2, 128), (6, 1, 96)])
def test_heads_sharing_a_kv_head_give_the_same_bits_together_or_alone(isa, n_heads, n_kv, hd, dtype, v_dtype):
    # A decode row alone with fewer KV heads than threads gets a task per query head (groups would leave threads
    # idle); in a batch,
    # the heads sharing a KV head run in one task (up to 4, their key and value rows decoded once). Each head must
    # come out the same bits either way, on every ISA path, at head sizes that keep the accumulators in registers
    # (32, 64, 128 on AVX-512) and one that does not fit a vector count the kernels unroll (96 on AVX2).
    c, seqs = build_case(n_heads, n_kv, hd, 16, dtype, v_dtype, seed=9)
    scale = hd**-0.5
    together = run(c, seqs, n_heads, scale, 2)
    for i, (q, table, pos, _k, _v) in enumerate(seqs):
        m = len(pos) - 1
        alone = run(c, [(q[m : m + 1], table, pos[m : m + 1])], n_heads, scale, 2 * n_kv)[0]
        assert_bits_equal(alone, together[i][m : m + 1], f"sequence {i}, row {m} alone")


# Against the unquantized values: each K value moves by at most half a step (step = scale of its row), so each
# score by at most |q| (sum of half steps) * attention scale; V values likewise by half a step. With unit normal
# rows a step is range / 255 (int8) or range / 15 (int4): this bound is the measured worst case with margin.
QUANT_VS_FP_TOL = {"i8": 0.03, "i4": 0.5, "i4c": 0.5}


@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS)
def test_attention_over_codes_is_close_to_unquantized(dtype, v_dtype):
    n_heads, n_kv, hd, bs = 9, 3, 64, 16
    c, seqs = build_case(n_heads, n_kv, hd, bs, dtype, v_dtype, seed=3)
    scale = hd**-0.5
    worst = 0.0
    for (q, _table, pos, k, v), out in zip(seqs, run(c, seqs, n_heads, scale, 2)):
        length = int(pos.max()) + 1
        ref = attn_ref(q, k[:length], v[:length], pos, n_heads, n_kv, hd, scale)
        worst = max(worst, np.abs(out - ref).max() / np.abs(v).max())
    assert worst <= QUANT_VS_FP_TOL[v_dtype or dtype], worst


def q8_heads(q, n_heads, hd):
    """Each head's q as the int8 scores take it (ops.h, paged_attention's int8_q): scale = float32(max|q| / 127),
    codes = round_half_even(q * float32(1 / scale)) in float32; returned as codes * scale in float64."""
    qh = q.reshape(len(q), n_heads, hd)
    s = (np.abs(qh).max(-1) / np.float32(127)).astype(np.float32)
    inv = (np.float32(1) / np.where(s > 0, s, np.float32(1))).astype(np.float32) * (s > 0)
    codes = np.rint(qh * inv[..., None].astype(np.float32))
    assert np.abs(codes).max() <= 127
    return (codes * s[..., None].astype(np.float64)).reshape(q.shape)


INT8_Q = pytest.mark.skipif(
    not K.int8_q_scores("i8", 64), reason="int8 q scores run on AVX-512 VNNI, which this CPU does not have"
)


# int8_q's P V over I8 V (ops.h): each value row's weight w_j = p_j * s1_j (s1 its row's fp16 scale) is rounded to
# a step of its run's largest |w| / 32767 (a run: up to 64 keys of one block), so it moves by at most half a step,
# and an output by at most the sum over runs of (half a step * 255 (the largest code) * keys in the run) / sum_j p_j.
PV_LEVELS, PV_RUN, CODE_MAX = 32767, 64, 255


def pv_int16_bound(c, q, table, pos, n_heads, scale):
    """[rows, n_heads]: that bound for each row and head, in float64 from the held K and the q the scores take."""
    length, hd, group = int(pos.max()) + 1, c.hd, n_heads // c.n_kv
    kq = c.held("k", table, length).astype(np.float64)
    s1 = held_row_scales(c, "v", table, length).astype(np.float64)
    out = np.zeros((len(pos), n_heads))
    for m, p in enumerate(pos):
        for h in range(n_heads):
            kv = h // group
            s = kq[: p + 1, kv * hd : (kv + 1) * hd] @ q[m, h * hd : (h + 1) * hd].astype(np.float64) * scale
            e = np.exp(s - s.max())
            w = e * s1[: p + 1, kv]
            moved = 0.0
            for start in range(0, p + 1, c.bs):
                for r0 in range(start, min(start + c.bs, p + 1), PV_RUN):
                    run = w[r0 : min(r0 + PV_RUN, start + c.bs, p + 1)]
                    moved += 0.5 * np.abs(run).max() / PV_LEVELS * CODE_MAX * len(run)
            out[m, h] = moved / e.sum()
    return out


def check_int8_q(c, seqs, n_heads, hd, scale):
    """int8_q's outputs against float64 attention over the quantized q and the held K/V: within the exact path's
    bound (the integer dots of the scores are exact), plus, over I8 V, pv_int16_bound for each row and head."""
    outs = c.attend(seqs, n_heads, scale, 2, int8_q=True)
    exact = c.attend(seqs, n_heads, scale, 2)
    for (q, table, pos, _k, _v), out, ex in zip(seqs, outs, exact):
        q8 = q8_heads(q, n_heads, hd)
        ref, vq = ref_held(c, q8, table, pos, n_heads, scale)
        pv = pv_int16_bound(c, q8, table, pos, n_heads, scale) if c.v_dtype == "i8" else 0.0
        err = np.abs(out - ref).reshape(len(pos), n_heads, hd).max(-1)  # [rows, heads]
        allowed = attn_tol(hd) * np.abs(vq).max() + pv
        assert (err <= allowed).all(), f"{len(pos)} rows: {(err / allowed).max():.3g} of the bound"
        if pos.max() > 0:  # (one key: the output is its value whatever the score)
            assert not np.array_equal(out, ex), "int8_q changed nothing"
        # and what quantizing q costs against fp32 q: well under int8 K's own cost (QUANT_VS_FP_TOL)
        assert np.abs(out - ex).max() / np.abs(vq).max() <= 0.01


@INT8_Q
@pytest.mark.parametrize("v_dtype", [None, "i4"])
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", [(9, 3, 64, 16), (8, 2, 128, 16), (4, 4, 64, 24), (6, 2, 192, 8)])
def test_int8_q_scores_match_float64_of_the_quantized_q(n_heads, n_kv, hd, bs, v_dtype):
    """int8_q: each head's q quantized to int8 and the scores' dots taken in int32, and over I8 V the P V sums in
    int32 from int16 weights; blocks that are not a multiple of the 16 keys scored at once, partial last blocks
    (an odd number of keys: the P V pairs), head sizes of 1-3 runs of 64."""
    c, seqs = build_case(n_heads, n_kv, hd, bs, "i8", v_dtype, seed=11)
    check_int8_q(c, seqs, n_heads, hd, hd**-0.5)


@INT8_Q
@pytest.mark.parametrize("bs,lengths", [(128, [150, 97, 64]), (256, [255, 130])])
def test_int8_q_p_v_runs_of_64_keys_within_a_block(bs, lengths):
    """Blocks of more than 64 keys: the P V weights take one int16 scale per run of 64 keys of a block (the int32
    sums stay below 2^31), an odd run last; decode rows far into the sequence."""
    n_heads, n_kv, hd = 6, 2, 64
    r = np.random.default_rng(21)
    c = PagedCache(8, n_kv, hd, bs, "i8", r)
    seqs = []
    for length in lengths:
        table, k, v = c.new_seq(length)
        pos = np.array([length - 1, length // 2], np.int32)
        seqs.append((r.standard_normal((2, n_heads * hd)).astype(np.float32), table, pos, k, v))
    check_int8_q(c, seqs, n_heads, hd, hd**-0.5)


@INT8_Q
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_int8_q_keeps_a_non_finite_value_row_non_finite(bad):
    """A value row holding NaN or inf (its scale then not finite) makes the outputs of the heads that read it NaN,
    with int16 P V weights as with fp32 ones (the engine then fails that request); the other KV head's heads stay
    finite."""
    n_heads, n_kv, hd, bs, length = 4, 2, 64, 16, 40
    r = np.random.default_rng(22)
    c = PagedCache(8, n_kv, hd, bs, "i8", r)
    table = np.array([c.free.pop() for _ in range(3)], np.int32)
    k, v = r.standard_normal((2, length, n_kv * hd)).astype(np.float32)
    v[10, 5] = bad  # KV head 0, position 10
    c.store(k, v, table[np.arange(length) // bs].astype(np.int64) * bs + np.arange(length) % bs)
    q = r.standard_normal((1, n_heads * hd)).astype(np.float32)
    for int8_q in (False, True):
        out = c.attend([(q, table, np.array([length - 1], np.int32))], n_heads, 0.125, 2, int8_q=int8_q)[0]
        out = out.reshape(n_heads, hd)
        assert np.isnan(out[:2]).any(axis=-1).all(), f"int8_q={int8_q}: a head of KV head 0 came out finite"
        assert np.isfinite(out[2:]).all(), f"int8_q={int8_q}: KV head 1's heads"


@INT8_Q
def test_int8_q_scores_change_no_bit_with_threads_batch_or_head_grouping():
    n_heads, n_kv, hd, bs = 9, 3, 64, 16
    c, seqs = build_case(n_heads, n_kv, hd, bs, "i8", None, seed=12)
    one = c.attend(seqs, n_heads, 0.125, 1, int8_q=True)
    for threads in (2, 3):
        for i, (a, b) in enumerate(zip(c.attend(seqs, n_heads, 0.125, threads, int8_q=True), one)):
            assert_bits_equal(a, b, f"sequence {i}, {threads} threads vs 1")
    for i, (q, table, pos, _k, _v) in enumerate(seqs):
        assert_bits_equal(c.attend([seqs[i]], n_heads, 0.125, 2, int8_q=True)[0], one[i], f"sequence {i} alone")
        m = len(pos) - 1  # a row alone with 6 threads: a task per query head instead of one per KV head
        alone = c.attend([(q[m : m + 1], table, pos[m : m + 1])], n_heads, 0.125, 2 * n_kv, int8_q=True)[0]
        assert_bits_equal(alone, one[i][m : m + 1], f"sequence {i}, row {m} alone")
    # Tile prefill passes int8_q to the rows it leaves to the exact path (the decode rows beside a prompt chunk).
    if K.isa_supported("avx512"):
        tiles = c.attend(seqs, n_heads, 0.125, 2, tile_unit="model", int8_q=True)
        for i, (_q, _t, pos, _k, _v) in enumerate(seqs):
            if len(pos) < 32:
                assert_bits_equal(tiles[i], one[i], f"sequence {i} beside the tile path")


@pytest.mark.parametrize(
    "dtype,v_dtype,hd", [("i4", None, 64), ("i4c", None, 64), ("i8", None, 32), ("bf16", None, 64)]
)
def test_int8_q_is_ignored_where_it_does_not_apply(dtype, v_dtype, hd):
    """Other K dtypes, head sizes not a multiple of 64 (and CPUs without VNNI): the fp32 q path, bit for bit."""
    assert not K.int8_q_scores(dtype, hd)
    c, seqs = build_case(4, 2, hd, 16, dtype, v_dtype, seed=13)
    for a, b in zip(c.attend(seqs, 4, 0.125, 2, int8_q=True), c.attend(seqs, 4, 0.125, 2)):
        assert_bits_equal(a, b, "int8_q where it does not apply")


@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS)
def test_threads_and_batch_change_no_bit(dtype, v_dtype):
    n_heads, n_kv, hd, bs = 9, 3, 64, 16
    c, seqs = build_case(n_heads, n_kv, hd, bs, dtype, v_dtype, seed=4)
    one = run(c, seqs, n_heads, 0.125, 1)
    for threads in (2, 3):
        for i, (a, b) in enumerate(zip(run(c, seqs, n_heads, 0.125, threads), one)):
            assert_bits_equal(a, b, f"sequence {i}, {threads} threads vs 1")
    for i, s in enumerate(seqs):
        assert_bits_equal(run(c, [s], n_heads, 0.125, 2)[0], one[i], f"sequence {i} alone")


@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS)
def test_every_isa_agrees_with_scalar(dtype, v_dtype):
    """The vector paths against the scalar reference on the same codes: the same bound, twice."""
    n_heads, n_kv, hd, bs = 4, 2, 64, 8
    c, seqs = build_case(n_heads, n_kv, hd, bs, dtype, v_dtype, seed=5)
    vmax = max(np.abs(c.held("v", t, int(p.max()) + 1)).max() for _, t, p, _, _ in seqs)
    prev = K.active_isa()
    try:
        K.set_isa("scalar")
        ref = run(c, seqs, n_heads, 0.2, 1)
        for name in ("avx2", "avx512"):
            if not K.isa_supported(name):
                continue
            K.set_isa(name)
            for i, (a, b) in enumerate(zip(run(c, seqs, n_heads, 0.2, 2), ref)):
                assert np.abs(a - b).max() <= 2 * attn_tol(hd) * vmax, f"{name}, sequence {i}"
    finally:
        K.set_isa(prev)


def tile_units():
    units = ["model"]
    if K.avx512bf16_available():
        units.append("avx512bf16")
    if K.amx_available():
        units.append("amx")
    return units


@pytest.mark.parametrize("unit", tile_units())
@pytest.mark.parametrize("dtype,v_dtype", KV_KINDS)
def test_tile_prefill_over_codes_matches_float64(unit, dtype, v_dtype):
    n_heads, n_kv, hd, bs = 9, 3, 64, 16
    c, seqs = build_case(n_heads, n_kv, hd, bs, dtype, v_dtype, seed=6)
    scale = hd**-0.5
    for (q, table, pos, _k, _v), out in zip(seqs, run(c, seqs, n_heads, scale, 2, tile_unit=unit)):
        if len(pos) < 32:  # the exact path
            ref, vq = ref_held(c, q, table, pos, n_heads, scale)
            assert np.abs(out - ref).max() / np.abs(vq).max() <= attn_tol(hd)
            continue
        ref, vq = ref_held(c, q, table, pos, n_heads, scale, tile=True)
        assert np.abs(out - ref).max() / np.abs(bf16_round(vq)).max() <= tile_tol(hd)


def test_bad_quantized_caches_are_refused():
    c = PagedCache(2, 1, 32, 2, "i8", rng)
    k = np.ones((1, 32), np.float32)
    with pytest.raises(ValueError, match="scales and zeros"):
        K.kv_store(c.k, c.v, k, k, np.array([0], np.int64), 1, 32, 2, "i8")
    with pytest.raises(ValueError, match="head_dim a multiple of 32"):
        PagedCache(2, 1, 48, 2, "i4", rng).store(
            np.ones((1, 48), np.float32), np.ones((1, 48), np.float32), np.array([0], np.int64)
        )
    with pytest.raises(ValueError, match="K and V share a dtype"):
        K.kv_store(
            c.k,
            c.v,
            k,
            k,
            np.array([0], np.int64),
            1,
            32,
            2,
            "i4",
            v_dtype="i8",
            **{key: val for key, val in c.params.items()},
        )


def test_bad_int4_channel_caches_are_refused():
    c = PagedCache(2, 1, 32, 2, "i4c", rng)
    k = np.ones((1, 32), np.float32)
    kw = c.kwargs()
    with pytest.raises(ValueError, match="i4c K needs stage"):
        K.kv_store(c.k, c.v, k, k, np.array([0], np.int64), 1, 32, 2, "i4c", **{**kw, "stage": None})
    with pytest.raises(ValueError, match="has no staging slot"):  # block 1 was never given one
        K.kv_store(c.k, c.v, k, k, np.array([2], np.int64), 1, 32, 2, "i4c", **kw)
    with pytest.raises(ValueError, match="not a staged block"):
        K.kv_seal(c.k, c.v, np.array([1], np.int32), 1, 32, 2, "i4c", **kw)
    with pytest.raises(ValueError, match="head_dim a multiple of 32"):
        PagedCache(2, 1, 48, 2, "i4c", rng).store(k[:, :1].repeat(48, 1), k[:, :1].repeat(48, 1), np.array([0]))
