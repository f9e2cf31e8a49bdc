// tile_pack16 / tile_pack16_w4 with AVX-512 F: 16 weight rows (fp32, or 4-bit dequantised in registers)
// rounded to bf16 with integer ops and transposed, 32-bit pair by pair, into the tile unit's B layout
// (contracts in isa_kernels.h; scalar::tile_pack16 after w4_dequant is the reference).
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512 {

namespace {

inline __m512i pairs(Vec lo, Vec hi) {
  const __m256i a = _mm512_cvtepi32_epi16(round_bf16(lo)), b = _mm512_cvtepi32_epi16(round_bf16(hi));
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}

// Lane n: bf16(even[n]) in its low half, bf16(odd[n]) in its high half (a B-layout pair row).
inline __m512i lane_pairs(Vec even, Vec odd) {
  return _mm512_or_si512(round_bf16(even), _mm512_slli_epi32(round_bf16(odd), 16));
}

}  // namespace

void tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  pack16_rows(w, ldw, num_rows, K, out, [](__m512 lo, __m512 hi) { return pairs(lo, hi); });
}

void tile_pack16_w4(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K, int64_t r0,
                    int64_t num_rows, uint16_t* out) {
  pack16_w4_rows(codes, scales, mins, group_size, K, r0, num_rows, out,
                 [](__m512 e, __m512 o) { return lane_pairs(e, o); });
}

void tile_pack16_w4il(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size, int64_t K,
                      int64_t t, uint16_t* out) {
  pack16_w4il_strip(codes, scales, mins, group_size, K, t, out, [](__m512 e, __m512 o) { return lane_pairs(e, o); });
}

void tile_pack16_i8(const int8_t* q, int64_t K, int64_t r0, int64_t num_rows, uint16_t* out) {
  pack16_rows(q + r0 * K, K, num_rows, K, out, [](__m512 lo, __m512 hi) { return pairs(lo, hi); });
}

}  // namespace lmrt::cpu::avx512
