// The products with int8 activations: validation, the scalar references, ISA dispatch and threading of linear_w4a8
// (4-bit weights in rows), linear_w4a8_il (4-bit, interleaved) and linear_i8a8_il (the int8 output matrix,
// interleaved); the layouts' makers w4_interleave and i8_interleave (ops.h states the arithmetic; isa_kernels.h the
// activation layout, Q8Rows).
//
// Every path forms the same integers: the activation codes and scales are bit-identical across ISAs (a max, an
// fp32 division and round-half-even conversion), and each block's sum of code * q is exact. linear_w4a8's fp32
// accumulation order differs per ISA, so its paths agree within fp32 rounding of the sum of |terms|; the
// interleaved products fix their order per output, so theirs agree bit for bit.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

namespace {

// A row's inputs 0..15 (lo) and 16..31 (hi) of run b in Q8Rows' layout (chunks of 4 runs, low halves first).
template <class T>
struct Q8Run {
  T* lo;
  T* hi;
};
template <class T>
Q8Run<T> q8_run(T* row, int64_t nblocks, int64_t b) {
  const int64_t c0 = b / 4 * 4, nbc = std::min<int64_t>(4, nblocks - c0), j = b - c0;
  return {row + c0 * 32 + j * 16, row + c0 * 32 + nbc * 16 + j * 16};
}

}  // namespace

namespace scalar {

void q8_quantize(const float* x, int64_t ldx, int64_t K, int group_size, int64_t m0, int64_t m1, int8_t* q, int64_t ldq,
                 float* d, float* xs) {
  const int64_t nblocks = K / 32, bpg = group_size / 32;
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    int8_t* qr = q + m * ldq;
    float* dr = d + m * nblocks;
    float* xsr = xs + m * (nblocks / bpg);
    float group = 0.0f;
    for (int64_t b = 0; b < nblocks; ++b) {
      const auto [lo, hi] = q8_run(qr, nblocks, b);
      const float* xb = xr + b * 32;
      float amax = 0.0f;
      for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
      const float db = amax / 127.0f, id = db > 0.0f ? 1.0f / db : 0.0f;
      int sum = 0;
      for (int i = 0; i < 32; ++i) {
        const int v = static_cast<int>(std::nearbyint(xb[i] * id));
        (i < 16 ? lo[i] : hi[i - 16]) = static_cast<int8_t>(v);
        sum += v;
      }
      dr[b] = db;
      group = fmaf(db, static_cast<float>(sum), group);  // fused on every path (ISA files may contract a * b + c)
      if ((b + 1) % bpg == 0) {
        xsr[b / bpg] = group;
        group = 0.0f;
      }
    }
  }
}

void w4a8_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
               const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t nblocks = K / 32, bpg = group_size / 32, G = nblocks / bpg;
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* qr = x.q + m * x.ldq;
    for (int64_t n = n0; n < n1; ++n) {
      const uint8_t* c = codes + n * (K / 2);
      float acc = 0.0f;
      for (int64_t b = 0; b < nblocks; ++b) {
        const auto [lo, hi] = q8_run(qr, nblocks, b);
        int32_t dot = 0;
        for (int i = 0; i < 16; ++i) dot += (c[b * 16 + i] & 0x0F) * lo[i] + (c[b * 16 + i] >> 4) * hi[i];
        acc += static_cast<float>(dot) * (x.d[m * nblocks + b] * scales[n * G + b / bpg]);
      }
      for (int64_t g = 0; g < G; ++g) acc += mins[n * G + g] * x.xs[m * G + g];
      y[m * ldy + n] = acc + (bias ? bias[n] : 0.0f);
    }
  }
}

namespace {

// The interleaved tiles' scalar order, shared: for each row m, strip t and output n, acc starts at 0 and takes
// fma(float(dot), factor, acc) for every run b, where (dot, factor) = run(m, t, n, b, lo, hi) (lo, hi: the row's
// inputs of run b); then finish(m, t, n, acc) stores the output.
template <class Run, class Finish>
void il_rows(const Q8Rows& x, int64_t nblocks, int64_t m0, int64_t m1, int64_t t0, int64_t t1, const Run& run,
             const Finish& finish) {
  for (int64_t m = m0; m < m1; ++m) {
    const int8_t* qr = x.q + m * x.ldq;
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t n = 0; n < 16; ++n) {
        float acc = 0.0f;
        for (int64_t b = 0; b < nblocks; ++b) {
          const auto [lo, hi] = q8_run(qr, nblocks, b);
          const auto [dot, factor] = run(m, t, n, b, lo, hi);
          acc = std::fma(static_cast<float>(dot), factor, acc);
        }
        finish(m, t, n, acc);
      }
  }
}

