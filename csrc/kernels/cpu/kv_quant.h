// The quantized KV cache's rows (KVDType::I8 / I4, ops.h): fp16 scales, quantize-on-write, and the scalar
// dequantisation the reference kernel and the tile packers use. `static inline` on purpose, as bf16.h: each
// translation unit (the ISA files included) gets its own copy, compiled with its own flags, and no symbol is
// shared between them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

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

static inline int kv_bits(KVDType dt) { return dt == KVDType::I8 ? 8 : 4; }

// x rounded to an integer, half to even: what std::nearbyint gives in the default rounding mode, for |x| <= 2^22
// (adding 1.5 * 2^23 leaves no fraction bits, so the sum rounds x; subtracting it back is exact). Here |x| <= 255:
// a value over its row's scale. Inline arithmetic rather than a libm call per element (baseline x86-64 has no
// rounding instruction), so the row loops vectorize.
static inline float kv_round(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagic) - kMagic;
}

// The (scale, zero point) of values in [mn, mx] (mn <= 0 <= mx) on codes 0..qmax: scale = (mx - mn) / qmax
// rounded up to fp16, zero = round(-mn / scale) within 0..qmax; zero for an all-zero range.
static inline void kv_params(float mn, float mx, int qmax, uint16_t* scale, uint8_t* zero) {
  *scale = f32_to_f16_bits_up((mx - mn) / static_cast<float>(qmax));
  const float s = f16_bits_to_f32(*scale);
  const int z = s > 0.0f ? static_cast<int>(kv_round(-mn / s)) : 0;
  *zero = static_cast<uint8_t>(z < 0 ? 0 : z > qmax ? qmax : z);
}

// The code of v under (s, zero): clamp(round(v / s) + zero, 0, qmax), rounding half to even.
static inline int kv_code_of(float v, float s, uint8_t zero, int qmax) {
  if (s == 0.0f) return 0;
  const float r = kv_round(v / s) + static_cast<float>(zero);
  return r < 0.0f ? 0 : r > static_cast<float>(qmax) ? qmax : static_cast<int>(r);
}

// Writes I4 codes of x [hd] (code(i) gives dim i's code): in each run of 32 dims, byte j = dim j | dim j+16 << 4.
template <typename CodeFn>
static inline void kv_pack_i4(int hd, uint8_t* codes, CodeFn code) {
  for (int r = 0; r < hd; r += 32)
    for (int j = 0; j < 16; ++j) codes[r / 2 + j] = static_cast<uint8_t>(code(r + j) | code(r + j + 16) << 4);
}

// The scalar loops of kv_quantize_row (isa_kernels.h's KVRowRangeSig / KVRowCodesSig; kv_store_avx512.cpp has
// their AVX-512 forms).
static inline bool kv_row_range(const float* x, int hd, float* mn_out, float* mx_out) {
  float mn = 0.0f, mx = 0.0f;  // the range widened to include 0
  bool finite = true;
  for (int i = 0; i < hd; ++i) {
    finite = finite && std::isfinite(x[i]);
    mn = x[i] < mn ? x[i] : mn;
    mx = x[i] > mx ? x[i] : mx;
  }
  *mn_out = mn;
  *mx_out = mx;
  return finite;
}
static inline void kv_row_codes(const float* x, int hd, float s, uint8_t zero, int dt, uint8_t* codes) {
  if (dt == static_cast<int>(KVDType::I8)) {
    for (int i = 0; i < hd; ++i) codes[i] = static_cast<uint8_t>(kv_code_of(x[i], s, zero, 255));
  } else {
    kv_pack_i4(hd, codes, [&](int i) { return kv_code_of(x[i], s, zero, 15); });
  }
}

// Quantizes one row x [hd] (ops.h, KVDType): codes (I8: hd bytes; I4: hd / 2 bytes, hd a multiple of 32),
// its scale (fp16 bits) and zero point. A row with a NaN or infinity gets a NaN scale and zero codes, so the
// non-finite value reaches the logits (where the engine reports it) instead of turning into a code. range and
// codes_of: the row's two loops (the scalar ones, or an ISA's with the same results).
static inline void kv_quantize_row(const float* x, int hd, KVDType dt, uint8_t* codes, uint16_t* scale, uint8_t* zero,
                                   bool (*range)(const float*, int, float*, float*) = kv_row_range,
                                   void (*codes_of)(const float*, int, float, uint8_t, int, uint8_t*) = kv_row_codes) {
  const int qmax = (1 << kv_bits(dt)) - 1;
  float mn, mx;
  const bool finite = range(x, hd, &mn, &mx);
  const int nbytes = dt == KVDType::I8 ? hd : hd / 2;
  if (!finite) {
    *scale = 0x7e00;  // NaN
    *zero = 0;
    std::memset(codes, 0, static_cast<size_t>(nbytes));
    return;
  }
  kv_params(mn, mx, qmax, scale, zero);
  codes_of(x, hd, f16_bits_to_f32(*scale), *zero, static_cast<int>(dt), codes);
}

