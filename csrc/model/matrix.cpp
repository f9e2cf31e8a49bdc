#include "model/matrix.h"

#include <stdexcept>
#include <vector>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt {

void pack_tiles(Matrix& w, bool pair_halves) {
  const int64_t N = w.rows, K = w.cols;
  std::vector<float> dense;  // W4 dequantised to fp32 first
  const void* src = w.data.data();
  cpu::DType dt = w.dtype;
  if (w.format != WeightFormat::Dense) {
    dense.resize(static_cast<size_t>(N * K));
    dt = cpu::DType::F32;
    src = dense.data();
    if (w.format != WeightFormat::W4)  // int8 is the output matrix's format only, which prefill never packs
      throw std::logic_error("pack_tiles: int8 matrices are not packed for tiles");
    cpu::scalar::w4_dequant(w.data.data<uint8_t>(), w.scales.data<float>(), w.mins.data<float>(), w.group_size, K, 0,
                            N, dense.data());
  }
  w.tiles.reset(static_cast<size_t>(cpu::bf16_tile_packed_size(N, K)) * sizeof(uint16_t));
  cpu::bf16_tile_pack(src, dt, N, K, w.tiles.data<uint16_t>(), pair_halves);
}

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