struct RunDot {
  int32_t dot;
  float factor;
};

}  // namespace

void w4a8_il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                  int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                  int64_t t1, int64_t up) {
  if (up) {  // gate/up pairs: both strips' outputs as below, then silu_mul_row (the scalar one) per row
    std::vector<float> g(t1 * 16), u((t1 + up) * 16);  // one row's outputs at their column (ldy 0)
    for (int64_t m = m0; m < m1; ++m) {
      w4a8_il_tile(x, K, codes, scales, mins, group_size, nullptr, g.data(), 0, m, m + 1, t0, t1, 0);
      w4a8_il_tile(x, K, codes, scales, mins, group_size, nullptr, u.data(), 0, m, m + 1, t0 + up, t1 + up, 0);
      silu_mul_row(g.data() + t0 * 16, u.data() + (t0 + up) * 16, (t1 - t0) * 16, y + m * ldy + t0 * 16);
    }
    return;
  }
  const int64_t nblocks = K / 32, bpg = group_size / 32, G = nblocks / bpg;
  auto run = [&](int64_t m, int64_t t, int64_t n, int64_t b, const int8_t* lo, const int8_t* hi) {
    const uint8_t* c = codes + (t * nblocks + b) * 256 + n * 4;  // + u * 64 + byte
    int32_t dot = 0;
    for (int u = 0; u < 4; ++u)
      for (int i = 0; i < 4; ++i) dot += (c[u * 64 + i] & 0x0F) * lo[4 * u + i] + (c[u * 64 + i] >> 4) * hi[4 * u + i];
    return RunDot{dot, f16_bits_to_f32(scales[(t * G + b / bpg) * 16 + n]) * x.d[m * nblocks + b]};
  };
  il_rows(x, nblocks, m0, m1, t0, t1, run, [&](int64_t m, int64_t t, int64_t n, float acc) {
    for (int64_t g = 0; g < G; ++g) acc = std::fma(f16_bits_to_f32(mins[(t * G + g) * 16 + n]), x.xs[m * G + g], acc);
    y[m * ldy + t * 16 + n] = acc + (bias ? bias[t * 16 + n] : 0.0f);
  });
}

void i8a8_il_tile(const Q8Rows& x, int64_t K, const int8_t* q, const int32_t* offsets, const float* scales,
                  const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  const int64_t nblocks = K / 32;
  auto run = [&](int64_t m, int64_t t, int64_t n, int64_t b, const int8_t* lo, const int8_t* hi) {
    int32_t dot = 0;
    for (int v = 0; v < 8; ++v)
      for (int i = 0; i < 4; ++i) {
        const int8_t a = v < 4 ? lo[4 * v + i] : hi[4 * (v - 4) + i];
        dot += (a + 128) * q[((t * (K / 4)) + b * 8 + v) * 64 + n * 4 + i];
      }
    return RunDot{dot - offsets[(t * nblocks + b) * 16 + n], x.d[m * nblocks + b]};
  };
  il_rows(x, nblocks, m0, m1, t0, t1, run, [&](int64_t m, int64_t t, int64_t n, float acc) {
    const float v = acc * scales[t * 16 + n];
    y[m * ldy + t * 16 + n] = bias ? v + bias[t * 16 + n] : v;
  });
}

void a16_quantize(const float* x, int64_t ldx, int64_t K, int64_t m0, int64_t m1, uint8_t* hi, uint8_t* lo,
                  float* alpha) {
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    const float a = amax / 32767.0f, inv = a > 0.0f ? 1.0f / a : 0.0f;
    for (int64_t k = 0; k < K; ++k) {
      const int c = static_cast<int>(std::nearbyint(xr[k] * inv));  // |c| <= 32767
      hi[m * K + k] = static_cast<uint8_t>((c >> 8) + 128);
      lo[m * K + k] = static_cast<uint8_t>(c & 255);
    }
    alpha[m] = a;
  }
}

