"""CPU kernel ops (lmrt._core.kernels) against float64 NumPy references, on every ISA path.

Each op is checked on every path this CPU supports, each forced in turn; a path the
CPU lacks is skipped with the reason. Paths are also checked against the scalar path,
for bit equality across thread counts, and for batch invariance (a row computed inside
any batch is bit-identical to the same row computed alone).
"""

import glob
import os
import shutil
import subprocess

import numpy as np
import pytest
from kernel_paths import CPU_NEEDS, ISAS, PagedCache, assert_bits_equal, attn_ref, bf16_round, bits, isa, with_isa  # noqa: F401  (isa is a fixture)

from lmrt._core import kernels as K

EPS32 = 2.0**-24  # unit roundoff of fp32


# fp32 dot product of length K: |err| <= ~K * u * sum|x_k w_k| (worst-case rounding bound).
def dot_tol(K):
    return K * EPS32


# rmsnorm: a length-H sum of squares (H*u relative), then a sqrt, a divide and two products.
def norm_tol(H):
    return (H + 8) * EPS32


# rope: cos/sin (libm vs torch/SLEEF, ~1 ulp each, scaled) in two products and one add.
ROPE_TOL = 8 * EPS32
# silu_mul: expf (~1 ulp), one add, one divide and one product.
SILU_TOL = 8 * EPS32


# attention: each score is a head_dim-long dot (head_dim*u relative to |q||k|*scale, which
# turns into an absolute error of the exponent) plus expf/normalisation ulps; bounded
# with margin as 4*(head_dim + 16)*u relative to max|v|.
def attn_tol(head_dim):
    return 4 * (head_dim + 16) * EPS32


# Two paths against each other: each is within its bound of the exact value.
PAIR_FACTOR = 2


rng = np.random.default_rng(1234)


def randn(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------- ISA selection


def test_isa_queries():
    assert K.isa_supported("scalar")
    assert K.best_isa() in ISAS and K.isa_supported(K.best_isa())
    assert K.active_isa() in ISAS
    assert K.physical_cores() >= 1
    with pytest.raises(ValueError):
        K.set_isa("sse9")
    for name in ISAS:
        if not K.isa_supported(name):
            with pytest.raises(ValueError):
                K.set_isa(name)


def test_isa_env_override(tmp_path):
    import sys

    import lmrt

    code = "from lmrt._core import kernels as K; print(K.active_isa())"
    # The child imports the same lmrt as this run (installed or in-tree), from a neutral cwd.
    env = dict(os.environ, LMRT_ISA="scalar")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(lmrt.__file__)) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "scalar"


