// y = x W^T over a Matrix on the CPU backend: the exact fp32 products, int8 activations, and W as the bf16 tile
// products read it.
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/cpu/ops.h"
#include "model/matrix.h"

namespace lmrt {

// With the bf16 tile path on (opt-in), batches of at least this many rows run on it
// (LlamaModel::layer_tiles); decode and short chunks stay on the exact fp32 path.
constexpr int64_t kTilesMinRows = 32;

// w as the tile products read it (dense or 4-bit; an int8 matrix, the output matrix only, is refused).
// pair_halves: a gate/up matrix whose product ends in silu_mul (cpu::TileWeights).
cpu::TileWeights tile_weights(const Matrix& w, bool pair_halves);

// y [M, rows] (row stride ldy) = x [M, cols] (row stride ldx) W^T (+ bias [rows]), exact fp32; or, for a 4-bit W
// when int8_scratch is given, with x quantized to int8 per run of 32 inputs (cpu::linear_w4a8, its scratch).
void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy, Buffer* int8_scratch = nullptr);

}  // namespace lmrt