void i8a16_il_tile(const A16Rows& x, int64_t K, const int8_t* q, const int32_t* sums, const float* scales,
                   const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t n = 0; n < 16; ++n) {
        int32_t h = 0, l = 0;
        for (int64_t k = 0; k < K; ++k) {
          const int32_t w = q[(t * (K / 4) + k / 4) * 64 + n * 4 + k % 4];
          h += x.hi[m * K + k] * w;
          l += x.lo[m * K + k] * w;
        }
        h -= sums[t * 16 + n];
        const float v =
            std::fma(256.0f, static_cast<float>(h), static_cast<float>(l)) * x.alpha[m] * scales[t * 16 + n];
        y[m * ldy + t * 16 + n] = bias ? v + bias[t * 16 + n] : v;
      }
}

}  // namespace scalar

bool vnni_available() {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AVX512VNNI)
  static const bool ok = avx512_feature(0, 2, 11);  // CPUID.(EAX=7, ECX=0):ECX[11] AVX512_VNNI
  return ok;
#else
  return false;
#endif
}

bool amx_int8_available() {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  static const bool ok = [] {
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    return (d & (1u << 25)) != 0 && isa_supported(Isa::Avx512) && amx_available();  // EDX[25] AMX-INT8
  }();
  return ok;
#else
  return false;
#endif
}

