#include "model/matrix.h"

namespace lmrt {

void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy) {
  switch (w.format) {
    case WeightFormat::Dense:
      cpu::linear(pool, x, M, w.cols, ldx, w.data.data(), w.dtype, w.rows, bias, y, ldy);
      return;
    case WeightFormat::W4:
      cpu::linear_w4(pool, x, M, w.cols, ldx,
                     cpu::W4Matrix{w.data.data<uint8_t>(), w.scales.data<float>(), w.mins.data<float>(), w.group_size},
                     w.rows, bias, y, ldy);
      return;
    case WeightFormat::I8:
      cpu::linear_i8(pool, x, M, w.cols, ldx, cpu::I8Matrix{w.data.data<int8_t>(), w.scales.data<float>()}, w.rows,
                     bias, y, ldy);
      return;
  }
}

}  // namespace lmrt
