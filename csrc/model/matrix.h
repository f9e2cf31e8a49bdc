// A weight matrix in any of the formats the kernels take, and y = x W^T over it.
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/cpu/ops.h"

namespace lmrt {

enum class WeightFormat { Dense, W4, I8 };

// W [rows = outputs, cols = inputs], row-major, owned.
struct Matrix {
  WeightFormat format = WeightFormat::Dense;
  cpu::DType dtype = cpu::DType::F32;  // Dense only
  int group_size = 0;                  // W4 only
  int64_t rows = 0;
  int64_t cols = 0;
  Buffer data;    // Dense: [rows, cols] of dtype; W4: codes [rows, cols / 2]; I8: [rows, cols] int8
  Buffer scales;  // W4: [rows, cols / group_size] f32; I8: [rows] f32
  Buffer mins;    // W4: [rows, cols / group_size] f32

  bool empty() const { return rows == 0; }
  size_t bytes() const { return data.bytes() + scales.bytes() + mins.bytes(); }
};

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