namespace {

// Whether a product of M rows runs on AMX-INT8 (Int8Unit, ops.h; min_rows: kAmxMinRows or kAmxI8MinRows).
bool use_amx(Int8Unit unit, int64_t M, int64_t min_rows, const char* op) {
  if (unit == Int8Unit::Amx) {
    if (!amx_int8_available())
      throw std::runtime_error(std::string(op) + ": this CPU (or OS, or build) has no AMX-INT8; use Int8Unit::Vector");
    return true;
  }
  return unit == Int8Unit::Auto && M >= min_rows && active_isa() == Isa::Avx512 && amx_int8_available();
}

struct W4A8Path {
  Q8QuantizeFn quantize;
  W4A8TileFn tile;
};

W4A8Path w4a8_path(Isa isa, bool allow_vnni) {
#ifdef LMRT_X86
  if (isa == Isa::Avx512) {
#ifdef LMRT_HAVE_AVX512VNNI
    if (allow_vnni && vnni_available()) return {avx512::q8_quantize, avx512vnni::w4a8_tile};
#endif
    return {avx512::q8_quantize, avx512::w4a8_tile};
  }
  if (isa == Isa::Avx2) return {avx2::q8_quantize, avx2::w4a8_tile};
#endif
  return {scalar::q8_quantize, scalar::w4a8_tile};
}

// linear_w4a8_il's tile: AMX-INT8 where use_amx, else vector paths under AVX-512 (VNNI where allowed and present),
// else the scalar one.
W4A8IlTileFn w4a8_il_path(Isa isa, bool amx, bool allow_vnni) {
#ifdef LMRT_HAVE_AMX
  if (amx) return amx::w4a8_il_tile;
#endif
  (void)amx;
#ifdef LMRT_X86
  if (isa == Isa::Avx512) {
#ifdef LMRT_HAVE_AVX512VNNI
    if (allow_vnni && vnni_available()) return avx512vnni::w4a8_il_tile;
#endif
    return avx512::w4a8_il_tile;
  }
#endif
  (void)isa;
  (void)allow_vnni;
  return scalar::w4a8_il_tile;
}

// Columns per work item are a multiple of this (the tiles take up to 8 columns a row block).
constexpr int64_t kColQuantum = 24;
// Rows of x per work item when M is large (a column block of W is then reused from cache over these rows).
constexpr int64_t kRowsPerItem = 64;
static_assert(kRowsPerItem % 16 == 0, "the AMX tiles take a work item's rows 16 at a time from its first (Q8Rows::qn)");

int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

void check_w4a8(const char* op, int gs, int64_t K) {
  if (gs != 32 && gs != 64 && gs != 128)
    throw std::invalid_argument(std::string(op) + ": group_size must be 32, 64 or 128, got " + std::to_string(gs));
  if (K <= 0 || K % gs != 0)
    throw std::invalid_argument(std::string(op) + ": K must be a positive multiple of group_size " +
                                std::to_string(gs) + ", got " + std::to_string(K));
}

// The rows of x quantized into scratch (Q8Rows' layout): q [M, ldq] int8, then d [M, K / 32] and xs [M, G] fp32
// (64-byte aligned each). natural (the AMX tiles): also qn, the rows in input order, and d, xs and qn with rows of
// zeros up to a multiple of 16. unsigned_copy (the int8 matrix's VNNI kernel): also qu, q + 128 as bytes.
Q8Rows quantize_rows(ThreadPool& pool, Q8QuantizeFn quantize, const float* x, int64_t M, int64_t K, int64_t ldx, int gs,
                     Buffer& scratch, bool natural = false, bool unsigned_copy = false) {
  const int64_t ldq = round_up(K, 64), nblocks = K / 32, G = K / gs, Mp = natural ? round_up(M, 16) : M;
  const int64_t q_bytes = M * ldq, d_bytes = round_up(Mp * nblocks * 4, 64), xs_bytes = round_up(Mp * G * 4, 64);
  const int64_t qn_bytes = natural ? Mp * K : 0, qu_bytes = unsigned_copy ? q_bytes : 0;
  scratch.reserve(static_cast<size_t>(q_bytes + d_bytes + xs_bytes + round_up(qn_bytes, 64) + qu_bytes));
  int8_t* q = scratch.data<int8_t>();
  float* d = reinterpret_cast<float*>(scratch.data<char>() + q_bytes);
  float* xs = reinterpret_cast<float*>(scratch.data<char>() + q_bytes + d_bytes);
  int8_t* qn = natural ? scratch.data<int8_t>() + q_bytes + d_bytes + xs_bytes : nullptr;
  uint8_t* qu =
      unsigned_copy ? scratch.data<uint8_t>() + q_bytes + d_bytes + xs_bytes + round_up(qn_bytes, 64) : nullptr;
  auto rows = [&](int64_t m0, int64_t m1) {
    quantize(x, ldx, K, gs, m0, m1, q, ldq, d, xs);
    for (int64_t m = m0; natural && m < m1; ++m)
      for (int64_t b = 0; b < nblocks; ++b) {
        const auto [lo, hi] = q8_run(q + m * ldq, nblocks, b);
        std::memcpy(qn + m * K + b * 32, lo, 16);
        std::memcpy(qn + m * K + b * 32 + 16, hi, 16);
      }
    for (int64_t i = m0 * ldq; unsigned_copy && i < m1 * ldq; ++i)
      qu[i] = static_cast<uint8_t>(static_cast<uint8_t>(q[i]) ^ 0x80u);  // = q + 128
  };
  if (M < 16)
    rows(0, M);
  else
    pool.parallel_for(M, 8, rows);
  if (Mp > M) {
    std::memset(qn + M * K, 0, (Mp - M) * K);
    std::memset(d + M * nblocks, 0, (Mp - M) * nblocks * 4);
    std::memset(xs + M * G, 0, (Mp - M) * G * 4);
  }
  return Q8Rows{q, ldq, d, xs, qn, qu};
}

// The interleaved products' work items: runs of strips (16 outputs each) over runs of rows. A strip's weights stay
// in cache while the item's rows pass over them. Two equal runs of strips a thread: long runs the hardware
// prefetchers stream, few claims on the pool's shared ticket, and threads that finish together. Measured on the AMX
// host, int8 mode, alternating builds: 16 and 32 requests 2-4% faster than items of at most 8 strips with at least 4
// a thread (the 36 strips of o and down made 9 items: one thread waited for a whole item), and more, smaller items
// (2 strips, or guided sizes shrinking to 1) were 3-5% slower still; batch 1 unchanged. At most 32 strips an item:
// the output matrix (3072 strips) stays in ~100 items, so a worker descheduled on a busy machine holds little of it.
template <class F>
void strip_items(ThreadPool& pool, int64_t M, int64_t N, const F& fn) {
  const int64_t strips = N / 16, threads = pool.num_threads();
  const int64_t per_item = std::clamp<int64_t>((strips + 2 * threads - 1) / (2 * threads), 1, 32);
  const int64_t mb = M <= 2 * kRowsPerItem ? M : kRowsPerItem;
  const int64_t n_items = (strips + per_item - 1) / per_item, m_items = (M + mb - 1) / mb;
  pool.parallel_for(n_items * m_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t0 = (i / m_items) * per_item, m0 = (i % m_items) * mb;
      fn(m0, std::min(M, m0 + mb), t0, std::min(strips, t0 + per_item));
    }
  });
}

}  // namespace

