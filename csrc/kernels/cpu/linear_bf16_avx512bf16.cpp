// The tile unit on AVX512-BF16 (compiled with -mavx512bf16; runs only where avx512bf16_available()
// holds): VDPBF16PS does, per fp32 lane, what TDPBF16PS does per C element, so the same packed strips
// (tile_pack16's B layout: 16 pairs of 16 outputs per 32-wide K step) feed it unchanged. This is the
// bf16 prefill on CPUs with AVX512-BF16 but no AMX (AMD Zen 4 and later, Intel Cooper Lake). Also the
// strip packers with VCVTNE2PS2BF16 (32 weights rounded in one instruction), used on AMX hosts too.
// Contracts in isa_kernels.h.
#include <cstring>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512bf16 {

namespace {

inline __m512i pairs(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

// Lane n: bf16(even[n]) in its low half, bf16(odd[n]) in its high half: the 32 rounded words interleaved.
inline __m512i lane_pairs(__m512 even, __m512 odd) {
  const __m512i idx = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21,
                                       5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(odd, even));
}

constexpr int kRows = 8;  // rows of C per register block: 8 rows x 32 columns = 16 zmm accumulators

// Rows [r0, r0 + kRows) of the 32 x 32 block: for each K pair p, lane n of acc[r][h] takes
// a[r, 2p] * b_h[p, 2n] + a[r, 2p + 1] * b_h[p, 2n + 1] (one VDPBF16PS with a's pair broadcast).
inline void rows_block(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps,
                       const float* init, int64_t ldi, float* c, int64_t ldc) {
  __m512 acc[kRows][2];
  for (int r = 0; r < kRows; ++r)
    for (int h = 0; h < 2; ++h) acc[r][h] = init ? _mm512_loadu_ps(init + r * ldi + 16 * h) : _mm512_setzero_ps();
  for (int64_t s = 0; s < steps; ++s) {
    const uint16_t* as = a + s * 32;
    const uint16_t* w0 = b0 + s * 16 * 32;
    const uint16_t* w1 = b1 + s * 16 * 32;
    for (int p = 0; p < 16; ++p) {
      const __m512bh v0 = (__m512bh)_mm512_loadu_si512(w0 + p * 32);
      const __m512bh v1 = (__m512bh)_mm512_loadu_si512(w1 + p * 32);
      for (int r = 0; r < kRows; ++r) {
        int32_t pair;  // a[r, 2p], a[r, 2p + 1] as one 32-bit word
        std::memcpy(&pair, as + r * lda + 2 * p, sizeof pair);
        const __m512bh x = (__m512bh)_mm512_set1_epi32(pair);
        acc[r][0] = _mm512_dpbf16_ps(acc[r][0], x, v0);
        acc[r][1] = _mm512_dpbf16_ps(acc[r][1], x, v1);
      }
    }
  }
  for (int r = 0; r < kRows; ++r)
    for (int h = 0; h < 2; ++h) _mm512_storeu_ps(c + r * ldc + 16 * h, acc[r][h]);
}

}  // namespace

// avx512::silu_mul_pairs with VCVTNEPS2BF16 rounding the 16 results (a denormal result becomes 0, as the next
// product's tiles take it).
void silu_mul_pairs(const float* c, int64_t ldc, uint16_t* out, int64_t ldo) {
  for (int64_t m = 0; m < 32; ++m) {
    const __m512 v = avx512::silu_mul_bf16_ps(_mm512_loadu_ps(c + m * ldc), _mm512_loadu_ps(c + m * ldc + 16));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * ldo), reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v)));
  }
}

void to_bf16(const float* x, int64_t n, uint16_t* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                        reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i))));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, m,
                             reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, x + i))));
  }
}

void bf16_block(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps,
                const float* init, int64_t ldi, float* c, int64_t ldc, int rows) {
  for (int r0 = 0; r0 < rows; r0 += kRows)
    rows_block(a + r0 * lda, lda, b0, b1, steps, init ? init + r0 * ldi : nullptr, ldi, c + r0 * ldc, ldc);
}

void tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  avx512::pack16_rows(w, ldw, num_rows, K, out, [](__m512 lo, __m512 hi) { return pairs(lo, hi); });
}

void tile_pack16_w4(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K, int64_t r0,
                    int64_t num_rows, uint16_t* out) {
  avx512::pack16_w4_rows(codes, scales, mins, group_size, K, r0, num_rows, out,
                         [](__m512 e, __m512 o) { return lane_pairs(e, o); });
}

void tile_pack16_w4il(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size, int64_t K,
                      int64_t t, uint16_t* out) {
  avx512::pack16_w4il_strip(codes, scales, mins, group_size, K, t, out,
                            [](__m512 e, __m512 o) { return lane_pairs(e, o); });
}

void tile_pack16_i8(const int8_t* q, int64_t K, int64_t r0, int64_t num_rows, uint16_t* out) {
  avx512::pack16_rows(q + r0 * K, K, num_rows, K, out, [](__m512 lo, __m512 hi) { return pairs(lo, hi); });
}

}  // namespace lmrt::cpu::avx512bf16
