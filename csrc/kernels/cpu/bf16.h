// bf16 <-> fp32 for scalar code. `static inline` on purpose: each translation
// unit gets its own private copy, so an ISA-flagged file including this can
// never lend its copy to the scalar path (see isa_kernels.h).
#pragma once

#include <cstdint>
#include <cstring>

namespace lmrt::cpu {

static inline float bf16_bits_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even; a NaN stays a (quiet) NaN instead of rounding
// into infinity.
static inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

}  // namespace lmrt::cpu
