"""The CUDA op set (csrc/kernels/cuda/, issue 15), op by op against the CPU op and a float64 NumPy reference, where
this build has the CUDA backend and the runtime finds a device; the outputs are poisoned with NaN on the device
before each op, so an element it does not write fails. Without a device those tests skip, saying what is missing,
and the refusal itself is checked."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_paths import sample_rows

from lmrt._core import kernels as K

CUDA_OK, CUDA_WHY = K.cuda_available()
needs_cuda = pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}")

# fp32 sums of up to H squares in another order than the CPU's, then one rsqrt (a few ulp): relative to the row's
# scale; silu uses expf on both sides (a few ulp).
RMSNORM_RTOL = 1e-5
SILU_RTOL = 1e-5
# rope: cos/sin of the same fp32 angle within 2 ulp on the GPU, two products and a difference (maybe fused):
# about 4 ulp of |x1| + |x2|.
ROPE_RTOL = 6e-7

rng = np.random.default_rng(2024)


def test_cuda_available_says_what_it_found():
    assert isinstance(CUDA_OK, bool) and isinstance(CUDA_WHY, str) and CUDA_WHY


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is here: the refusal without one cannot be shown")
def test_ops_on_cuda_without_a_device_are_refused_by_name():
    with pytest.raises(RuntimeError, match="no CUDA device|no CUDA backend"):
        K.rmsnorm(np.ones((2, 8), np.float32), np.ones(8, np.float32), 1e-5, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDA device|no CUDA backend"):
        K.silu_mul(np.ones((2, 8), np.float32), device="cuda")
    # the device-side timings of benchmarks/bench_cuda.py too
    with pytest.raises(RuntimeError, match="no CUDA device|no CUDA backend"):
        K.cuda_copy_bandwidth(1 << 20, 3)
    with pytest.raises(RuntimeError, match="no CUDA device|no CUDA backend"):
        K.cuda_time_linear_w4(1, 256, 64, 32, 3)


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        K.silu_mul(np.ones((2, 8), np.float32), device="tpu")


@needs_cuda
@pytest.mark.parametrize("M,H", [(1, 576), (7, 2048), (37, 100), (3, 4096), (2, 1)])
def test_rmsnorm_cuda(M, H):
    x = (rng.standard_normal((M, H)) * 3).astype(np.float32)
    w = rng.standard_normal(H).astype(np.float32)
    eps = 1e-5
    y = K.rmsnorm(x, w, eps, device="cuda")
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(1, keepdims=True) + eps) * w
    scale = np.abs(x64 / np.sqrt((x64**2).mean(1, keepdims=True) + eps) * w) + 1e-30
    assert np.isfinite(y).all(), "an element was not written (NaN poison)"
    assert (np.abs(y - ref) <= RMSNORM_RTOL * scale + 1e-7).all()
    assert np.allclose(y, K.rmsnorm(x, w, eps), rtol=2 * RMSNORM_RTOL, atol=1e-7)
    # a row's result does not depend on the rows around it
    assert np.array_equal(K.rmsnorm(x[-1:], w, eps, device="cuda"), y[-1:])


def test_rmsnorm_with_residual_is_the_add_then_the_norm():
    # the op-set model's fused residual add (the CPU op set: the add, then cpu::rmsnorm)
    x, res = rng.standard_normal((5, 96)).astype(np.float32), rng.standard_normal((5, 96)).astype(np.float32)
    w = rng.standard_normal(96).astype(np.float32)
    y, total = K.rmsnorm(x, w, 1e-5, residual=res)
    assert np.array_equal(total, x + res) and np.array_equal(y, K.rmsnorm(x + res, w, 1e-5))
    with pytest.raises(ValueError, match="residual must be"):
        K.rmsnorm(x, w, 1e-5, residual=res[:2])


@needs_cuda
@pytest.mark.parametrize("M,H", [(1, 576), (7, 4096), (37, 100)])
def test_add_rmsnorm_cuda(M, H):
    x = (rng.standard_normal((M, H)) * 3).astype(np.float32)
    res = rng.standard_normal((M, H)).astype(np.float32)
    w = rng.standard_normal(H).astype(np.float32)
    y, total = K.rmsnorm(x, w, 1e-5, device="cuda", residual=res)
    assert np.array_equal(total, x + res)  # one fp32 add an element, as numpy's
    assert np.array_equal(y, K.rmsnorm(x + res, w, 1e-5, device="cuda"))  # the unfused kernel's bits
    s64 = (x + res).astype(np.float64)
    ref = s64 / np.sqrt((s64**2).mean(1, keepdims=True) + 1e-5) * w
    assert (np.abs(y - ref) <= RMSNORM_RTOL * np.abs(ref) + 1e-7).all()


@needs_cuda
@pytest.mark.parametrize("M,I", [(1, 1536), (5, 8192), (33, 77), (2, 20000)])
def test_silu_mul_cuda(M, I):
    gu = (rng.standard_normal((M, 2 * I)) * 4).astype(np.float32)
    out = K.silu_mul(gu, device="cuda")
    g, u = gu[:, :I].astype(np.float64), gu[:, I:].astype(np.float64)
    ref = g / (1 + np.exp(-g)) * u
    assert np.isfinite(out).all(), "an element was not written (NaN poison)"
    assert (np.abs(out - ref) <= SILU_RTOL * np.abs(ref) + 1e-30 + 1e-7).all()
    assert np.allclose(out, K.silu_mul(gu), rtol=2 * SILU_RTOL, atol=1e-7)


# The 4-bit GEMV: fp32 sums of K products in another order than the CPU's (each lane's runs, then a shuffle tree);
# the same bound linear_w4's tests use against float64, relative to sum |x||w| + |bias|.
def w4_tol(Kd):
    return (Kd + 2) * 2.0**-24


@needs_cuda
@pytest.mark.parametrize(
    "M,N,Kd,dtype",
    [(1, 4096, 4096, "bf16"), (3, 577, 576, "f32"), (11, 130, 100, "bf16"), (8, 1000, 2048, "f32"), (2, 7, 12, "f32")],
)
def test_linear_cuda(M, N, Kd, dtype):
    # K = 100 and 12 take the one-input-a-lane path (K not a multiple of 8), the others 16-byte loads
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    w32 = rng.standard_normal((N, Kd)).astype(np.float32)
    w = K.f32_to_bf16(w32) if dtype == "bf16" else w32
    w64 = (K.bf16_to_f32(w) if dtype == "bf16" else w32).astype(np.float64)
    bias = rng.standard_normal(N).astype(np.float32)
    y = K.linear(x, w, bias=bias, wdtype=dtype, device="cuda")
    ref = x.astype(np.float64) @ w64.T + bias
    scale = np.abs(x.astype(np.float64)) @ np.abs(w64).T + np.abs(bias)
    assert np.isfinite(y).all(), "an output was not written (NaN poison)"
    assert (np.abs(y - ref) <= w4_tol(Kd) * scale).all()
    cpu = K.linear(x, w, bias=bias, wdtype=dtype)
    assert (np.abs(y - cpu) <= 2 * w4_tol(Kd) * scale).all()
    assert np.array_equal(K.linear(x[-1:], w, bias=bias, wdtype=dtype, device="cuda"), y[-1:])


@needs_cuda
@pytest.mark.parametrize(
    "M,N,Kd,g",
    [
        (1, 4096, 4096, 32),  # 16 outputs a block
        (2, 1000, 1024, 32),  # 8 outputs a block, N not a multiple of 16
        (3, 577, 576, 32),
        (4, 130, 2048, 128),
        (8, 1000, 2048, 64),  # 4 outputs a block
        (11, 130, 8192, 128),  # 8 rows, then 3
        (4, 1000, 14336, 128),  # the down product: 14 steps of 32 runs (streamed)
        (2, 24, 96, 32),  # fewer runs than lanes; N not a multiple of a warp's 8 outputs (streamed)
    ],
)
@pytest.mark.parametrize("gemv", ["default", "narrow", "streamed"])
def test_linear_w4_cuda(M, N, Kd, g, gemv):
    from test_kernels_quant import make_w4, pack_w4, w4_dequant64

    x = rng.standard_normal((M, Kd)).astype(np.float32)
    codes, scales, mins = make_w4(N, Kd, g)
    packed = pack_w4(codes)
    bias = rng.standard_normal(N).astype(np.float32)
    w = w4_dequant64(codes, scales, mins, g)
    y = K.linear_w4(x, packed, scales, mins, g, bias=bias, device="cuda", gemv=gemv)
    ref = x.astype(np.float64) @ w.T + bias
    scale = np.abs(x.astype(np.float64)) @ np.abs(w).T + np.abs(bias)
    assert np.isfinite(y).all(), "an output was not written (NaN poison)"
    assert (np.abs(y - ref) <= w4_tol(Kd) * scale).all()
    cpu = K.linear_w4(x, packed, scales, mins, g, bias=bias)
    assert (np.abs(y - cpu) <= 2 * w4_tol(Kd) * scale).all()
    # a row's outputs do not depend on the rows launched with it
    assert np.array_equal(K.linear_w4(x[-1:], packed, scales, mins, g, bias=bias, device="cuda", gemv=gemv), y[-1:])


# The tensor-core path: bf16 products are exact in fp32; the MMA units add a fragment's 16 products and the running
# sum in fp32 in an order (and with truncation, on some parts) of their own: ~2 ulp of the sum of |products| per add.
def tc_tol(Kd):
    return (Kd + 16) * 2.0**-22


def bf16_round64(a):
    """float32 values rounded to bf16 (nearest even), as float64."""
    return K.bf16_to_f32(K.f32_to_bf16(np.ascontiguousarray(a, dtype=np.float32))).astype(np.float64)


def check_tc(y, x, w_bf16_64, bias, Kd, cpu_exact):
    """y against float64 sums of the same bf16-rounded operands (+ fp32 bias), and the exact fp32 op within the
    bf16 rounding of x and w (the product of two roundings, 2^-8 relative each)."""
    xb = bf16_round64(x)
    ref = xb @ w_bf16_64.T + bias
    scale = np.abs(xb) @ np.abs(w_bf16_64).T + np.abs(bias)
    assert np.isfinite(y).all(), "an output was not written (NaN poison)"
    assert (np.abs(y - ref) <= tc_tol(Kd) * scale).all(), np.abs(y - ref).max()
    assert (np.abs(y - cpu_exact) <= 2 * 2.0**-8 * scale + tc_tol(Kd) * scale).all()


@needs_cuda
@pytest.mark.parametrize(
    "M,N,Kd,dtype",
    [
        (16, 64, 64, "f32"),  # one tile
        (17, 100, 100, "bf16"),  # K, N not multiples of the tile: the guarded loads
        (130, 577, 576, "f32"),
        (64, 1000, 2048, "bf16"),
        (300, 130, 40, "bf16"),  # K < a step, and odd rows
    ],
)
def test_linear_tc_cuda(M, N, Kd, dtype):
    x = rng.standard_normal((M, Kd)).astype(np.float32)
    w32 = rng.standard_normal((N, Kd)).astype(np.float32)
    w = K.f32_to_bf16(w32) if dtype == "bf16" else w32
    wb = K.bf16_to_f32(w).astype(np.float64) if dtype == "bf16" else bf16_round64(w32)
    bias = rng.standard_normal(N).astype(np.float32)
    y = K.linear(x, w, bias=bias, wdtype=dtype, device="cuda", tensor_cores=True)
    check_tc(y, x, wb, bias, Kd, K.linear(x, w, bias=bias, wdtype=dtype))
    # a row's outputs do not depend on the rows launched with it (its place in the 64-row tile differs)
    assert np.array_equal(K.linear(x[-1:], w, bias=bias, wdtype=dtype, device="cuda", tensor_cores=True), y[-1:])


@needs_cuda
@pytest.mark.parametrize(
    "M,N,Kd,g,style",
    [
        (16, 64, 64, 32, "awq"),
        (33, 577, 576, 32, "gguf"),  # N not a multiple of the tile
        (130, 1000, 2048, 64, "gguf"),
        (64, 4096, 4096, 128, "awq"),  # the decode of 64 requests at the widths
        (513, 192, 1536, 32, "gguf"),  # a prompt chunk of 512 and one more
    ],
)
def test_linear_w4_tc_cuda(M, N, Kd, g, style):
    from test_kernels_quant import make_w4, pack_w4

    x = rng.standard_normal((M, Kd)).astype(np.float32)
    codes, scales, mins = make_w4(N, Kd, g, style)
    packed = pack_w4(codes)
    bias = rng.standard_normal(N).astype(np.float32)
    # each weight as the kernel forms it: fma(code, scale, min) in fp32 (exact in float64, then one rounding to
    # fp32), then rounded to bf16
    rep = lambda a: np.repeat(a.astype(np.float64), g, axis=1)  # noqa: E731
    w32 = (codes.astype(np.float64) * rep(scales) + rep(mins)).astype(np.float32)
    y = K.linear_w4(x, packed, scales, mins, g, bias=bias, device="cuda", tensor_cores=True)
    check_tc(y, x, bf16_round64(w32), bias, Kd, K.linear_w4(x, packed, scales, mins, g, bias=bias))
    assert np.array_equal(
        K.linear_w4(x[-1:], packed, scales, mins, g, bias=bias, device="cuda", tensor_cores=True), y[-1:]
    )


def test_gemv_shapes_only_on_cuda():
    x = np.ones((1, 64), np.float32)
    args = (np.zeros((4, 32), np.uint8), np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32), 32)
    with pytest.raises(ValueError, match="gemv= chooses the CUDA GEMV's shape"):
        K.linear_w4(x, *args, gemv="streamed")
    with pytest.raises(ValueError, match="gemv must be"):
        K.linear_w4(x, *args, gemv="wide")


def test_tensor_cores_only_on_cuda():
    x = np.ones((2, 64), np.float32)
    with pytest.raises(ValueError, match="tensor_cores=True runs on device='cuda'"):
        K.linear(x, np.ones((4, 64), np.float32), tensor_cores=True)
    args = (np.zeros((4, 32), np.uint8), np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32), 32)
    with pytest.raises(ValueError, match="tensor_cores=True runs on device='cuda'"):
        K.linear_w4(x, *args, tensor_cores=True)


def test_linear_w4_cuda_refuses_cpu_only_options():
    x = np.ones((1, 64), np.float32)
    args = (np.zeros((4, 32), np.uint8), np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32), 32)
    with pytest.raises((ValueError, RuntimeError), match="neither tile_unit|no CUDA"):
        K.linear_w4(x, *args, activations="int8", device="cuda")


@needs_cuda
@pytest.mark.parametrize("M,n_heads,head_dim", [(5, 12, 64), (64, 40, 128), (1, 1, 2)])
def test_rope_cuda(M, n_heads, head_dim):
    x = rng.standard_normal((M, n_heads * head_dim)).astype(np.float32)
    pos = rng.integers(0, 8192, M).astype(np.int32)
    inv_freq = (1.0 / 500000.0 ** (np.arange(0, head_dim, 2) / head_dim)).astype(np.float32)
    y = K.rope(x, pos, inv_freq, n_heads, head_dim, 1.0, device="cuda")
    # float64 reference of the same fp32 angles; cos/sin of both sides within a few ulp
    half = head_dim // 2
    a = (pos.astype(np.float32)[:, None] * inv_freq[None, :]).astype(np.float64)
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    xh = x.reshape(M, n_heads, head_dim).astype(np.float64)
    x1, x2 = xh[..., :half], xh[..., half:]
    ref = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1).reshape(M, -1)
    mag = (np.abs(np.concatenate([x1, x2], -1)) + np.abs(np.concatenate([x2, x1], -1))).reshape(M, -1)
    assert np.isfinite(y).all()
    assert (np.abs(y - ref) <= ROPE_RTOL * mag + 1e-30).all()
    assert np.allclose(y, K.rope(x, pos, inv_freq, n_heads, head_dim, 1.0), rtol=0, atol=1e-6 * np.abs(x).max())


@needs_cuda
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_embedding_cuda(dtype):
    V, H = 1000, 576
    table = rng.standard_normal((V, H)).astype(np.float32)
    if dtype == "bf16":
        table = K.f32_to_bf16(table)
    ids = rng.integers(0, V, 37).astype(np.int32)
    out = K.embedding(table, ids, dtype, device="cuda")
    assert np.array_equal(out.view(np.uint32), K.embedding(table, ids, dtype).view(np.uint32))  # exact copies


# ---- the paged KV cache: quantize-on-write, the Hadamard rotation of int8 K, attention over the codes


def store_on_both(make, k, v, slots):
    """The rows stored through a fresh cache from make() on the CPU and on the GPU: the same bytes (codes, scales
    and zeros; i4c: the staging slots too). Both caches start as the same nonzero bytes, so a row the GPU leaves
    unwritten differs even where the CPU writes zeros (a zero row's codes, scale and zero point)."""
    cpu, gpu = make(), make()
    for c in (cpu, gpu):
        for a in (c.k, c.v, *c.params.values(), *(c.stage[:3] if c.stage else ())):  # (stage[3]: the slot table)
            a.view(np.uint8)[...] = 0xA5
    cpu.store(k, v, slots)
    gpu.store(k, v, slots, device="cuda")
    assert np.array_equal(cpu.k.view(np.uint8), gpu.k.view(np.uint8))
    assert np.array_equal(cpu.v.view(np.uint8), gpu.v.view(np.uint8))
    for name, arr in cpu.params.items():
        assert np.array_equal(arr, gpu.params[name]), name
    for a, b in zip(cpu.stage or (), gpu.stage or ()):
        assert np.array_equal(a, b)


@needs_cuda
@pytest.mark.parametrize(
    "dtype,v_dtype,hd",
    [("f32", None, 64), ("bf16", None, 64), ("i8", None, 64), ("i4", None, 128), ("i8", "i4", 32), ("i8", None, 80)],
)
def test_kv_store_cuda_writes_the_cpu_bits(dtype, v_dtype, hd):
    from kernel_paths import PagedCache

    M, n_kv = 21, 2
    k = rng.standard_normal((M, n_kv * hd)).astype(np.float32) * 3
    v = rng.standard_normal((M, n_kv * hd)).astype(np.float32)
    k[3] = 0.0  # a row of zeros: scale 0
    v[5, 7] = np.nan  # a non-finite row: NaN scale, zero codes
    k[8, :hd] *= 1e-6  # a tiny range: an fp16 scale near its subnormals
    slots = rng.permutation(8 * 16)[:M].astype(np.int64)
    store_on_both(lambda: PagedCache(8, n_kv, hd, 16, dtype, np.random.default_rng(0), v_dtype), k, v, slots)


@needs_cuda
@pytest.mark.parametrize("head_dim", [64, 128, 96, 6])
def test_hadamard_heads_cuda_gives_the_cpu_bits(head_dim):
    x = rng.standard_normal((13, 3 * head_dim)).astype(np.float32)
    y = K.hadamard_heads(x, 3, head_dim, device="cuda")
    assert np.array_equal(y.view(np.uint32), K.hadamard_heads(x, 3, head_dim).view(np.uint32))


# Each score is a head_dim-long dot in another order than the CPU's, then exp: as the CPU attention's own bound
# (tests/test_kernels.py, attn_tol), relative to max|v|.
def attn_tol(hd):
    return 8 * (hd + 16) * 2.0**-24 + 1e-6


def check_attention_cuda(c, spans, n_heads, n_kv, hd, r):
    """A sequence per (length, query positions) in cache c, random queries: the GPU's attention against float64 of
    the values the cache holds and the CPU op. Returns (seqs, the GPU's outputs)."""
    from kernel_paths import attn_ref

    seqs = []
    for length, pos in spans:
        table, _k, _v = c.new_seq(length)
        seqs.append((r.standard_normal((len(pos), n_heads * hd)).astype(np.float32), table, pos.astype(np.int32)))
    scale = hd**-0.5
    gpu = c.attend(seqs, n_heads, scale, 1, device="cuda")
    cpu = c.attend(seqs, n_heads, scale, 1)
    for (q, table, pos), out, ref_cpu in zip(seqs, gpu, cpu):
        length = int(pos.max()) + 1
        kq, vq = c.held("k", table, length), c.held("v", table, length)  # the values, or the codes dequantised
        ref = attn_ref(q, kq, vq, pos, n_heads, n_kv, hd, scale)
        vmax = np.abs(vq).max()
        assert np.isfinite(out).all(), "an output was not written (NaN poison)"
        assert np.abs(out - ref).max() <= attn_tol(hd) * vmax
        assert np.abs(out - ref_cpu).max() <= 2 * attn_tol(hd) * vmax
    return seqs, gpu


@needs_cuda
@pytest.mark.parametrize("dtype,v_dtype", [("f32", None), ("bf16", None), ("i8", None), ("i4", None), ("i8", "i4")])
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", [(9, 3, 64, 16), (8, 2, 128, 16), (4, 4, 32, 8)])
def test_paged_attention_cuda(dtype, v_dtype, n_heads, n_kv, hd, bs):
    from kernel_paths import PagedCache

    r = np.random.default_rng(5)
    c = PagedCache(48, n_kv, hd, bs, dtype, r, v_dtype)
    # a prompt with a partial last block, a decode row far in, a later chunk, one token, a prompt of 3 tiles
    spans = [(37, np.arange(37)), (51, np.array([50])), (30, np.arange(19, 30)), (1, np.array([0]))]
    spans.append((150, np.arange(150)))
    seqs, gpu = check_attention_cuda(c, spans, n_heads, n_kv, hd, r)
    # the prompts' rows ran in tiles (16+ rows of a sequence, K/V shared through shared memory) and the others one
    # warp a row: the same bits, so each row launched alone (one warp) gives what it gave in its tile
    for (q, table, pos), out in ((seqs[0], gpu[0]), (seqs[4], gpu[4])):
        for i in (0, 1, 17, 36, 63, 64, 100, 149):
            if i < len(pos):
                alone = c.attend([(q[i : i + 1], table, pos[i : i + 1])], n_heads, hd**-0.5, 1, device="cuda")
                assert np.array_equal(alone[0], out[i : i + 1]), i


@needs_cuda
@pytest.mark.parametrize("dtype,v_dtype", [("f32", None), ("bf16", None), ("i8", None), ("i4", None), ("i8", "i4")])
def test_paged_attention_cuda_long_contexts(dtype, v_dtype):
    # rows that see more than 256 positions split them over up to 8 warps a head (split-KV), then combine: a decode
    # row at 700 (3 runs of 256), one at 2,500 (8 runs of 313), and a prompt chunk whose rows cross 256 (the first
    # in one warp, the rest split); a row's result is the same launched alone
    from kernel_paths import PagedCache

    n_heads, n_kv, hd, bs = 8, 2, 128, 16
    r = np.random.default_rng(6)
    c = PagedCache(260, n_kv, hd, bs, dtype, r, v_dtype)
    spans = [(700, np.array([699])), (2500, np.array([2499])), (300, np.arange(250, 300))]
    seqs, gpu = check_attention_cuda(c, spans, n_heads, n_kv, hd, r)
    alone = c.attend([(seqs[2][0][-1:], seqs[2][1], seqs[2][2][-1:])], n_heads, hd**-0.5, 1, device="cuda")
    assert np.array_equal(alone[0], gpu[2][-1:])


@needs_cuda
@pytest.mark.parametrize("hd,bs", [(64, 16), (128, 16), (32, 8)])
def test_int4_channel_keys_cuda_store_seal_and_attend_as_the_cpu(hd, bs):
    # int4 K per channel: kv_store writes a block's K rows as I8 rows into its staging slot, kv_seal quantizes the
    # blocks it fills per channel, and attention reads a block's int4 codes once the query sees all of it, else the
    # staged rows: the GPU writes the CPU's bits (codes, per-channel and staged scales and zeros), and its attention
    # is within the float64 bound of the values the cache holds as each query sees them
    from kernel_paths import PagedCache

    n_kv = 2
    r = np.random.default_rng(7)
    M = 3 * bs + 5  # three full blocks (sealed) and a partial one (staged)
    k = r.standard_normal((M, n_kv * hd)).astype(np.float32) * 3
    v = r.standard_normal((M, n_kv * hd)).astype(np.float32)
    k[1, 5] = 40.0  # an outlier channel
    # a non-finite value: its staged row is non-finite, so every channel of its block gets a NaN scale
    k[bs + 2, hd + 3] = np.nan
    table = np.array([5, 2, 7, 0], np.int32)
    slots = table[np.arange(M) // bs].astype(np.int64) * bs + np.arange(M) % bs
    store_on_both(lambda: PagedCache(8, n_kv, hd, bs, "i4c", np.random.default_rng(0)), k, v, slots)
    # attention (finite rows only), each sequence one query at its last position: blocks it sees whole sealed
    c = PagedCache(48, n_kv, hd, bs, "i4c", r)
    spans = [(3 * bs + 5, np.array([3 * bs + 4])), (2 * bs, np.array([2 * bs - 1])), (bs - 3, np.array([bs - 4]))]
    check_attention_cuda(c, spans, 4 * n_kv, n_kv, hd, r)


def greedy_cases():
    """Rows with their expected greedy tokens: random rows, ties (the first maximum), rows of -inf, NaN and +inf
    (-1), and V around the block's 256 threads."""
    rows = []
    for V in (1, 7, 256, 1000, 49152):
        x = rng.standard_normal(V).astype(np.float32)
        rows.append((x, int(np.argmax(x))))
        if V > 1:
            t = x.copy()
            t[V - 1] = t[V // 2] = t.max() + 1  # a tie: the lower index wins
            rows.append((t, V // 2 if V // 2 < V - 1 else V - 1))
            n = x.copy()
            n[V // 3] = np.nan
            rows.append((n, -1))
            p = x.copy()
            p[V - 1] = np.inf
            rows.append((p, -1))
            m = x.copy()
            m[: V // 2] = -np.inf  # banned tokens
            rows.append((m, int(np.argmax(m))))
        rows.append((np.full(V, -np.inf, np.float32), 0))
    return rows


def test_greedy_rule_on_the_cpu():
    for row, want in greedy_cases():
        assert sample_rows(row[None, :])[0] == want


@needs_cuda
def test_greedy_cuda():
    for row, want in greedy_cases():
        assert sample_rows(row[None, :], "cuda")[0] == want
    # many rows at once, as a step's logits
    logits = rng.standard_normal((64, 32000)).astype(np.float32)
    assert np.array_equal(sample_rows(logits, "cuda"), logits.argmax(1))


def sampling_cases():
    """(logits [R, V], the parameters of each row) for the sampling rule: every filter alone and together, rows full
    of ties (values on a grid of 1/4: cuts inside a run of equal values, decided by token id), penalties and bans,
    a wide flat vocabulary, NaN and +inf rows (-1), V from 1 to Llama 3's 128,256. Rows with the same V are a step."""
    g = np.random.default_rng(11)
    params = [
        dict(temperature=1.0),
        dict(temperature=0.7, top_k=5),
        dict(temperature=1.3, top_p=0.8),
        dict(temperature=1.0, min_p=0.1),
        dict(temperature=0.9, top_k=40, top_p=0.95, min_p=0.02),
        dict(temperature=0.5, top_k=1),
        dict(temperature=2.0, top_p=1e-6),
        dict(temperature=1.0, min_p=1.0),
        dict(temperature=0.6, top_p=0.5, repetition_penalty=1.3),
        dict(temperature=0.0, repetition_penalty=0.8),
        dict(temperature=1.1, top_k=300, top_p=0.999),
    ]
    cases = []
    for V, scale in ((1, 1.0), (7, 1.0), (1000, 2.0), (1000, 0.0), (49152, 3.0), (128256, 4.0)):
        rows = []
        for i in range(24):
            x = (g.standard_normal(V) * scale).astype(np.float32)
            if i % 3 == 1:
                x = np.round(x * 4) / 4  # ties everywhere
            p = dict(params[i % len(params)], u=float(g.random()))
            p["penalized"] = sorted(set(g.integers(0, V, min(V, 30)).tolist())) if i % 4 == 0 else []
            p["banned"] = g.integers(0, V, min(V - 1, 3)).tolist() if i % 5 == 0 else []
            if i == 22:
                x[g.integers(V)] = np.nan
            if i == 23:
                x[g.integers(V)] = np.inf
            rows.append((x, p))
        cases.append(rows)
    return cases


def sample_many(rows, device):
    logits = np.stack([x for x, _ in rows])
    keys = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "u")
    defaults = dict(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repetition_penalty=1.0, u=0.0)
    kw = {k: [p.get(k, defaults[k]) for _, p in rows] for k in keys}
    return sample_rows(
        logits, device, penalized=[p["penalized"] for _, p in rows], banned=[p["banned"] for _, p in rows], **kw
    )


@needs_cuda
def test_sampling_cuda_draws_the_rules_tokens():
    # the CUDA op against the rule (common/sampling.h, which tests/test_sampler.py checks against a float64 NumPy
    # reference) on the same rows and draws: the same token everywhere (their probability sums differ in rounding
    # only, ~1e-16: a draw within that of a boundary is the one way to differ, and no row here comes near one)
    for rows in sampling_cases():
        cpu, gpu = sample_many(rows, "cpu"), sample_many(rows, "cuda")
        assert (cpu[-2:] == -1).all() and (cpu[:-2] >= 0).all()
        assert np.array_equal(gpu, cpu), (len(rows[0][0]), np.flatnonzero(gpu != cpu))
