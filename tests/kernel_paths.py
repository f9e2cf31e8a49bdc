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


KV_NUMPY = {"f32": np.float32, "bf16": np.uint16, "i8": np.uint8, "i4": np.uint8, "i4c": np.uint8}


def kv_row_bytes(dtype, hd):
    return {"f32": 4 * hd, "bf16": 2 * hd, "i8": hd, "i4": hd // 2, "i4c": hd // 2}[dtype]


class PagedCache:
    """A paged KV cache of one layer (as the core lays it out), filled through kv_store. dtype 'f32', 'bf16', or the
    quantized 'i8' / 'i4' (codes, with an fp16 scale and a zero point per row); v_dtype: V's, when it differs.
    'i4c' (K only, V 'i4'): int4 K with a scale and zero point per channel of each block, its rows staged as i8
    until the block is full; store() gives each block it writes a staging slot and seals the blocks it fills, as
    the engine does."""

    def __init__(self, num_blocks, n_kv, hd, bs, dtype, rng, v_dtype=None):
        self.rng = rng
        self.n_kv, self.hd, self.bs, self.dtype = n_kv, hd, bs, dtype
        self.v_dtype = v_dtype or ("i4" if dtype == "i4c" else dtype)
        rows = num_blocks * n_kv * bs

        def cache(dt):
            width = kv_row_bytes(dt, hd) // np.dtype(KV_NUMPY[dt]).itemsize
            return np.zeros((num_blocks, n_kv, bs, width), KV_NUMPY[dt])

        self.k, self.v = cache(self.dtype), cache(self.v_dtype)
        self.params = {}
        for which, dt in (("k", self.dtype), ("v", self.v_dtype)):
            if dt in ("i8", "i4", "i4c"):
                n = num_blocks * n_kv * hd if dt == "i4c" else rows
                self.params[f"{which}_scales"] = np.zeros(n, np.uint16)
                self.params[f"{which}_zeros"] = np.zeros(n, np.uint8)
        self.stage = None
        if dtype == "i4c":  # one staging slot per block is room enough here; slots handed out in reverse order
            self.stage = (
                np.zeros((rows, hd), np.uint8),
                np.zeros(rows, np.uint16),
                np.zeros(rows, np.uint8),
                np.full(num_blocks, -1, np.int32),
            )
            self.free_slots = list(range(num_blocks))
        self.free = list(rng.permutation(num_blocks))  # scattered block ids

    def kwargs(self):
        """The cache arguments kv_store and paged_attention take after dtype."""
        extra = dict(stage=self.stage) if self.stage is not None else {}
        return dict(v_dtype=self.v_dtype, **self.params, **extra)

    def attend(
        self, seqs, n_heads, scale, threads, tile_unit=None, min_rows=32, device="cpu", int8_q=False, bf16_out=False
    ):
        """paged_attention over this cache for seqs [(q, block_table, positions, ...)]; tile_unit None: the exact
        path; device "cuda": the CUDA op; bf16_out: the results as bf16 bits."""
        return K.paged_attention(
            [s[0] for s in seqs],
            self.k,
            self.v,
            [s[1] for s in seqs],
            [s[2] for s in seqs],
            n_heads,
            self.n_kv,
            self.hd,
            self.bs,
            scale,
            self.dtype,
            threads,
            tile_unit=tile_unit,
            min_rows=min_rows,
            device=device,
            int8_q=int8_q,
            bf16_out=bf16_out,
            **self.kwargs(),
        )

    def store(self, k, v, slots, device="cpu"):
        if self.stage is not None:
            for b in np.unique(slots // self.bs):
                if self.stage[3][b] < 0:
                    self.stage[3][b] = self.free_slots.pop()
        K.kv_store(self.k, self.v, k, v, slots, self.n_kv, self.hd, self.bs, self.dtype, device=device, **self.kwargs())
        if self.stage is not None:
            full = (slots[slots % self.bs == self.bs - 1] // self.bs).astype(np.int32)
            if len(full):
                K.kv_seal(self.k, self.v, full, self.n_kv, self.hd, self.bs, self.dtype, device=device, **self.kwargs())

    def new_seq(self, length):
        nblk = (length + self.bs - 1) // self.bs
        table = np.array([self.free.pop() for _ in range(nblk)], np.int32)
        k, v = (self.rng.standard_normal((2, length, self.n_kv * self.hd))).astype(np.float32)
        slots = table[np.arange(length) // self.bs].astype(np.int64) * self.bs + np.arange(length) % self.bs
        self.store(k, v, slots)
        return table, k, v

    def as_f32(self, a):
        return K.bf16_to_f32(a) if self.dtype == "bf16" else a

    def held(self, which, table, length, view=None):
        """What the cache holds for positions 0..length-1 of a sequence, as float32 [length, n_kv * hd]: the values,
        or the dequantised codes (code - zero) * scale. i4c K: as a query at position `view` reads it (default
        length - 1): a block every row of which it sees from its per-channel codes, the others from their staged
        i8 rows."""
        cache, dt = (self.k, self.dtype) if which == "k" else (self.v, self.v_dtype)
        view = length - 1 if view is None else view
        out = np.zeros((length, self.n_kv * self.hd), np.float32)
        for t in range(length):
            blk, off = table[t // self.bs], t % self.bs
            for h in range(self.n_kv):
                row = (blk * self.n_kv + h) * self.bs + off
                stored = cache[blk, h, off]
                if dt == "i4c":
                    if view >= (t // self.bs + 1) * self.bs - 1:  # sealed
                        ch = slice((blk * self.n_kv + h) * self.hd, (blk * self.n_kv + h + 1) * self.hd)
                        scale = self.params["k_scales"][ch].view(np.float16).astype(np.float32)
                        zero = self.params["k_zeros"][ch].astype(np.float32)
                        x = (unpack_kv_codes(stored, "i4").astype(np.float32) - zero) * scale
                    else:
                        codes, scales, zeros, of = self.stage
                        srow = (of[blk] * self.n_kv + h) * self.bs + off
                        scale = scales[srow : srow + 1].view(np.float16).astype(np.float32)[0]
                        x = (codes[srow].astype(np.float32) - zeros[srow]) * scale
                elif dt == "f32":
                    x = stored
                elif dt == "bf16":
                    x = K.bf16_to_f32(stored)
                else:
                    codes = unpack_kv_codes(stored, dt)
                    scale = self.params[f"{which}_scales"][row : row + 1].view(np.float16).astype(np.float32)[0]
                    x = (codes.astype(np.float32) - self.params[f"{which}_zeros"][row]) * scale
                out[t, h * self.hd : (h + 1) * self.hd] = x
        return out


def held_row_scales(c, which, table, length):
    """The fp16 scale of each quantized (i8 / i4) row of positions 0..length-1, as float32 [length, n_kv]."""
    out = np.zeros((length, c.n_kv), np.float32)
    for t in range(length):
        blk, off = table[t // c.bs], t % c.bs
        for h in range(c.n_kv):
            row = (blk * c.n_kv + h) * c.bs + off
            out[t, h] = c.params[f"{which}_scales"][row : row + 1].view(np.float16).astype(np.float32)[0]
    return out


def unpack_kv_codes(stored, dtype):
    """A row's codes: i8 as they are; i4 from its bytes (in each run of 32 dims, byte j holds dim j in the low
    nibble and dim j + 16 in the high one)."""
    if dtype == "i8":
        return stored.astype(np.int32)
    runs = stored.reshape(-1, 16).astype(np.int32)
    return np.concatenate([runs & 15, runs >> 4], axis=1).reshape(-1)


def quantize_kv_rows_ref(x, bits):
    """NumPy reference of the cache's quantization (csrc/kernels/cpu/ops.h, KVDType): per row, the range widened
    to include 0, scale = (max - min) / (2^bits - 1) rounded up to fp16, zero = rint(-min / scale), code =
    clip(rint(x / scale) + zero), all in float32, rounding half to even. Returns (codes int [R, hd], scale fp16
    bits uint16 [R], zero uint8 [R])."""
    x = np.asarray(x, np.float32)
    qmax = np.float32(2**bits - 1)
    mn = np.minimum(x.min(axis=1), np.float32(0))
    mx = np.maximum(x.max(axis=1), np.float32(0))
    s = ((mx - mn) / qmax).astype(np.float32)
    s16 = s.astype(np.float16)
    low = s16.astype(np.float32) < s
    s16[low] = np.nextafter(s16[low], np.float16(np.inf))
    sf = s16.astype(np.float32)
    safe = np.where(sf > 0, sf, np.float32(1))
    zero = np.where(sf > 0, np.rint(-mn / safe), 0).clip(0, qmax).astype(np.float32)
    codes = np.where(sf[:, None] > 0, np.rint(x / safe[:, None]) + zero[:, None], 0).clip(0, qmax)
    return codes.astype(np.int32), s16.view(np.uint16), zero.astype(np.uint8)


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


def sample_rows(
    logits,
    device="cpu",
    *,
    temperature=0.0,
    top_k=0,
    top_p=1.0,
    min_p=0.0,
    repetition_penalty=1.0,
    u=0.0,
    penalized=None,
    banned=None,
):
    """K.sample over logits [R, V] (left unchanged): each parameter one value for every row or one a row;
    penalized / banned: a list of token ids a row (None: none)."""
    R = logits.shape[0]

    def per_row(v, dt):
        return np.broadcast_to(np.asarray(v, dt), (R,)).copy()

    return K.sample(
        logits,
        per_row(temperature, np.float32),
        per_row(top_k, np.int32),
        per_row(top_p, np.float32),
        per_row(min_p, np.float32),
        per_row(repetition_penalty, np.float32),
        per_row(u, np.float64),
        penalized if penalized is not None else [[] for _ in range(R)],
        banned if banned is not None else [[] for _ in range(R)],
        device=device,
    )