def test_isa_objects_define_no_shared_symbols():
    """ISA-flagged objects must not emit weak (COMDAT) copies of inline/template code,
    or the linker could hand an AVX2 copy to the scalar path."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # build/dev (scripts/dev_build.sh) or build/<wheel tag> (pip install .)
    objs = glob.glob(os.path.join(root, "build", "**", "*_avx*.o"), recursive=True)
    if not objs or shutil.which("nm") is None:
        pytest.skip("no object files under build/ or no nm (build with pip install . or scripts/dev_build.sh)")
    for o in objs:
        out = subprocess.run(["nm", "-C", o], capture_output=True, text=True, check=True).stdout
        weak = [l for l in out.splitlines() if l.split()[-2:-1] and l.split()[-2] in ("W", "V", "u")]
        assert not weak, f"{os.path.basename(o)} defines shared symbols: {weak[:5]}"


# ---------------------------------------------------------------- bf16 conversion


def test_bf16_round_to_nearest_even():
    one = np.float32(1.0)
    ulp = np.float32(2.0**-7)  # bf16 ulp at 1.0
    vals = np.array(
        [
            1.0,
            1.0 + 2.0**-8,
            1.0 + 3 * 2.0**-8,
            1.0 + 2.0**-8 + 2.0**-20,
            -(1.0 + 2.0**-8),
            np.inf,
            -np.inf,
            0.0,
            -0.0,
            3.4e38,
            1e-40,
        ],
        np.float32,
    )
    got = K.bf16_to_f32(K.f32_to_bf16(vals))
    assert got[0] == one
    assert got[1] == one  # tie -> even (1.0)
    assert got[2] == one + 2 * ulp  # tie -> even (1 + 2 ulp)
    assert got[3] == one + ulp  # above the tie -> up
    assert got[4] == -one
    assert np.isposinf(got[5]) and np.isneginf(got[6])
    assert bits(got[7:9]).tolist() == [0, 0x80000000]
    assert np.isposinf(got[9])  # FLT_MAX rounds up past the largest bf16
    nan = K.f32_to_bf16(np.array([np.nan, -np.nan, np.float32(np.uint32(0x7F800001).view(np.float32))], np.float32))
    assert np.isnan(K.bf16_to_f32(nan)).all()


def test_bf16_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.concatenate([randn(10000, scale=100.0), randn(1000, scale=1e-38)])
    want = torch.from_numpy(a).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(K.f32_to_bf16(a), want)
    np.testing.assert_array_equal(
        K.bf16_to_f32(want), torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy()
    )


# ---------------------------------------------------------------- linear

LINEAR_SHAPES = [  # (M, K, N): odd sizes hit every M/N/K remainder path
    (1, 64, 48),
    (1, 37, 13),
    (3, 133, 29),
    (7, 576, 50),
    (17, 96, 101),
    (130, 71, 38),  # > 128 rows: split into M items too
]


def linear_ref(x, w, bias):
    y = x.astype(np.float64) @ w.astype(np.float64).T
    if bias is not None:
        y += bias
    bound = np.abs(x.astype(np.float64)) @ np.abs(w.astype(np.float64)).T + (0 if bias is None else np.abs(bias))
    return y, bound


def make_w(N, Kd, wdtype):
    w = randn(N, Kd)
    if wdtype == "bf16":
        wb = K.f32_to_bf16(w)
        return wb, K.bf16_to_f32(wb)
    return w, w


@pytest.mark.parametrize("wdtype", ["f32", "bf16"])
@pytest.mark.parametrize("M,Kd,N", LINEAR_SHAPES)
def test_linear_vs_reference(isa, M, Kd, N, wdtype):
    x = randn(M, Kd)
    w, w32 = make_w(N, Kd, wdtype)
    bias = randn(N) if N % 2 else None
    y = K.linear(x, w, bias, wdtype=wdtype)
    ref, bound = linear_ref(x, w32, bias)
    assert y.shape == (M, N) and y.dtype == np.float32
    assert np.all(np.abs(y - ref) <= dot_tol(Kd) * bound + 1e-30), np.abs(y - ref).max()


@pytest.mark.parametrize("wdtype", ["f32", "bf16"])
def test_linear_vs_scalar(isa, wdtype):
    M, Kd, N = 19, 203, 45
    x = randn(M, Kd)
    w, w32 = make_w(N, Kd, wdtype)
    y = K.linear(x, w, wdtype=wdtype, num_threads=2)
    ys = with_isa("scalar", lambda: K.linear(x, w, wdtype=wdtype))
    _, bound = linear_ref(x, w32, None)
    assert np.all(np.abs(y - ys) <= PAIR_FACTOR * dot_tol(Kd) * bound)


@pytest.mark.parametrize("wdtype", ["f32", "bf16"])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_batch_invariance(isa, wdtype, threads):
    M, Kd, N = 150, 77, 61
    x = randn(M, Kd)
    w, _ = make_w(N, Kd, wdtype)
    big = K.linear(x, w, wdtype=wdtype, num_threads=threads)
    for r in range(M):  # every row position inside every tile
        assert_bits_equal(
            K.linear(x[r : r + 1], w, wdtype=wdtype, num_threads=threads), big[r : r + 1], f"row {r} alone"
        )
    for a, b in [(0, 3), (5, 12), (63, 130), (1, 150)]:
        assert_bits_equal(K.linear(x[a:b], w, wdtype=wdtype, num_threads=threads), big[a:b], f"rows {a}:{b}")
    other = K.linear(x, w, wdtype=wdtype, num_threads=3 - threads)
    assert_bits_equal(other, big, "1 vs 2 threads")


def test_linear_prefill_shape_threads(isa):
    x = randn(64, 576)
    w = randn(1536, 576)
    y1 = K.linear(x, w, num_threads=1)
    y2 = K.linear(x, w, num_threads=2)
    assert_bits_equal(y1, y2, "1 vs 2 threads")
    ref, bound = linear_ref(x, w, None)
    assert np.all(np.abs(y2 - ref) <= dot_tol(576) * bound)


def test_linear_validation():
    x = randn(2, 8)
    with pytest.raises(ValueError, match="K"):
        K.linear(x, randn(3, 9))
    with pytest.raises(ValueError, match="bias"):
        K.linear(x, randn(3, 8), randn(4))
    with pytest.raises(ValueError, match="uint16"):
        K.linear(x, randn(3, 8), wdtype="bf16")
    with pytest.raises(ValueError, match="dtype"):
        K.linear(x, randn(3, 8), wdtype="f16")
    with pytest.raises(ValueError, match="num_threads"):
        K.linear(x, randn(3, 8), num_threads=0)


# ---------------------------------------------------------------- rmsnorm, silu_mul, embedding


@pytest.mark.parametrize("M,H", [(1, 576), (5, 37), (9, 576), (6, 15)])
def test_rmsnorm(isa, M, H):
    x, w, eps = randn(M, H, scale=3.0), randn(H), 1e-5
    y = K.rmsnorm(x, w, eps)
    x64 = x.astype(np.float64)
    ref = x64 / np.sqrt((x64**2).mean(-1, keepdims=True) + eps) * w
    assert np.all(np.abs(y - ref) <= norm_tol(H) * np.abs(ref) + 1e-30)
    assert_bits_equal(K.rmsnorm(x[-1:], w, eps), y[-1:], "last row alone")
    for m in range(min(M, 5)):  # rows normed four at a time give each row's bits alone
        assert_bits_equal(K.rmsnorm(x[m : m + 1], w, eps), y[m : m + 1], f"row {m} alone")
    # every ISA the scalar bits (the sum of squares in one order: isa_kernels.h, RmsnormSig)
    assert_bits_equal(y, with_isa("scalar", lambda: K.rmsnorm(x, w, eps)), f"{isa} vs scalar")


@pytest.mark.parametrize("M,H", [(1, 576), (37, 100), (70, 576)])
def test_rmsnorm_bf16_tiles_is_rmsnorm_then_bf16(isa, M, H):
    """The prefill's fused norm (one pass into the bf16 tiles' input): the bits of rmsnorm, rounded to bf16 (the
    NumPy rounding, lmrt._bf16), in a [round_up(M, 32), round_up(H, 32)] array whose padding is zero; 1 and 2 threads."""
    from lmrt._bf16 import float32_to_bf16_bits

    x, w, eps = randn(M, H, scale=3.0), randn(H), 1e-5
    want = np.zeros(((M + 31) // 32 * 32, (H + 31) // 32 * 32), np.uint16)
    want[:M, :H] = float32_to_bf16_bits(K.rmsnorm(x, w, eps))
    for threads in (1, 2):
        assert np.array_equal(K.rmsnorm_bf16_tiles(x, w, eps, num_threads=threads), want), threads


def test_silu_mul(isa):
    gu = randn(7, 2 * 45, scale=4.0)
    gu[0, :3] = [-100.0, 100.0, 0.0]  # exp overflow / saturation
    out = K.silu_mul(gu)
    g, u = gu[:, :45].astype(np.float64), gu[:, 45:].astype(np.float64)
    ref = g / (1 + np.exp(-g)) * u
    assert np.all(np.abs(out - ref) <= SILU_TOL * np.abs(ref) + 1e-30)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_embedding(isa, dtype):
    table = randn(50, 24)
    stored = K.f32_to_bf16(table) if dtype == "bf16" else table
    ids = np.array([3, 0, 49, 3], np.int32)
    out = K.embedding(stored, ids, dtype)
    want = (bf16_round(table) if dtype == "bf16" else table)[ids]
    assert_bits_equal(out, want, "embedding rows")
    with pytest.raises(ValueError, match="ids"):
        K.embedding(stored, np.array([50], np.int32), dtype)


# ---------------------------------------------------------------- rope


def hf_rope_torch(x, pos, inv_freq, n_heads, head_dim, scale):
    """HF LlamaRotaryEmbedding.forward + apply_rotary_pos_emb, in torch fp32."""
    torch = pytest.importorskip("torch")
    inv = torch.from_numpy(inv_freq)[None, :, None].float()  # [1, hd/2, 1]
    p = torch.from_numpy(pos.astype(np.int64))[None, None, :].float()  # [1, 1, M]
    freqs = (inv @ p).transpose(1, 2)  # [1, M, hd/2]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos() * scale, emb.sin() * scale
    q = torch.from_numpy(x).view(len(pos), n_heads, head_dim).transpose(0, 1)[None]  # [1, H, M, hd]
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def rotate_half(t):
        t1, t2 = t[..., : t.shape[-1] // 2], t[..., t.shape[-1] // 2 :]
        return torch.cat((-t2, t1), dim=-1)

    out = q * cos + rotate_half(q) * sin
    return out[0].transpose(0, 1).reshape(len(pos), n_heads * head_dim).numpy()


@pytest.mark.parametrize("head_dim,n_heads,scale", [(64, 9, 1.0), (32, 3, 0.7), (80, 2, 1.0)])
def test_rope_matches_hf(isa, head_dim, n_heads, scale):
    pos = np.array([0, 1, 7, 100, 2047, 8191], np.int32)
    inv_freq = (1.0 / (10000.0 ** (np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / head_dim))).astype(
        np.float32
    )
    x = randn(len(pos), n_heads * head_dim)
    y = K.rope(x, pos, inv_freq, n_heads, head_dim, scale)
    ref = hf_rope_torch(x, pos, inv_freq, n_heads, head_dim, scale)
    mag = np.abs(x).max() * scale
    np.testing.assert_allclose(y, ref, rtol=0, atol=ROPE_TOL * mag)
    # Float64 from the same fp32 angles: checks the rotate_half layout independently of torch.
    half = head_dim // 2
    ang = (pos.astype(np.float32)[:, None] * inv_freq[None, :]).astype(np.float64)
    xr = x.reshape(len(pos), n_heads, head_dim).astype(np.float64)
    c, s = (np.cos(ang) * scale)[:, None, :], (np.sin(ang) * scale)[:, None, :]
    x1, x2 = xr[..., :half], xr[..., half:]
    ref64 = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1).reshape(x.shape)
    np.testing.assert_allclose(y, ref64, rtol=0, atol=ROPE_TOL * mag)
    # every ISA the scalar bits (each product rounded, then one add)
    assert_bits_equal(y, with_isa("scalar", lambda: K.rope(x, pos, inv_freq, n_heads, head_dim, scale)), isa)
    assert not np.shares_memory(y, x)


# ---------------------------------------------------------------- hadamard_heads (int8 K's rotation)


def sylvester64(n):
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / np.sqrt(n)


# A B-point transform: log2(B) add/sub levels (each adds ~u relative to the block's l1 norm) and one scaling.
@pytest.mark.parametrize("head_dim,block", [(64, 64), (128, 128), (96, 32), (80, 16), (6, 2), (256, 256)])
def test_hadamard_heads_matches_float64(isa, head_dim, block):
    assert K.hadamard_block(head_dim) == block
    n_heads = 3
    x = randn(7, n_heads * head_dim)
    y = K.hadamard_heads(x, n_heads, head_dim)
    # Every path does fwht.h's operations in its order (CUDA's too): the scalar transform's bits.
    assert_bits_equal(y, with_isa("scalar", lambda: K.hadamard_heads(x, n_heads, head_dim)), "hadamard_heads")
    H = sylvester64(block)
    ref = (x.astype(np.float64).reshape(7, -1, block) @ H.T).reshape(x.shape)
    l1 = np.abs(x.astype(np.float64)).reshape(7, -1, block).sum(-1, keepdims=True) / np.sqrt(block)
    tol = (np.log2(block) + 2) * EPS32 * np.broadcast_to(l1, (7, x.shape[1] // block, block)).reshape(x.shape)
    assert np.all(np.abs(y - ref) <= tol)
    assert not np.shares_memory(y, x)
    # What the model relies on: every per-head dot product is unchanged (orthonormal), and the rotation is its own
    # inverse (H is symmetric).
    q = randn(7, n_heads * head_dim)
    qr = K.hadamard_heads(q, n_heads, head_dim)
    dots = (q.astype(np.float64) * x).reshape(7, n_heads, head_dim).sum(-1)
    dots_r = (qr.astype(np.float64) * y).reshape(7, n_heads, head_dim).sum(-1)
    np.testing.assert_allclose(dots_r, dots, rtol=0, atol=1e-5 * np.abs(dots).max())
    np.testing.assert_allclose(K.hadamard_heads(y, n_heads, head_dim), x, rtol=0, atol=1e-6 * np.abs(x).max())


def test_hadamard_heads_refuses_a_wrong_shape():
    with pytest.raises(ValueError, match=r"\[M, n_heads \* head_dim\] = \[M, 128\]"):
        K.hadamard_heads(randn(2, 96), 2, 64)


# ---------------------------------------------------------------- kv_store + paged_attention


def Cache(num_blocks, n_kv, hd, bs, dtype):
    return PagedCache(num_blocks, n_kv, hd, bs, dtype, rng)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_kv_store(dtype):
    c = Cache(6, 2, 8, 4, dtype)
    table, k, v = c.new_seq(10)
    for t in range(10):
        blk, off = table[t // 4], t % 4
        want_k = k[t].reshape(2, 8)
        want_v = v[t].reshape(2, 8)
        if dtype == "bf16":
            want_k, want_v = K.f32_to_bf16(want_k), K.f32_to_bf16(want_v)
        np.testing.assert_array_equal(c.k[blk, :, off], want_k)
        np.testing.assert_array_equal(c.v[blk, :, off], want_v)
    with pytest.raises(ValueError, match="slots"):
        K.kv_store(c.k, c.v, k[:1], v[:1], np.array([6 * 4], np.int64), 2, 8, 4, dtype)


ATTN_CONFIGS = [  # (n_heads, n_kv_heads, head_dim, block_size)
    (9, 3, 64, 16),  # SmolLM2-135M: GQA ratio 3
    (4, 4, 32, 8),  # GQA ratio 1
    (2, 1, 20, 5),  # head_dim not a multiple of any vector width
]


def build_attn_case(n_heads, n_kv, hd, bs, dtype):
    c = Cache(40, n_kv, hd, bs, dtype)
    seqs = []
    # (total length, positions queried): prefill with a partial last block, decode, chunked prefill.
    for length, pos in [(37, np.arange(37)), (51, np.array([50])), (30, np.arange(19, 30)), (1, np.array([0]))]:
        table, k, v = c.new_seq(length)
        q = randn(len(pos), n_heads * hd)
        seqs.append((q, table, pos.astype(np.int32), k, v))
    return c, seqs


def run_attn(c, seqs, n_heads, scale, threads):
    return c.attend(seqs, n_heads, scale, threads)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("n_heads,n_kv,hd,bs", ATTN_CONFIGS)
def test_paged_attention(isa, n_heads, n_kv, hd, bs, dtype):
    c, seqs = build_attn_case(n_heads, n_kv, hd, bs, dtype)
    scale = hd**-0.5
    outs = run_attn(c, seqs, n_heads, scale, 2)
    for (q, _table, pos, k, v), out in zip(seqs, outs):
        kq, vq = (bf16_round(k), bf16_round(v)) if dtype == "bf16" else (k, v)
        ref = attn_ref(q, kq, vq, pos, n_heads, n_kv, hd, scale)
        assert out.shape == ref.shape
        assert np.abs(out - ref).max() <= attn_tol(hd) * np.abs(vq).max()
    # Against the scalar path.
    outs_s = with_isa("scalar", lambda: run_attn(c, seqs, n_heads, scale, 1))
    for (_, _, _, _, v), a, b in zip(seqs, outs, outs_s):
        assert np.abs(a - b).max() <= PAIR_FACTOR * attn_tol(hd) * np.abs(v).max()


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_paged_attention_batch_invariance(isa, dtype):
    n_heads, n_kv, hd, bs = 9, 3, 64, 16
    c, seqs = build_attn_case(n_heads, n_kv, hd, bs, dtype)
    scale = hd**-0.5
    together = run_attn(c, seqs, n_heads, scale, 2)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(together, run_attn(c, seqs, n_heads, scale, 1)))
    for i, s in enumerate(seqs):
        alone = run_attn(c, [s], n_heads, scale, 1)[0]
        assert_bits_equal(alone, together[i], f"sequence {i} alone")
        q, table, pos = s[0], s[1], s[2]
        m = len(pos) - 1  # last token alone (as in a decode step)
        one = run_attn(c, [(q[m : m + 1], table, pos[m : m + 1])], n_heads, scale, 2)[0]
        assert_bits_equal(one, together[i][m : m + 1], f"sequence {i} token {m} alone")


def test_paged_attention_validation():
    c, seqs = build_attn_case(4, 4, 32, 8, "f32")
    q, table, pos = seqs[0][:3]
    with pytest.raises(ValueError, match="blocks"):
        K.paged_attention([q], c.k, c.v, [table[:1]], [pos], 4, 4, 32, 8, 0.2, "f32", 1)
    with pytest.raises(ValueError, match="multiple"):
        K.paged_attention([q], c.k, c.v, [table], [pos], 3, 2, 32, 8, 0.2, "f32", 1)
    with pytest.raises(ValueError, match="float32"):
        K.paged_attention([q], c.k.view(np.uint32), c.v, [table], [pos], 4, 4, 32, 8, 0.2, "f32", 1)
