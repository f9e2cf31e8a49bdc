// Device helpers of the quantized KV cache's rows, shared by kv_cache.cu and attention.cu (cpu/kv_quant.h is the
// host's copy of the same arithmetic).
#pragma once

#include <cstdint>

namespace lmrt::cuda {

// IEEE half -> fp32 (exact).
__device__ inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {
    const float f = ldexpf(static_cast<float>(man), -24);  // zero or subnormal
    return sign ? -f : f;
  }
  const uint32_t bits = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112u) << 23) | (man << 13);
  return __uint_as_float(bits);
}

}  // namespace lmrt::cuda