void linear_w4a8(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N,
                 const float* bias, float* y, int64_t ldy, Buffer& scratch, bool allow_vnni) {
  const int gs = w.group_size;
  check_w4a8("linear_w4a8", gs, K);
  if (M <= 0 || N <= 0) return;
  const W4A8Path p = w4a8_path(active_isa(), allow_vnni);
  const Q8Rows rows = quantize_rows(pool, p.quantize, x, M, K, ldx, gs, scratch);
  const int64_t threads = pool.num_threads();
  const int64_t nb = round_up(std::max<int64_t>((N + 8 * threads - 1) / (8 * threads), 1), kColQuantum);
  const int64_t mb = M <= 2 * kRowsPerItem ? M : kRowsPerItem;
  const int64_t n_items = (N + nb - 1) / nb, m_items = (M + mb - 1) / mb;
  pool.parallel_for(n_items * m_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n0 = (i / m_items) * nb, m0 = (i % m_items) * mb;
      p.tile(rows, K, w.codes, w.scales, w.mins, gs, bias, y, ldy, m0, std::min(M, m0 + mb), n0, std::min(N, n0 + nb));
    }
  });
}

bool w4a8_il_fast() { return active_isa() == Isa::Avx512; }

void w4_interleave(const W4Matrix& w, int64_t N, int64_t K, uint8_t* codes, uint16_t* scales, uint16_t* mins) {
  check_w4a8("w4_interleave", w.group_size, K);
  if (N % 16 != 0) throw std::invalid_argument("w4_interleave: N must be a multiple of 16, got " + std::to_string(N));
  const int64_t nblocks = K / 32, G = K / w.group_size;
  for (int64_t t = 0; t < N / 16; ++t) {
    for (int64_t b = 0; b < nblocks; ++b)
      for (int64_t u = 0; u < 4; ++u)
        for (int64_t n = 0; n < 16; ++n)
          std::memcpy(codes + ((t * nblocks + b) * 4 + u) * 64 + n * 4,
                      w.codes + (t * 16 + n) * (K / 2) + b * 16 + u * 4, 4);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t n = 0; n < 16; ++n) {
        scales[(t * G + g) * 16 + n] = f32_to_f16_bits(w.scales[(t * 16 + n) * G + g]);
        mins[(t * G + g) * 16 + n] = f32_to_f16_bits(w.mins[(t * 16 + n) * G + g]);
      }
  }
}

void linear_w4a8_il(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Interleaved& w,
                    int64_t N, const float* bias, float* y, int64_t ldy, Buffer& scratch, Int8Unit unit) {
  const int gs = w.group_size;
  check_w4a8("linear_w4a8_il", gs, K);
  if (N % 16 != 0) throw std::invalid_argument("linear_w4a8_il: N must be a multiple of 16, got " + std::to_string(N));
  if (M <= 0 || N <= 0) return;
  const bool amx = use_amx(unit, M, kAmxMinRows, "linear_w4a8_il"), vnni = unit != Int8Unit::Maddubs;
  const W4A8IlTileFn tile = w4a8_il_path(active_isa(), amx, vnni);
  const Q8Rows rows = quantize_rows(pool, w4a8_path(active_isa(), vnni).quantize, x, M, K, ldx, gs, scratch, amx);
  strip_items(pool, M, N, [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
    tile(rows, K, w.codes, w.scales, w.mins, gs, bias, y, ldy, m0, m1, t0, t1, 0);
  });
}

