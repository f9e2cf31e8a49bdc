// bf16 and IEEE half <-> fp32 for scalar code. `static inline` on purpose: each translation
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

// IEEE half -> fp32 (exact).
static inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {  // zero or subnormal: man * 2^-24, exact in fp32
    float f = static_cast<float>(man) * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  bits = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112u) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// fp32 -> IEEE half, round to nearest, ties to even (as F16C and NumPy's float16); beyond the largest half an
// infinity; a NaN stays a quiet NaN.
static inline uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return sign | 0x7e00u;
  if (x >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520: rounds past 65504
  if (x >= 0x38800000u) {                       // a normal half (>= 2^-14): round at bit 13, carries included
    x += 0xfffu + ((x >> 13) & 1u);
    return sign | static_cast<uint16_t>((x - 0x38000000u) >> 13);
  }
  float a;  // a subnormal half: |f| * 2^24 (exact) rounded to an integer, half to even (1024: the smallest normal)
  std::memcpy(&a, &x, sizeof a);
  const float r = (a * 16777216.0f + 12582912.0f) - 12582912.0f;
  return sign | static_cast<uint16_t>(static_cast<int>(r));
}

}  // namespace lmrt::cpu
