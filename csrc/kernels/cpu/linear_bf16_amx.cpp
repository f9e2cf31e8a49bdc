// The AMX tile code (compiled with -mamx-tile -mamx-bf16): one 32 x 32 block of C, the
// primitive under linear_bf16_tiles and paged_attention_tiles. linear_bf16.cpp holds the
// packing, the blocking and the software model (scalar::bf16_tile_block) this must match.
#include <immintrin.h>

#include "kernels/cpu/amx_tiles.h"
#include "kernels/cpu/isa_kernels.h"

namespace lmrt::cpu::amx {

constexpr int64_t kStreamASteps = 8;  // K >= 256: a streamed (bf16_block)

void configure_tiles() {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {  // every tile used is 16 rows of 64 bytes
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  load_tile_config(cfg);
}

void release_tiles() { _tile_release(); }

// The K steps of bf16_block on C tiles 0-3: each product right after the loads it needs (~2% faster than 4 loads
// first); kStreamA: a's tiles loaded with the streaming hint (tileloaddt1).
template <bool kStreamA>
inline void block_steps(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps) {
  const int64_t a_stride = lda * 2;  // bytes between rows of a
  for (int64_t s = 0; s < steps; ++s) {
    if constexpr (kStreamA)
      _tile_stream_loadd(4, a + s * 32, a_stride);
    else
      _tile_loadd(4, a + s * 32, a_stride);
    _tile_loadd(6, b0 + s * 16 * 32, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_loadd(7, b1 + s * 16 * 32, 64);
    _tile_dpbf16ps(1, 4, 7);
    if constexpr (kStreamA)
      _tile_stream_loadd(5, a + 16 * lda + s * 32, a_stride);
    else
      _tile_loadd(5, a + 16 * lda + s * 32, a_stride);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
}

void bf16_block(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps,
                const float* init, int64_t ldi, float* c, int64_t ldc, int /*rows: all 32 computed*/) {
  if (init) {  // ldi 0: every row of a C tile starts as the same 16 values
    const int64_t i_stride = ldi * 4;
    _tile_loadd(0, init, i_stride);
    _tile_loadd(1, init + 16, i_stride);
    _tile_loadd(2, init + 16 * ldi, i_stride);
    _tile_loadd(3, init + 16 * ldi + 16, i_stride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  // A long K (a weight product: the strip b0/b1 serves every row block in turn) loads a with the streaming hint, so
  // a's rows, read once per strip, do not push the strip out of L1 (a 32-output strip at K = 576 is 36 KB of the
  // 48 KB): ~15% faster at K = 576 in a standalone measurement; short K (attention's 64-dim heads, where a is
  // reused) loads it plainly.
  if (steps >= kStreamASteps)
    block_steps<true>(a, lda, b0, b1, steps);
  else
    block_steps<false>(a, lda, b0, b1, steps);
  const int64_t c_stride = ldc * 4;
  _tile_stored(0, c, c_stride);
  _tile_stored(1, c + 16, c_stride);
  _tile_stored(2, c + 16 * ldc, c_stride);
  _tile_stored(3, c + 16 * ldc + 16, c_stride);
}

}  // namespace lmrt::cpu::amx
