// The weight-strip packers of the tile products on AMX hosts: the loops of simd_avx512.h with
// AVX512-BF16's VCVTNE2PS2BF16 rounding 32 weights in one instruction (every AMX CPU has it; this
// file runs only where amx_available() holds). Contracts in isa_kernels.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::amx {

namespace {

inline __m512i pairs(__m512 lo, __m512 hi) { return (__m512i)_mm512_cvtne2ps_pbh(hi, lo); }

}  // namespace

void tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  avx512::pack16_rows(w, ldw, num_rows, K, out, pairs);
}

void tile_pack16_w4(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                    int64_t r0, int64_t num_rows, uint16_t* out) {
  avx512::pack16_w4_rows(codes, scales, mins, group_size, K, r0, num_rows, out, pairs);
}

}  // namespace lmrt::cpu::amx