// I4Channel: quantizes one full block of one kv head from its staged I8 rows (x = (code - zero) * scale,
// exact in fp32), one (scale, zero) per channel over the block's bs rows, the range widened to include 0;
// a channel holding a NaN or infinity gets a NaN scale and zero codes.
//   stage [bs, hd] I8 codes with stage_scales / stage_zeros [bs]; codes [bs, hd / 2] I4 rows;
//   scales, zeros [hd] one per channel. work [bs * hd] fp32 scratch.
static inline void kv_seal_block(const uint8_t* stage, const uint16_t* stage_scales, const uint8_t* stage_zeros, int bs,
                                 int hd, uint8_t* codes, uint16_t* scales, uint8_t* zeros, float* work) {
  for (int j = 0; j < bs; ++j) {
    const float s = f16_bits_to_f32(stage_scales[j]), m = -static_cast<float>(stage_zeros[j]) * s;
    for (int c = 0; c < hd; ++c) work[j * hd + c] = std::fma(static_cast<float>(stage[j * hd + c]), s, m);
  }
  for (int c = 0; c < hd; ++c) {
    float mn = 0.0f, mx = 0.0f;
    bool finite = true;
    for (int j = 0; j < bs; ++j) {
      const float x = work[j * hd + c];
      finite = finite && std::isfinite(x);
      mn = x < mn ? x : mn;
      mx = x > mx ? x : mx;
    }
    if (finite) {
      kv_params(mn, mx, 15, scales + c, zeros + c);
    } else {
      scales[c] = 0x7e00;  // NaN: every code 0 below
      zeros[c] = 0;
    }
  }
  for (int j = 0; j < bs; ++j)
    kv_pack_i4(hd, codes + j * (hd / 2), [&](int c) {
      const float s = f16_bits_to_f32(scales[c]);
      return s == s ? kv_code_of(work[j * hd + c], s, zeros[c], 15) : 0;
    });
}

// The code of dim i of a row (I8 or I4 layout).
static inline int kv_code(const uint8_t* codes, KVDType dt, int i) {
  if (dt == KVDType::I8) return codes[i];  // I4 and I4Channel share the nibble layout
  const uint8_t b = codes[(i / 32) * 16 + i % 16];
  return i % 32 < 16 ? b & 0x0f : b >> 4;
}

// Dims [0, hd) of a quantized row as fp32: (code - zero) * scale, exact: code * scale and -zero * scale are exact
// (8 bits times a half's 11) and so is their sum ((code - zero) * scale needs 20 bits), so a plain product and sum
// give what an fma would, without the libm call an fma is on the baseline ISA (and the loop vectorizes).
static inline void kv_dequant_row(const uint8_t* codes, KVDType dt, uint16_t scale, uint8_t zero, int hd, float* out) {
  const float s = f16_bits_to_f32(scale), m = -static_cast<float>(zero) * s;
  for (int i = 0; i < hd; ++i) out[i] = static_cast<float>(kv_code(codes, dt, i)) * s + m;
}

// I4Channel: dims [0, hd) of one sealed row as fp32, code * scale[c] + (-zero[c] * scale[c]) (exact).
static inline void kv_dequant_channel_row(const uint8_t* codes, const uint16_t* scales, const uint8_t* zeros, int hd,
                                          float* out) {
  for (int c = 0; c < hd; ++c) {
    const float s = f16_bits_to_f32(scales[c]);
    out[c] = static_cast<float>(kv_code(codes, KVDType::I4, c)) * s - static_cast<float>(zeros[c]) * s;  // exact
  }
}

// I4Channel: whether a query at position pos reads block b of its sequence as int4 (every row visible)
// rather than the staged I8 rows.
static inline bool kv_reads_sealed(int64_t b, int64_t pos, int64_t block_size) {
  return pos >= (b + 1) * block_size - 1;
}

}  // namespace lmrt::cpu
