// A weight matrix in any of the formats the kernels take (the CPU product over it: matrix_cpu.h).
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/ops.h"

namespace lmrt {

enum class WeightFormat { Dense, W4, I8 };

// W [rows = outputs, cols = inputs], row-major, owned.
struct Matrix {
  WeightFormat format = WeightFormat::Dense;
  DType dtype = DType::F32;  // Dense only
  int group_size = 0;        // W4 only
  bool interleaved = false;  // W4: data, scales and mins in W4Interleaved's layout (interleave_w4); I8: data and
                             // offsets in I8Interleaved's (interleave_i8)
  I8Activations i8_acts = I8Activations::Int8Runs;  // I8 interleaved: its product's activations
  int64_t rows = 0;
  int64_t cols = 0;
  Buffer data;     // Dense: [rows, cols] of dtype; W4: codes [rows, cols / 2] (interleaved: [rows / 16, cols / 32,
                   // 4, 16, 4]); I8: [rows, cols] int8
  Buffer scales;   // W4: [rows, cols / group_size] f32 (interleaved: IEEE half bits); I8: [rows] f32
  Buffer mins;     // W4: [rows, cols / group_size] f32 (interleaved: IEEE half bits)
  Buffer offsets;  // I8 interleaved: [rows / 16, cols / 32, 16] int32 (I8Interleaved)
  Buffer sums;     // I8 interleaved: [rows] int32, each output's offsets summed (I8Interleaved::sums)

  bool empty() const { return rows == 0; }
  size_t bytes() const { return data.bytes() + scales.bytes() + mins.bytes() + offsets.bytes() + sums.bytes(); }
};

}  // namespace lmrt