void linear_w4a8_il_silu(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Interleaved& w,
                         int64_t N, float* y, int64_t ldy, Buffer& scratch, Int8Unit unit) {
  const int gs = w.group_size;
  check_w4a8("linear_w4a8_il_silu", gs, K);
  if (N % 32 != 0)
    throw std::invalid_argument("linear_w4a8_il_silu: N (gates, then as many ups) must be a multiple of 32, got " +
                                std::to_string(N));
  if (M <= 0 || N <= 0) return;
  const bool amx = use_amx(unit, M, kAmxMinRows, "linear_w4a8_il_silu"), vnni = unit != Int8Unit::Maddubs;
  const W4A8IlTileFn tile = w4a8_il_path(active_isa(), amx, vnni);
  const Q8Rows rows = quantize_rows(pool, w4a8_path(active_isa(), vnni).quantize, x, M, K, ldx, gs, scratch, amx);
  const int64_t up = N / 32;  // strips of gates; the ups' strips follow
  strip_items(pool, M, N / 2, [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
    tile(rows, K, w.codes, w.scales, w.mins, gs, nullptr, y, ldy, m0, m1, t0, t1, up);
  });
}

bool i8a8_il_fast() { return active_isa() == Isa::Avx512 && vnni_available(); }

void i8_interleave(const I8Matrix& w, int64_t N, int64_t K, int8_t* q, int32_t* offsets) {
  if (N % 16 != 0) throw std::invalid_argument("i8_interleave: N must be a multiple of 16, got " + std::to_string(N));
  if (K <= 0 || K % 32 != 0)
    throw std::invalid_argument("i8_interleave: K must be a positive multiple of 32, got " + std::to_string(K));
  const int64_t nblocks = K / 32;
  for (int64_t t = 0; t < N / 16; ++t)
    for (int64_t n = 0; n < 16; ++n) {
      const int8_t* row = w.q + (t * 16 + n) * K;
      for (int64_t v = 0; v < K / 4; ++v) std::memcpy(q + ((t * (K / 4)) + v) * 64 + n * 4, row + v * 4, 4);
      for (int64_t b = 0; b < nblocks; ++b) {
        int32_t sum = 0;
        for (int64_t k = 0; k < 32; ++k) sum += row[b * 32 + k];
        offsets[(t * nblocks + b) * 16 + n] = 128 * sum;
      }
    }
}

void i8_offset_sums(const int32_t* offsets, int64_t N, int64_t K, int32_t* sums) {
  const int64_t runs = K / 32;
  for (int64_t t = 0; t < N / 16; ++t)
    for (int64_t n = 0; n < 16; ++n) {
      int32_t s = 0;
      for (int64_t b = 0; b < runs; ++b) s += offsets[(t * runs + b) * 16 + n];
      sums[t * 16 + n] = s;
    }
}

namespace {

A16QuantizeFn a16_quantize_fn() {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::a16_quantize;
#endif
  return scalar::a16_quantize;
}

// The rows of x quantized into scratch as A16Rows: hi and lo [Mp, K], alpha [Mp] (Mp = M rounded up to 16, the rows
// past M zeros: codes 0, so hi 128).
A16Rows quantize_rows_a16(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, Buffer& scratch) {
  const int64_t Mp = round_up(M, 16), bytes = round_up(Mp * K, 64);
  scratch.reserve(static_cast<size_t>(2 * bytes + Mp * 4));
  uint8_t* hi = scratch.data<uint8_t>();
  uint8_t* lo = hi + bytes;
  float* alpha = reinterpret_cast<float*>(lo + bytes);
  const A16QuantizeFn quantize = a16_quantize_fn();
  auto rows = [&](int64_t m0, int64_t m1) { quantize(x, ldx, K, m0, m1, hi, lo, alpha); };
  if (M < 16)
    rows(0, M);
  else
    pool.parallel_for(M, 8, rows);
  std::memset(hi + M * K, 128, (Mp - M) * K);
  std::memset(lo + M * K, 0, (Mp - M) * K);
  std::fill(alpha + M, alpha + Mp, 0.0f);
  return A16Rows{hi, lo, alpha};
}

void linear_i8a16_il(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const I8Interleaved& w,
                     int64_t N, const float* bias, float* y, int64_t ldy, Buffer& scratch, Int8Unit unit) {
  if (unit == Int8Unit::Amx && K % 64 != 0)
    throw std::invalid_argument("linear_i8a8_il: Int16Rows activations on AMX-INT8 need K a multiple of 64, got " +
                                std::to_string(K) + "; use Int8Unit::Auto (VNNI for this K)");
  const bool amx = K % 64 == 0 && use_amx(unit, M, kAmxI8MinRows, "linear_i8a8_il");
  I8A16IlTileFn tile = scalar::i8a16_il_tile;
#ifdef LMRT_HAVE_AVX512VNNI
  if (i8a8_il_fast()) tile = avx512vnni::i8a16_il_tile;
#endif
#ifdef LMRT_HAVE_AMX
  if (amx) tile = amx::i8a16_il_tile;
#endif
  std::vector<int32_t> own;  // the offsets summed here where the weights bring no sums
  const int32_t* sums = w.sums;
  if (!sums) {
    own.resize(static_cast<size_t>(N));
    i8_offset_sums(w.offsets, N, K, own.data());
    sums = own.data();
  }
  const A16Rows rows = quantize_rows_a16(pool, x, M, K, ldx, scratch);
  strip_items(pool, M, N, [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
    tile(rows, K, w.q, sums, w.scales, bias, y, ldy, m0, m1, t0, t1);
  });
}

}  // namespace

