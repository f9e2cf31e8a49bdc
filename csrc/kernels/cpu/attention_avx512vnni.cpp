// AVX-512 VNNI paged attention: attention_simd.inl at AVX-512's lane width, as attention_avx512.cpp, plus the scores
// of I8 K against int8 q (AttnTask::int8_q) by vpdpbusd: 16 key rows transposed into 16 vectors of 4 dims x 16
// keys, then one vpdpbusd per 4 dims and head; and over I8 V, P V by vpdpwssd on int16 weights (pv_int16). Compiled
// with -mavx512vnni; runs only where vnni_available().
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512vnni {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API (in avx512's unnamed namespace)

#define LMRT_ATTN_VNNI 1
#include "kernels/cpu/attention_simd.inl"
#undef LMRT_ATTN_VNNI

void attention_one(const AttnTask& t) { attend(t); }

}  // namespace lmrt::cpu::avx512vnni
