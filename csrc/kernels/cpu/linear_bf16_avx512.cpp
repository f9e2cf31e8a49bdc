// tile_pack16 / tile_pack16_w4 with AVX-512 F: 16 weight rows (fp32, or 4-bit dequantised in registers)
// rounded to bf16 and transposed, 32-bit pair by pair, into the tile unit's B layout (contracts in
// isa_kernels.h; scalar::tile_pack16 after w4_dequant is the reference).
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

namespace {

// r[n] holds row n's 16 pairs (32-bit words); afterwards r[p] holds pair p of rows 0..15.
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {  // within 128-bit lanes: words of row pairs interleaved
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], lane l: word 4l + c of rows 4i..4i+3
    u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {  // a 4 x 4 transpose of 128-bit lanes across u[c], u[4 + c], u[8 + c], u[12 + c]
    const __m512i x0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), x1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i x2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44);
    const __m512i x3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(x0, x2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(x0, x2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(x1, x3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(x1, x3, 0xDD);
  }
}

// 16 floats -> 16 bf16 in order.
inline __m256i bf16x16(Vec v) { return _mm512_cvtepi32_epi16(round_bf16(v)); }

// One run of 32 4-bit weights (16 bytes: low nibbles inputs 0..15, high nibbles 16..31) as 16
// bf16 pairs, each weight fma(code, scale, min) in fp32, then rounded.
inline __m512i w4_run(const uint8_t* run, Vec scale, Vec min) {
  const IVec b = widen_u8(run);
  const __m256i lo = bf16x16(fmadd(low_nibbles(b), scale, min)), hi = bf16x16(fmadd(high_nibbles(b), scale, min));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

}  // namespace

void tile_pack16_w4(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                    int64_t r0, int64_t num_rows, uint16_t* out) {
  const int64_t steps = K / 32, G = K / group_size;  // K is a multiple of group_size >= 32
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t g = s * 32 / group_size;
    __m512i r[16];
    for (int n = 0; n < 16; ++n) {
      const int64_t row = r0 + n;
      r[n] = n < num_rows ? w4_run(codes + row * (K / 2) + s * 16, set1(scales[row * G + g]), set1(mins[row * G + g]))
                          : _mm512_setzero_si512();
    }
    transpose16(r);
    for (int p = 0; p < 16; ++p) _mm512_storeu_si512(out + (s * 16 + p) * 32, r[p]);
  }
}

void tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  const int64_t steps = (K + 31) / 32;
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t k0 = s * 32, left = K - k0;
    const Tail lo = left >= 16 ? Tail(0xffff) : tail_mask(static_cast<int>(left));
    const Tail hi = left >= 32 ? Tail(0xffff) : left <= 16 ? Tail(0) : tail_mask(static_cast<int>(left - 16));
    __m512i r[16];
    for (int n = 0; n < 16; ++n) {
      if (n >= num_rows) {
        r[n] = _mm512_setzero_si512();
        continue;
      }
      const float* row = w + n * ldw + k0;
      const __m256i a = bf16x16(load_tail(row, lo)), b = bf16x16(load_tail(row + 16, hi));
      r[n] = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);  // word p = elements (2p, 2p + 1)
    }
    transpose16(r);
    for (int p = 0; p < 16; ++p) _mm512_storeu_si512(out + (s * 16 + p) * 32, r[p]);
  }
}

}  // namespace lmrt::cpu::avx512
