#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

uint16_t f32_to_bf16(float x) { return f32_to_bf16_bits(x); }
float bf16_to_f32(uint16_t x) { return bf16_bits_to_f32(x); }

}  // namespace lmrt::cpu
