#include "model/matrix_cpu.h"

#include <stdexcept>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt {

cpu::TileWeights tile_weights(const Matrix& w, bool pair_halves) {
  cpu::TileWeights t;
  t.pair_halves = pair_halves;
  switch (w.format) {
    case WeightFormat::Dense:
      t.dense = w.data.data();
      t.dense_dtype = w.dtype;
      return t;
    case WeightFormat::W4:
      if (w.interleaved)
        t.w4il = cpu::W4Interleaved{w.data.data<uint8_t>(), w.scales.data<uint16_t>(), w.mins.data<uint16_t>(),
                                    w.group_size};
      else
        t.w4 = cpu::W4Matrix{w.data.data<uint8_t>(), w.scales.data<float>(), w.mins.data<float>(), w.group_size};
      return t;
    case WeightFormat::I8:
      if (w.interleaved) throw std::logic_error("tile_weights: interleaved int8 weights run with int8 activations");
      t.i8 = cpu::I8Matrix{w.data.data<int8_t>(), w.scales.data<float>()};
      return t;
  }
  throw std::logic_error("tile_weights: unknown weight format");
}

void interleave_w4(Matrix& w) {
  if (w.format != WeightFormat::W4 || w.interleaved)
    throw std::logic_error("interleave_w4: not a 4-bit matrix in rows");
  Buffer codes(w.data.bytes()), scales(w.scales.bytes() / 2), mins(w.mins.bytes() / 2);  // fp32 -> half
  cpu::w4_interleave(cpu::W4Matrix{w.data.data<uint8_t>(), w.scales.data<float>(), w.mins.data<float>(), w.group_size},
                     w.rows, w.cols, codes.data<uint8_t>(), scales.data<uint16_t>(), mins.data<uint16_t>());
  w.data = std::move(codes);
  w.scales = std::move(scales);
  w.mins = std::move(mins);
  w.interleaved = true;
}

void interleave_i8(Matrix& w) {
  if (w.format != WeightFormat::I8 || w.interleaved)
    throw std::logic_error("interleave_i8: not an int8 matrix in rows");
  Buffer q(w.data.bytes()), offsets(static_cast<size_t>(w.rows * (w.cols / 32)) * sizeof(int32_t));
  cpu::i8_interleave(cpu::I8Matrix{w.data.data<int8_t>(), w.scales.data<float>()}, w.rows, w.cols, q.data<int8_t>(),
                     offsets.data<int32_t>());
  Buffer sums(static_cast<size_t>(w.rows) * sizeof(int32_t));
  cpu::i8_offset_sums(offsets.data<int32_t>(), w.rows, w.cols, sums.data<int32_t>());
  w.data = std::move(q);
  w.offsets = std::move(offsets);
  w.sums = std::move(sums);
  w.interleaved = true;
}

void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy, Buffer* int8_scratch) {
  switch (w.format) {
    case WeightFormat::Dense:
      cpu::linear(pool, x, M, w.cols, ldx, w.data.data(), w.dtype, w.rows, bias, y, ldy);
      return;
    case WeightFormat::W4: {
      if (w.interleaved) {
        if (!int8_scratch) throw std::logic_error("apply_linear: interleaved 4-bit weights run with int8 activations");
        const cpu::W4Interleaved il{w.data.data<uint8_t>(), w.scales.data<uint16_t>(), w.mins.data<uint16_t>(),
                                    w.group_size};
        cpu::linear_w4a8_il(pool, x, M, w.cols, ldx, il, w.rows, bias, y, ldy, *int8_scratch);
        return;
      }
      const cpu::W4Matrix w4{w.data.data<uint8_t>(), w.scales.data<float>(), w.mins.data<float>(), w.group_size};
      if (int8_scratch)
        cpu::linear_w4a8(pool, x, M, w.cols, ldx, w4, w.rows, bias, y, ldy, *int8_scratch);
      else
        cpu::linear_w4(pool, x, M, w.cols, ldx, w4, w.rows, bias, y, ldy);
      return;
    }
    case WeightFormat::I8:
      if (w.interleaved) {
        if (!int8_scratch) throw std::logic_error("apply_linear: interleaved int8 weights run with int8 activations");
        const cpu::I8Interleaved il{w.data.data<int8_t>(), w.offsets.data<int32_t>(), w.scales.data<float>(),
                                    w.sums.data<int32_t>()};
        cpu::linear_i8a8_il(pool, x, M, w.cols, ldx, il, w.rows, bias, y, ldy, *int8_scratch, cpu::Int8Unit::Auto,
                            w.i8_acts);
        return;
      }
      cpu::linear_i8(pool, x, M, w.cols, ldx, cpu::I8Matrix{w.data.data<int8_t>(), w.scales.data<float>()}, w.rows,
                     bias, y, ldy);
      return;
  }
}

bool apply_gate_up_silu(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, float* y,
                        int64_t ldy, Buffer* int8_scratch) {
  if (w.format != WeightFormat::W4 || !w.interleaved || !int8_scratch || w.rows % 32 != 0) return false;
  const cpu::W4Interleaved il{w.data.data<uint8_t>(), w.scales.data<uint16_t>(), w.mins.data<uint16_t>(), w.group_size};
  cpu::linear_w4a8_il_silu(pool, x, M, w.cols, ldx, il, w.rows, y, ldy, *int8_scratch);
  return true;
}

}  // namespace lmrt
