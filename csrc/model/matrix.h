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
  bool tiles_emulated = false;  // run the tile unit's software model (tests on CPUs without AMX)

  bool empty() const { return rows == 0; }
  size_t bytes() const { return data.bytes() + scales.bytes() + mins.bytes() + tiles.bytes(); }
};

// Batches of at least this many rows go to the tiles when a matrix has them; decode and
// short chunks stay on the exact fp32 path.
constexpr int64_t kTilesMinRows = 32;

// Fills w.tiles from w in any format (dequantised, then rounded to bf16).
void pack_tiles(Matrix& w, bool emulated);

// y [M, rows] (row stride ldy) = x [M, cols] (row stride ldx) W^T (+ bias [rows]).
// x_bf16: workspace of cpu::bf16_tiles_x_size(M, cols) elements for the tile path (nullptr: allocated).
void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy, uint16_t* x_bf16 = nullptr);

}  // namespace lmrt
