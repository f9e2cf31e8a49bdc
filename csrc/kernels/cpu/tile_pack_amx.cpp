// The weight-strip packers of the tile products on AMX hosts: as linear_bf16_avx512.cpp, with
// AVX512-BF16's VCVTNE2PS2BF16 rounding 32 weights in one instruction (every AMX CPU has it; this
// file runs only where amx_available() holds). Contracts in isa_kernels.h.
#include <immintrin.h>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt::cpu::amx {

namespace {

// r[n] holds row n's 16 pairs (32-bit words); afterwards r[p] holds pair p of rows 0..15.
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i x0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), x1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i x3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(x0, x2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(x1, x3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
  }
}

// 32 floats (lo = elements 0..15, hi = 16..31) as 32 bf16 in order: word p = elements (2p, 2p + 1).
inline __m512i bf16x32(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

void store_tiles(__m512i r[16], uint16_t* out) {
  transpose16(r);
  for (int p = 0; p < 16; ++p) _mm512_storeu_si512(out + p * 32, r[p]);
}

}  // namespace

void tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  const int64_t steps = (K + 31) / 32;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t left = K - s * 32;
    const __mmask16 lo = left >= 16 ? 0xffff : static_cast<__mmask16>((1u << left) - 1u);
    const __mmask16 hi = left >= 32 ? 0xffff : left <= 16 ? 0 : static_cast<__mmask16>((1u << (left - 16)) - 1u);
    __m512i r[16];
    for (int n = 0; n < 16; ++n) {
      const float* row = w + n * ldw + s * 32;
      r[n] = n < num_rows ? bf16x32(_mm512_maskz_loadu_ps(lo, row), _mm512_maskz_loadu_ps(hi, row + 16))
                          : _mm512_setzero_si512();
    }
    store_tiles(r, out + s * 16 * 32);
  }
}

void tile_pack16_w4(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                    int64_t r0, int64_t num_rows, uint16_t* out) {
  const int64_t steps = K / 32, G = K / group_size;  // K is a multiple of group_size >= 32
  const __m512i nibble = _mm512_set1_epi32(0x0F);
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t g = s * 32 / group_size;
    __m512i r[16];
    for (int n = 0; n < 16; ++n) {
      if (n >= num_rows) {
        r[n] = _mm512_setzero_si512();
        continue;
      }
      const int64_t row = r0 + n;
      const uint8_t* run = codes + row * (K / 2) + s * 16;  // 32 inputs: low nibbles 0..15, high nibbles 16..31
      // 16 rows are 16 streams, too many for the hardware prefetchers: fetch 8 runs (2 lines) ahead
      if (s % 4 == 0) _mm_prefetch(reinterpret_cast<const char*>(run + 128), _MM_HINT_T0);
      const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(run)));
      const __m512 sc = _mm512_set1_ps(scales[row * G + g]), mn = _mm512_set1_ps(mins[row * G + g]);
      const __m512 lo = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(b, nibble)), sc, mn);
      const __m512 hi = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4)), sc, mn);
      r[n] = bf16x32(lo, hi);
    }
    store_tiles(r, out + s * 16 * 32);
  }
}

}  // namespace lmrt::cpu::amx
