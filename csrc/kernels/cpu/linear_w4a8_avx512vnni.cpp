// AVX-512 VNNI products with int8 activations: the 4-bit ones (linear_w4a8_simd.inl and linear_w4a8_il_avx512.inl
// at 16 lanes with vpdpbusd, 4 byte products summed into each int32 lane in one instruction) and the interleaved
// int8 matrix's (i8_kernel, VNNI only). Compiled with -mavx512vnni; runs only where vnni_available(). Its
// quantizer is avx512::q8_quantize.
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/simd_avx512.h"

namespace lmrt::cpu::avx512vnni {
namespace {

using namespace lmrt::cpu::avx512;  // simd_avx512.h's vector API (in avx512's unnamed namespace)

#include "kernels/cpu/linear_w4a8_avx512.inl"

inline BVec dot4(BVec acc, BVec u, BVec s) { return _mm512_dpbusd_epi32(acc, u, s); }
// dot4 against the 4 signed bytes at p, broadcast to every lane by vpdpbusd's memory operand ({1to16}) rather than
// by a vpbroadcastd of their own (gcc keeps the intrinsics' broadcast in a register, shared by the kernel's
// columns): the interleaved 4-bit kernel at 16 rows 145 -> 149-151 GMAC/s (1 thread, 576 x 3,072 and 1,536 x 576),
// at 512 rows within the noise to +3%.
inline BVec dot4_at(BVec acc, BVec u, const int8_t* p) {
  using Word = int32_t __attribute__((may_alias));
  __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(u), "m"(*reinterpret_cast<const Word*>(p)));
  return acc;
}

// R rows of x (from row m) against C strips of 16 outputs of the interleaved int8 matrix (from strip t): each
// 64-byte vector of weights (16 outputs x 4 inputs) is the signed operand of one vpdpbusd per row, the row's 4
// activations + 128 (Q8Rows::qu, broadcast from memory) the unsigned one; the offsets take the +128 back out, per run,
// in int32 (exact). The matrix is streamed from memory (the output matrix: 28 MB a step for the default model), and
// i8_strips runs a strip's rows 4 at a time, so each call also fetches lines first_line, first_line + line_step, ...
// of every run of the C strips after its own (past the matrix's end too: a prefetch never faults); a strip's calls
// fetch the next strips while they compute. Measured on the Zen 4 host (32 rows x 576 x 49,152, 2 threads): 3.9-4.5 ms
// before (the activations staged through the stack, no fetch ahead), 3.1-3.6 ms with both changes. Where one call
// covers the strips (4 rows or fewer) its lines go into L2 only (prefetch_l2): 1 row, the matrix not in cache,
// 15.6-17.0 -> 21.2-22.2 GB/s on 1 thread, 28.5-29.9 -> 31.6-40.1 on 2.
template <int R, int C>
inline void i8_kernel(const Q8Rows& x, int64_t m, int64_t K, const int8_t* q, const int32_t* offsets,
                      const float* scales, const float* bias, float* y, int64_t ldy, int64_t t, int first_line,
                      int line_step) {
  // Pointers advanced a run at a time: with the indices written out gcc kept ~17 integers live and spilled some to
  // the stack and to vector registers inside the loop (32 rows x 576 x 3,072 in cache, 1 thread: 164 -> 169
  // GMAC/s).
  const int64_t nblocks = K / 32, ldq = x.ldq, strip = K * 16;  // strip: bytes from one strip's weights to the next
  const int8_t* w = q + t * strip;                              // strip t + c's run b: w + c * strip, at run b
  const int8_t* ahead = w + C * strip;                          // the strips after these C, at run b
  const int32_t* off = offsets + t * nblocks * 16;              // strip t + c's run b: off + c * nblocks * 16
  const uint8_t* xr = x.qu + m * ldq;
  const float* d = x.d + m * nblocks;  // row m + r's run b: d[r * nblocks], at run b
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  for (int64_t b = 0; b < nblocks; ++b, w += 512, ahead += 512, off += 16, ++d) {
    const int64_t c0 = b & ~int64_t{3}, nbc = nblocks - c0 < 4 ? nblocks - c0 : 4;
    const uint8_t* lo = xr + c0 * 32 + (b - c0) * 16;  // Q8Rows' layout: the run's inputs 0..15, then 16..31 at hi
    const uint8_t* hi = lo + nbc * 16;
    for (int l = first_line; l < 8; l += line_step)
      for (int c = 0; c < C; ++c) {
        if (line_step == 1)  // one call over these strips (4 rows or fewer): they are read once, into L2
          prefetch_l2(ahead + c * strip + l * 64);
        else
          prefetch(ahead + c * strip + l * 64);
      }
    BVec dot[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) dot[r][c] = zero_b();
    for (int v = 0; v < 8; ++v) {
      BVec wv[C];
      for (int c = 0; c < C; ++c) wv[c] = _mm512_loadu_si512(w + c * strip + v * 64);
      const uint8_t* a = v < 4 ? lo + 4 * v : hi + 4 * (v - 4);  // inputs 4v..4v+3 of the run (+ 128)
      for (int r = 0; r < R; ++r) {
        int32_t ar;
        std::memcpy(&ar, a + r * ldq, sizeof ar);
        const BVec av = _mm512_set1_epi32(ar);
        for (int c = 0; c < C; ++c) dot[r][c] = _mm512_dpbusd_epi32(dot[r][c], av, wv[c]);
      }
    }
    for (int c = 0; c < C; ++c) {
      const BVec offv = _mm512_loadu_si512(off + c * nblocks * 16);
      for (int r = 0; r < R; ++r)
        acc[r][c] = fmadd(_mm512_cvtepi32_ps(_mm512_sub_epi32(dot[r][c], offv)), set1(d[r * nblocks]), acc[r][c]);
    }
  }
  for (int c = 0; c < C; ++c) {
    const Vec sv = load(scales + (t + c) * 16);
    for (int r = 0; r < R; ++r) {
      Vec v = mul(acc[r][c], sv);
      __asm__("" : "+v"(v));  // v rounded before the bias: gcc contracted mul + add into an fma in i8_kernel<R, 2>
      store(y + (m + r) * ldy + (t + c) * 16, bias ? add(v, load(bias + (t + c) * 16)) : v);
    }
  }
}

template <int C>
inline void i8_strips(const Q8Rows& x, int64_t K, const int8_t* q, const int32_t* offsets, const float* scales,
                      const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t) {
  const int calls = static_cast<int>((m1 - m0 + 3) / 4);  // call i fetches lines i, i + calls, ... of each run
  int64_t m = m0;
  int i = 0;
  for (; m + 4 <= m1; m += 4, ++i) i8_kernel<4, C>(x, m, K, q, offsets, scales, bias, y, ldy, t, i, calls);
  if (m1 - m == 3) i8_kernel<3, C>(x, m, K, q, offsets, scales, bias, y, ldy, t, i, calls);
  if (m1 - m == 2) i8_kernel<2, C>(x, m, K, q, offsets, scales, bias, y, ldy, t, i, calls);
  if (m1 - m == 1) i8_kernel<1, C>(x, m, K, q, offsets, scales, bias, y, ldy, t, i, calls);
}

// linear_i8a8_il with Int16Rows activations (A16Rows): R rows against C strips, two vpdpbusd per 64-byte weight
// vector and row (the high bytes, stored + 128, and the low bytes, each broadcast 4 at a time) summed over all of K
// in int32; the sums (128 * the output's sum of q) then come out of the high bytes' dots, exactly.
template <int R, int C>
inline void i16_kernel(const A16Rows& x, int64_t m, int64_t K, const int8_t* q, const int32_t* sums,
                       const float* scales, const float* bias, float* y, int64_t ldy, int64_t t) {
  const int64_t quads = K / 4;
  BVec h[R][C], l[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) h[r][c] = l[r][c] = zero_b();
  for (int64_t v = 0; v < quads; ++v) {
    BVec wv[C];
    for (int c = 0; c < C; ++c) wv[c] = _mm512_loadu_si512(q + ((t + c) * quads + v) * 64);
    for (int r = 0; r < R; ++r) {
      int32_t ah, al;
      std::memcpy(&ah, x.hi + (m + r) * K + 4 * v, sizeof ah);
      std::memcpy(&al, x.lo + (m + r) * K + 4 * v, sizeof al);
      const BVec hv = _mm512_set1_epi32(ah), lv = _mm512_set1_epi32(al);
      for (int c = 0; c < C; ++c) {
        h[r][c] = _mm512_dpbusd_epi32(h[r][c], hv, wv[c]);
        l[r][c] = _mm512_dpbusd_epi32(l[r][c], lv, wv[c]);
      }
    }
  }
  const Vec k256 = set1(256.0f);
  for (int c = 0; c < C; ++c) {
    const BVec off = _mm512_loadu_si512(sums + (t + c) * 16);
    const Vec sv = load(scales + (t + c) * 16);
    for (int r = 0; r < R; ++r) {
      Vec v = fmadd(k256, _mm512_cvtepi32_ps(_mm512_sub_epi32(h[r][c], off)), _mm512_cvtepi32_ps(l[r][c]));
      v = mul(v, set1(x.alpha[m + r]));
      __asm__("" : "+v"(v));  // each product rounded on its own, as the scalar path's
      v = mul(v, sv);
      __asm__("" : "+v"(v));
      store(y + (m + r) * ldy + (t + c) * 16, bias ? add(v, load(bias + (t + c) * 16)) : v);
    }
  }
}

template <int C>
inline void i16_strips(const A16Rows& x, int64_t K, const int8_t* q, const int32_t* sums, const float* scales,
                       const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t) {
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) i16_kernel<4, C>(x, m, K, q, sums, scales, bias, y, ldy, t);
  if (m1 - m == 3) i16_kernel<3, C>(x, m, K, q, sums, scales, bias, y, ldy, t);
  if (m1 - m == 2) i16_kernel<2, C>(x, m, K, q, sums, scales, bias, y, ldy, t);
  if (m1 - m == 1) i16_kernel<1, C>(x, m, K, q, sums, scales, bias, y, ldy, t);
}

}  // namespace

