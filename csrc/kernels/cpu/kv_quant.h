// The quantized KV cache's rows (KVDType::I8 / I4, ops.h): fp16 scales, quantize-on-write, and the scalar
// dequantisation the reference kernel and the tile packers use. `static inline` on purpose, as bf16.h: each
// translation unit (the ISA files included) gets its own copy, compiled with its own flags, and no symbol is
// shared between them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

// IEEE half -> fp32 (exact).
static inline float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    const float f = std::ldexp(static_cast<float>(man), -24);  // zero or subnormal
    return sign ? -f : f;
  }
  bits = exp == 31 ? sign | 0x7f800000u | (man << 13) : sign | ((exp + 112u) << 23) | (man << 13);
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// The smallest fp16 >= f, for a finite f >= 0 (a scale: rounding it up keeps the row's range covered);
// the largest finite fp16 for f beyond it.
static inline uint16_t f32_to_f16_bits_up(float f) {
  if (!(f > 0.0f)) return 0;
  if (f > 65504.0f) return 0x7bff;
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  const int e = static_cast<int>((b >> 23) & 0xffu) - 127;
  const uint32_t m = (b & 0x7fffffu) | 0x800000u;  // 24 significant bits
  uint16_t h = 0;                                  // f truncated to fp16
  if (e >= -14)
    h = static_cast<uint16_t>(((e + 15) << 10) | ((m >> 13) & 0x3ffu));
  else if (e >= -24)
    h = static_cast<uint16_t>(m >> (-1 - e));  // subnormal: h * 2^-24
  if (f16_bits_to_f32(h) < f) ++h;             // the next fp16 up (a mantissa carry moves into the exponent)
  return h;
}

static inline int kv_bits(KVDType dt) { return dt == KVDType::I4 ? 4 : 8; }

// Quantizes one row x [hd] (ops.h, KVDType): codes (I8: hd bytes; I4: hd / 2 bytes, hd a multiple of 32),
// its scale (fp16 bits) and zero point. A row with a NaN or infinity gets a NaN scale and zero codes, so the
// non-finite value reaches the logits (where the engine reports it) instead of turning into a code.
static inline void kv_quantize_row(const float* x, int hd, KVDType dt, uint8_t* codes, uint16_t* scale, uint8_t* zero) {
  const int qmax = (1 << kv_bits(dt)) - 1;
  float mn = 0.0f, mx = 0.0f;  // the range widened to include 0
  bool finite = true;
  for (int i = 0; i < hd; ++i) {
    finite = finite && std::isfinite(x[i]);
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  const int nbytes = dt == KVDType::I4 ? hd / 2 : hd;
  if (!finite) {
    *scale = 0x7e00;  // NaN
    *zero = 0;
    std::memset(codes, 0, static_cast<size_t>(nbytes));
    return;
  }
  const uint16_t s16 = f32_to_f16_bits_up((mx - mn) / static_cast<float>(qmax));
  const float s = f16_bits_to_f32(s16);
  const int z = s > 0.0f ? static_cast<int>(std::nearbyint(-mn / s)) : 0;
  *scale = s16;
  *zero = static_cast<uint8_t>(z < 0 ? 0 : z > qmax ? qmax : z);
  auto code = [&](float v) -> int {
    if (s == 0.0f) return 0;
    const float r = std::nearbyint(v / s) + static_cast<float>(*zero);
    return r < 0.0f ? 0 : r > static_cast<float>(qmax) ? qmax : static_cast<int>(r);
  };
  if (dt == KVDType::I8) {
    for (int i = 0; i < hd; ++i) codes[i] = static_cast<uint8_t>(code(x[i]));
  } else {
    for (int r = 0; r < hd; r += 32)
      for (int j = 0; j < 16; ++j) codes[r / 2 + j] = static_cast<uint8_t>(code(x[r + j]) | code(x[r + j + 16]) << 4);
  }
}

// The code of dim i of a row (I8 or I4 layout).
static inline int kv_code(const uint8_t* codes, KVDType dt, int i) {
  if (dt == KVDType::I8) return codes[i];
  const uint8_t b = codes[(i / 32) * 16 + i % 16];
  return i % 32 < 16 ? b & 0x0f : b >> 4;
}

// Dims [0, hd) of a quantized row as fp32: (code - zero) * scale, exact (one fma of exact terms).
static inline void kv_dequant_row(const uint8_t* codes, KVDType dt, uint16_t scale, uint8_t zero, int hd, float* out) {
  const float s = f16_bits_to_f32(scale), m = -static_cast<float>(zero) * s;
  for (int i = 0; i < hd; ++i) out[i] = std::fma(static_cast<float>(kv_code(codes, dt, i)), s, m);
}

}  // namespace lmrt::cpu