void linear_i8a8_il(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const I8Interleaved& w,
                    int64_t N, const float* bias, float* y, int64_t ldy, Buffer& scratch, Int8Unit unit,
                    I8Activations acts) {
  if (N % 16 != 0) throw std::invalid_argument("linear_i8a8_il: N must be a multiple of 16, got " + std::to_string(N));
  if (K <= 0 || K % 32 != 0)
    throw std::invalid_argument("linear_i8a8_il: K must be a positive multiple of 32, got " + std::to_string(K));
  if (M <= 0 || N <= 0) return;
  if (acts == I8Activations::Int16Rows) return linear_i8a16_il(pool, x, M, K, ldx, w, N, bias, y, ldy, scratch, unit);
  const bool amx = use_amx(unit, M, kAmxI8MinRows, "linear_i8a8_il");
  I8A8IlTileFn tile = scalar::i8a8_il_tile;
  bool vnni = false;  // VNNI's kernel reads the unsigned copy of the rows (Q8Rows::qu)
#ifdef LMRT_HAVE_AVX512VNNI
  if (i8a8_il_fast()) tile = avx512vnni::i8a8_il_tile, vnni = true;
#endif
#ifdef LMRT_HAVE_AMX
  if (amx) tile = amx::i8a8_il_tile, vnni = false;
#endif
  const Q8Rows rows = quantize_rows(pool, w4a8_path(active_isa(), true).quantize, x, M, K, ldx, 32, scratch, amx, vnni);
  strip_items(pool, M, N, [&](int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
    tile(rows, K, w.q, w.offsets, w.scales, bias, y, ldy, m0, m1, t0, t1);
  });
}

void quantize_a16(const float* x, int64_t M, int64_t K, int64_t ldx, uint8_t* hi, uint8_t* lo, float* alpha) {
  if (K <= 0) throw std::invalid_argument("quantize_a16: K must be positive, got " + std::to_string(K));
  a16_quantize_fn()(x, ldx, K, 0, M, hi, lo, alpha);
}

void quantize_q8(const float* x, int64_t M, int64_t K, int64_t ldx, int8_t* q, float* d) {
  if (K <= 0 || K % 32 != 0)
    throw std::invalid_argument("quantize_q8: K must be a positive multiple of 32, got " + std::to_string(K));
  const W4A8Path p = w4a8_path(active_isa(), true);
  const int64_t nblocks = K / 32;
  std::vector<int8_t> perm(static_cast<size_t>(K));
  std::vector<float> xs(static_cast<size_t>(nblocks));
  for (int64_t m = 0; m < M; ++m) {
    p.quantize(x + m * ldx, ldx, K, 32, 0, 1, perm.data(), K, d + m * nblocks, xs.data());
    for (int64_t b = 0; b < nblocks; ++b) {  // back to input order
      const auto [lo, hi] = q8_run(perm.data(), nblocks, b);
      std::memcpy(q + m * K + b * 32, lo, 16);
      std::memcpy(q + m * K + b * 32 + 16, hi, 16);
    }
  }
}

}  // namespace lmrt::cpu
