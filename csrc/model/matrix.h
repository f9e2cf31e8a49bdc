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
  // Prefill on AMX tiles (opt-in, pack_tiles): W rounded to bf16 in tile order,
  // [bf16_tile_packed_size(rows, cols)] uint16; empty otherwise.
  Buffer tiles;

  bool empty() const { return rows == 0; }
  size_t bytes() const { return data.bytes() + scales.bytes() + mins.bytes() + tiles.bytes(); }
};

// With tiles packed (opt-in), batches of at least this many rows run on them (LlamaModel::layer_tiles);
// decode and short chunks stay on the exact fp32 path.
constexpr int64_t kTilesMinRows = 32;

// Fills w.tiles from w in any format (dequantised, then rounded to bf16); pair_halves as in
// cpu::bf16_tile_pack (a gate/up matrix whose product ends in silu_mul).
void pack_tiles(Matrix& w, bool pair_halves);

// y [M, rows] (row stride ldy) = x [M, cols] (row stride ldx) W^T (+ bias [rows]), exact fp32.
void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy);

}  // namespace lmrt