#include "kernels/cpu/linear_w4a8_simd.inl"
// (after linear_w4a8_simd.inl: it uses that file's helpers)
#include "kernels/cpu/linear_w4a8_il_avx512.inl"

void w4a8_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
               const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  tile<3, 4, 6, 8>(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, n0, n1);
}

void w4a8_il_tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales, const uint16_t* mins,
                  int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0,
                  int64_t t1, int64_t up) {
  il_tile(x, K, codes, scales, mins, group_size, bias, y, ldy, m0, m1, t0, t1, up);
}

void i8a8_il_tile(const Q8Rows& x, int64_t K, const int8_t* q, const int32_t* offsets, const float* scales,
                  const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  int64_t t = t0;
  for (; t + 2 <= t1; t += 2) i8_strips<2>(x, K, q, offsets, scales, bias, y, ldy, m0, m1, t);
  if (t < t1) i8_strips<1>(x, K, q, offsets, scales, bias, y, ldy, m0, m1, t);
}

void i8a16_il_tile(const A16Rows& x, int64_t K, const int8_t* q, const int32_t* sums, const float* scales,
                   const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1) {
  int64_t t = t0;
  for (; t + 2 <= t1; t += 2) i16_strips<2>(x, K, q, sums, scales, bias, y, ldy, m0, m1, t);
  if (t < t1) i16_strips<1>(x, K, q, sums, scales, bias, y, ldy, m0, m1, t);
}

}  // namespace lmrt::cpu::avx512vnni
