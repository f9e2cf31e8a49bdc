#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/tiles.h"

namespace lmrt::cpu {

uint16_t f32_to_bf16(float x) { return f32_to_bf16_bits(x); }
float bf16_to_f32(uint16_t x) { return bf16_bits_to_f32(x); }

void scalar::to_bf16(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16_bits(x[i]);
}

ToBf16Fn to_bf16_fn() {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::to_bf16;
#endif
  return scalar::to_bf16;
}

ToBf16Fn to_bf16_fn(TileUnit unit) {
#ifdef LMRT_HAVE_AVX512BF16
  if (unit != TileUnit::Model && active_isa() == Isa::Avx512 && avx512bf16_available()) return avx512bf16::to_bf16;
#endif
  (void)unit;
  return to_bf16_fn();
}

}  // namespace lmrt::cpu
