// AVX2 + FMA paged attention: attention_simd.inl at the lane width of simd_avx2.h.
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx2.h"

namespace lmrt::cpu::avx2 {

#include "kernels/cpu/attention_simd.inl"

void attention_one(const AttnTask& t) { attend(t); }

}  // namespace lmrt::cpu::avx2
