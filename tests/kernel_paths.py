"""The CPU kernel paths, each forced in turn: shared by the kernel test files."""

import numpy as np
import pytest

from lmrt._core import kernels as K

ISAS = ["scalar", "avx2", "avx512"]
CPU_NEEDS = {"avx2": "avx2+fma+f16c with OS YMM state", "avx512": "avx512f/bw/vl/dq with OS ZMM state"}


@pytest.fixture(params=ISAS)
def isa(request):
    name = request.param
    if not K.isa_supported(name):
        pytest.skip(f"CPU lacks {name} ({CPU_NEEDS[name]})")
    prev = K.active_isa()
    K.set_isa(name)
    yield name
    K.set_isa(prev)


def with_isa(name, fn):
    prev = K.active_isa()
    K.set_isa(name)
    try:
        return fn()
    finally:
        K.set_isa(prev)


def bits(a):
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def assert_bits_equal(a, b, what):
    a, b = bits(a), bits(b)
    assert a.shape == b.shape, what
    if not np.array_equal(a, b):
        n = int((a != b).sum())
        pytest.fail(f"{what}: {n} of {a.size} elements differ in bits")


def bf16_round(a):
    """float32 values as bf16 would store them (round to nearest even), as float32."""
    return K.bf16_to_f32(K.f32_to_bf16(np.asarray(a, np.float32)))


class PagedCache:
    """A paged KV cache of one layer (as the core lays it out), filled through kv_store."""

    def __init__(self, num_blocks, n_kv, hd, bs, dtype, rng):
        self.rng = rng
        self.n_kv, self.hd, self.bs, self.dtype = n_kv, hd, bs, dtype
        np_dtype = np.uint16 if dtype == "bf16" else np.float32
        self.k = np.zeros((num_blocks, n_kv, bs, hd), np_dtype)
        self.v = np.zeros((num_blocks, n_kv, bs, hd), np_dtype)
        self.free = list(rng.permutation(num_blocks))  # scattered block ids

    def new_seq(self, length):
        nblk = (length + self.bs - 1) // self.bs
        table = np.array([self.free.pop() for _ in range(nblk)], np.int32)
        k, v = (self.rng.standard_normal((2, length, self.n_kv * self.hd))).astype(np.float32)
        slots = table[np.arange(length) // self.bs].astype(np.int64) * self.bs + np.arange(length) % self.bs
        K.kv_store(self.k, self.v, k, v, slots, self.n_kv, self.hd, self.bs, self.dtype)
        return table, k, v

    def as_f32(self, a):
        return K.bf16_to_f32(a) if self.dtype == "bf16" else a


def attn_ref(q, k, v, pos, n_heads, n_kv, hd, scale):
    """Float64 causal attention; k, v [L, n_kv*hd] as stored in the cache."""
    group = n_heads // n_kv
    out = np.zeros((len(pos), n_heads * hd))
    for m, p in enumerate(pos):
        for h in range(n_heads):
            kh = k[: p + 1, (h // group) * hd : (h // group + 1) * hd].astype(np.float64)
            vh = v[: p + 1, (h // group) * hd : (h // group + 1) * hd].astype(np.float64)
            s = kh @ q[m, h * hd : (h + 1) * hd].astype(np.float64) * scale
            e = np.exp(s - s.max())
            out[m, h * hd : (h + 1) * hd] = e @ vh / e.sum()
    return out
