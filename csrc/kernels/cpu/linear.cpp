// linear: blocking, threading and ISA dispatch, plus the scalar tile.
#include <algorithm>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

namespace scalar {
namespace {

inline float wval(float w) { return w; }
inline float wval(uint16_t w) { return bf16_bits_to_f32(w); }

// Same shape of reduction as the SIMD paths (8 lanes over ascending K chunks,
// then a fixed tree), so the scalar path is batch invariant in the same way
// and lets the compiler use SSE lanes.
template <typename WT>
float dot(const float* x, const WT* w, int64_t K) {  // x [K], w [K]
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[k + l] * wval(w[k + l]);
  for (int l = 0; k + l < K; ++l) acc[l] += x[k + l] * wval(w[k + l]);
  return ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
}

template <typename WT>
void tile(const float* x, int64_t ldx, int64_t K, const WT* w, const float* bias, float* y, int64_t ldy, int64_t m0,
          int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t m = m0; m < m1; ++m)
    for (int64_t n = n0; n < n1; ++n) y[m * ldy + n] = dot(x + m * ldx, w + n * K, K) + (bias ? bias[n] : 0.0f);
}

}  // namespace

void linear_tile(const float* x, int64_t ldx, int64_t K, const void* w, int wdt, const float* bias, float* y,
                 int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  if (wdt == kBF16)
    tile(x, ldx, K, static_cast<const uint16_t*>(w), bias, y, ldy, m0, m1, n0, n1);
  else
    tile(x, ldx, K, static_cast<const float*>(w), bias, y, ldy, m0, m1, n0, n1);
}

}  // namespace scalar

namespace {

LinearTileFn linear_tile_for(Isa isa) {
#ifdef LMRT_X86
  if (isa == Isa::Avx512) return avx512::linear_tile;
  if (isa == Isa::Avx2) return avx2::linear_tile;
#endif
  return scalar::linear_tile;
}

// Bytes of W one work item keeps hot in L2 while all its rows of x stream past.
constexpr int64_t kWBlockBytes = 256 * 1024;
// Rows of x per work item when M is large: splits prefill over threads along M too.
constexpr int64_t kRowsPerItem = 64;
// Columns per item are a multiple of this (the micro-kernels take 3 or 4 columns).
constexpr int64_t kColQuantum = 12;

int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

}  // namespace

void linear(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N,
            const float* bias, float* y, int64_t ldy) {
  if (M <= 0 || N <= 0) return;
  const LinearTileFn tile = linear_tile_for(active_isa());
  const int64_t esize = wdt == DType::BF16 ? 2 : 4;
  const int64_t threads = pool.num_threads();
  // Columns per item: small enough that the W slice stays in L2 and that there
  // are several items per thread (decode has only N to split), never below one quantum.
  const int64_t nb_cache = std::max<int64_t>(kWBlockBytes / std::max<int64_t>(K * esize, 1), 1);
  const int64_t nb_balance = (N + 8 * threads - 1) / (8 * threads);
  const int64_t nb = round_up(std::max<int64_t>(std::min(nb_cache, nb_balance), 1), kColQuantum);
  const int64_t mb = M <= 2 * kRowsPerItem ? M : kRowsPerItem;
  const int64_t n_items = (N + nb - 1) / nb, m_items = (M + mb - 1) / mb;
  const int wcode = wdt == DType::BF16 ? kBF16 : kF32;
  // Items that share a W slice are adjacent, so a thread's chunk reuses it.
  pool.parallel_for(n_items * m_items, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n0 = (i / m_items) * nb, m0 = (i % m_items) * mb;
      tile(x, ldx, K, w, wcode, bias, y, ldy, m0, std::min(M, m0 + mb), n0, std::min(N, n0 + nb));
    }
  });
}

}  // namespace lmrt::cpu
