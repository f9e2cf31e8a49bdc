// Blocking and threading shared by linear_w4 and linear_i8 (baseline-compiled files only:
// never include this from an *_avx2.cpp / *_avx512.cpp file, see isa_kernels.h).
//
// Two ways to compute a block of y, bit-identical by construction (isa_kernels.h):
//  - decode (few rows of x): a fused tile that dequantises W in registers while it
//    streams past, parallel over N;
//  - otherwise: dequantise a block of W rows to fp32 into a per-thread buffer once,
//    and run the fp32 linear tile over many rows of x against it (W reused from L1/L2).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/threadpool.h"

namespace lmrt::cpu::quant {

// Rows of x up to which the fused in-register tile is used (when the ISA has one).
constexpr int64_t kDecodeMaxRows = 8;
// fp32 bytes of dequantised W per work item (kept hot in L2 while x streams past).
constexpr int64_t kWBlockBytes = 256 * 1024;
// Rows of x per work item when M is large (splits prefill over threads along M too).
constexpr int64_t kRowsPerItem = 64;
// Columns per item are a multiple of this (micro-kernels take 1..6 columns).
constexpr int64_t kColQuantum = 12;

inline int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

// dequant(n0, n1, out): W rows [n0, n1) as fp32 into out [(n1 - n0), K].
// fused(m0, m1, n0, n1): the decode tile, used for M <= kDecodeMaxRows when has_fused.
// finish(m0, m1, n0, n1): called on each finished block of y (i8 scales there), still in cache.
// tile_bias: bias passed to the fp32 tile (nullptr for i8, whose finish adds it).
template <typename Dequant, typename Fused, typename Finish>
void run(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, int64_t N, const float* tile_bias,
         float* y, int64_t ldy, LinearTileFn tile, const Dequant& dequant, const Fused& fused, bool has_fused,
         const Finish& finish) {
  const int64_t threads = pool.num_threads();
  const int64_t nb_balance = (N + 8 * threads - 1) / (8 * threads);
  if (has_fused && M <= kDecodeMaxRows) {
    // Decode: only N to split; small column blocks so every thread gets several.
    const int64_t nb = round_up(std::max<int64_t>(nb_balance, 1), kColQuantum);
    const int64_t n_items = (N + nb - 1) / nb;
    pool.parallel_for(n_items, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n0 = i * nb, n1 = std::min(N, n0 + nb);
        fused(0, M, n0, n1);
        finish(0, M, n0, n1);
      }
    });
    return;
  }
  const int64_t nb_cache = std::max<int64_t>(kWBlockBytes / std::max<int64_t>(K * 4, 1), 1);
  const int64_t nb = round_up(std::max<int64_t>(std::min(nb_cache, nb_balance), 1), kColQuantum);
  const int64_t mb = M <= 2 * kRowsPerItem ? M : kRowsPerItem;
  const int64_t n_items = (N + nb - 1) / nb, m_items = (M + mb - 1) / mb;
  // Items that share a W block are adjacent, so a thread's chunk dequantises each block once.
  pool.parallel_for(n_items * m_items, 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buf;
    if (static_cast<int64_t>(buf.size()) < nb * K) buf.resize(nb * K);
    int64_t have = -1;  // n0 of the block in buf
    for (int64_t i = begin; i < end; ++i) {
      const int64_t n0 = (i / m_items) * nb, m0 = (i % m_items) * mb;
      const int64_t n1 = std::min(N, n0 + nb);
      if (n0 != have) {
        dequant(n0, n1, buf.data());
        have = n0;
      }
      const int64_t m1 = std::min(M, m0 + mb);
      tile(x, ldx, K, buf.data(), kF32, tile_bias ? tile_bias + n0 : nullptr, y + n0, ldy, m0, m1, 0, n1 - n0);
      finish(m0, m1, n0, n1);
    }
  });
}

}  // namespace lmrt::cpu::quant
