// Raw per-ISA kernels behind the dispatching ops in ops.h.
//
// note: the *_avx2.cpp / *_avx512.cpp files that define these are compiled with
// wider -m flags. They must not instantiate STL templates or shared inline
// functions: the linker keeps one copy of each such entity, and if it picked an
// AVX2-compiled copy the scalar path would fault on older CPUs. So this header is
// plain declarations over raw pointers and PODs, and everything ISA-specific
// lives in its own namespace (scalar / avx2 / avx512). The SIMD algorithms are
// written once, in *_simd.inl against the vector API of simd_avx2.h / simd_avx512.h,
// and each ISA file includes them inside its own namespace, so every ISA compiles its
// own internal-linkage copy with its own flags.
#pragma once

#include <cstdint>

namespace lmrt::cpu {

// Element type codes as in DType and KVDType (ops.h): 0 = F32, 1 = BF16, 2 = I8, 3 = I4, 4 = I4Channel. An int so
// this header does not pull in ops.h (and <functional>) into ISA files.
enum : int { kF32 = 0, kBF16 = 1, kI8 = 2, kI4 = 3, kI4Channel = 4 };

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for m in [m0, m1), n in [n0, n1).
//   x    [M, K] fp32, row stride ldx
//   w    [N, K] (wdt), row stride K
//   bias [N] or nullptr
//   y    [M, N] row stride ldy
// note: each y element is reduced in vector lanes over K in ascending chunks
// followed by one fixed horizontal sum, whatever tile shape computes it, so the
// result of an element does not depend on m0/m1/n0/n1 (batch invariance).
using LinearTileSig = void(const float* x, int64_t ldx, int64_t K, const void* w, int wdt, const float* bias, float* y,
                           int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1);
using LinearTileFn = LinearTileSig*;

// One (query token, query head) of paged attention.
struct AttnTask {
  const float* q;            // [n_q, head_dim]: n_q consecutive query heads of one token that share kv_head
  float* out;                // [n_q, head_dim]
  const void* k;             // layer K cache, layout as KVLayer in ops.h
  const void* v;             // layer V cache
  const uint16_t* k_scales;  // I8 / I4 K: per row, fp16 bits; I4Channel: per block, kv head and channel
  const uint8_t* k_zeros;    // the same shape as k_scales
  const uint16_t* v_scales;  // I8 / I4 V
  const uint8_t* v_zeros;
  const uint8_t* k_stage;          // I4Channel K: staged I8 rows, and their scales and zeros (KVLayer)
  const uint16_t* k_stage_scales;  //
  const uint8_t* k_stage_zeros;    //
  const int32_t* stage_of_block;   // [num_blocks]
  const int32_t* block_table;      // [pos / block_size + 1]
  float* scratch;  // [kAttnMaxGroup * (block_size + 2 * head_dim)]: per head, block scores, accumulator, q * scales
  int k_dtype;     // kF32, kBF16, kI8, kI4, kI4Channel
  int v_dtype;
  int n_kv_heads;
  int head_dim;
  int block_size;
  int kv_head;
  int pos;  // attends to cache positions 0..pos
  float scale;
  int n_q = 1;  // query heads in the task (each head's result is the same bits whichever n_q it ran in)
  // I8 K on the VNNI path only (avx512vnni::attention_one; paged_attention's int8_q): each head's q quantized to int8
  // (one scale a head: max|q| / 127, q * (1 / scale) rounded half even) and the scores' dots taken in int32 by
  // vpdpbusd. A score's bits still depend on nothing but its own q and key.
  bool int8_q = false;
  // The next task on this thread (next_table nullptr: none), whose K and V rows, scales and zero points every path
  // fetches into L2 a share at each block, a whole task ahead of their use (attention_simd.inl,
  // prefetch_positions), and the int8_q path its first key rows into L1 during this task's last P V: with many
  // decode rows a step's cache does not stay in the CPU's caches from one layer's visit to the next, and a
  // sequence's first block was otherwise read cold.
  const int32_t* next_table = nullptr;  // its block table
  int next_pos = 0;                     // it attends to positions 0..next_pos
  int next_kv_head = 0;
};
// The most query heads a kernel handles at once (its scratch holds as many).
constexpr int kAttnMaxGroup = 4;
using AttnSig = void(const AttnTask& t);
using AttnFn = AttnSig*;

// Quantised linear (linear_w4.cpp, linear_i8.cpp). Both dequantise W to fp32 and then
// reduce exactly like LinearTileFn, so every output element has one reduction order.
//
// Writes w[n, k] for n in [n0, n1) as fp32 into out[(n - n0) * K + k]:
//   4-bit: w = fma(float(code), scale, min) (one rounding), codes/scales/mins laid out as
//   W4Matrix in ops.h; K a multiple of group_size (32, 64 or 128).
using W4DequantSig = void(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                          int64_t n0, int64_t n1, float* out);
using W4DequantFn = W4DequantSig*;
// The same outputs as w4 dequant + LinearTileFn over the dequantised rows, bit for bit,
// but dequantising in registers (decode: few rows of x, W streamed once).
using W4TileSig = void(const float* x, int64_t ldx, int64_t K, const uint8_t* codes, const float* scales,
                       const float* mins, int group_size, const float* bias, float* y, int64_t ldy, int64_t m0,
                       int64_t m1, int64_t n0, int64_t n1);
using W4TileFn = W4TileSig*;
//   int8: out = float(q) (exact); the per-row scale is applied by the caller afterwards.
using I8DequantSig = void(const int8_t* q, int64_t K, int64_t n0, int64_t n1, float* out);
using I8DequantFn = I8DequantSig*;
// Raw dots y[m, n] = sum_k x[m, k] * float(q[n, k]), bit-identical to i8 dequant +
// LinearTileFn with bias = nullptr.
using I8TileSig = void(const float* x, int64_t ldx, int64_t K, const int8_t* q, float* y, int64_t ldy, int64_t m0,
                       int64_t m1, int64_t n0, int64_t n1);
using I8TileFn = I8TileSig*;

// 4-bit weights x int8 activations (linear_w4a8.cpp). The activations, quantized per run of 32 inputs
// (a block b: d_b = max|x| / 127, q = round_half_even(x * (1 / d_b)) in fp32, all 0 when d_b = 0):
struct Q8Rows {
  const int8_t* q;  // [M, ldq]: each row in chunks of 4 blocks (128 inputs; the last chunk of a row may hold
                    // fewer, nb): a chunk holds inputs 0..15 of each of its blocks (nb * 16 bytes), then inputs
                    // 16..31 of each, so a load of W's codes split into low and high nibbles meets its inputs in
                    // the same byte positions
  int64_t ldq;
  const float* d;   // [M, K / 32]: d_b
  const float* xs;  // [M, K / group_size]: sum over the group's blocks, in order, of d_b * float(sum_k q)
  // For the AMX tiles only (else nullptr): q in input order, and d, xs and qn padded with rows of zeros to a
  // multiple of 16 rows (Mp), so a tile of 16 rows never reads past them.
  const int8_t* qn = nullptr;  // [Mp, K]
  // For the int8 matrix's VNNI kernel only (else nullptr): q + 128 as unsigned bytes, in q's layout, so that its
  // 4-byte broadcasts (vpdpbusd's unsigned operand) are loads from here.
  const uint8_t* qu = nullptr;  // [M, ldq]
};
// Rows [m0, m1) of x [.., K] (row stride ldx) into Q8Rows' layout (q, d, xs at row m of each).
using Q8QuantizeSig = void(const float* x, int64_t ldx, int64_t K, int group_size, int64_t m0, int64_t m1, int8_t* q,
                           int64_t ldq, float* d, float* xs);
using Q8QuantizeFn = Q8QuantizeSig*;
// y[m, n] for m in [m0, m1), n in [n0, n1): sum_b float(sum_{k in b} code * q) * (d_b * scale[n, g(b)]), then
// + sum_g min[n, g] * xs[m, g], + bias[n]; the fp32 sums in an order fixed per ISA (not by m0/m1/n0/n1).
using W4A8TileSig = void(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
                         int group_size, const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0,
                         int64_t n1);
using W4A8TileFn = W4A8TileSig*;
// The same sums over interleaved weights (codes, and scales and mins as IEEE half bits, in W4Interleaved's layout,
// ops.h; linear_w4a8_il's order): rows [m0, m1) of x against strips [t0, t1) of 16 outputs, into y[m, 16 t + n].
// up > 0: gate/up pairs (linear_w4a8_il_silu): strip t holds gates and strip t + up their ups, both summed as above
// (bias nullptr), and y[m, 16 t + n] = silu(gate) * up by the ISA's silu_mul_row.
using W4A8IlTileSig = void(const Q8Rows& x, int64_t K, const uint8_t* codes, const uint16_t* scales,
                           const uint16_t* mins, int group_size, const float* bias, float* y, int64_t ldy, int64_t m0,
                           int64_t m1, int64_t t0, int64_t t1, int64_t up);
using W4A8IlTileFn = W4A8IlTileSig*;
// linear_i8a8_il's sums (q, offsets in I8Interleaved's layout, ops.h): rows [m0, m1) of x against strips [t0, t1).
using I8A8IlTileSig = void(const Q8Rows& x, int64_t K, const int8_t* q, const int32_t* offsets, const float* scales,
                           const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1);
using I8A8IlTileFn = I8A8IlTileSig*;
// linear_i8a8_il's activations as I8Activations::Int16Rows (ops.h): row m's codes c = round_half_even(x * (1 / a_m)),
// a_m = max|x| / 32767 (0, and codes 0, for a zero row), split c = 256 * hi + lo (hi = c >> 8 signed, lo = c & 255);
// the rows in input order, padded with rows of zeros to a multiple of 16 (the AMX tiles).
// hi is stored + 128 as an unsigned byte, so every path multiplies unsigned activations by signed weights and takes
// I8Interleaved's offsets (128 * each run's sum of q) back out of the high bytes' dots.
struct A16Rows {
  const uint8_t* hi;   // [Mp, K] (c >> 8) + 128
  const uint8_t* lo;   // [Mp, K] c & 255
  const float* alpha;  // [Mp] a_m
};
// Rows [m0, m1) of x [.., K] (row stride ldx) into A16Rows' arrays (row m at hi + m * K, lo + m * K, alpha[m]).
using A16QuantizeSig = void(const float* x, int64_t ldx, int64_t K, int64_t m0, int64_t m1, uint8_t* hi, uint8_t* lo,
                            float* alpha);
using A16QuantizeFn = A16QuantizeSig*;
// linear_i8a8_il's sums with Int16Rows activations: rows [m0, m1) of x against strips [t0, t1) (q, scales as
// I8A8IlTileSig's; sums [N]: I8Interleaved::sums).
using I8A16IlTileSig = void(const A16Rows& x, int64_t K, const int8_t* q, const int32_t* sums, const float* scales,
                            const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t t0, int64_t t1);
using I8A16IlTileFn = I8A16IlTileSig*;

// out[i] = silu(g[i]) * u[i] = g[i] / (1 + exp(-g[i])) * u[i] for i < n (elementwise, so any
// split of the rows gives the same bits).
using SiluMulSig = void(const float* g, const float* u, int64_t n, float* out);
using SiluMulFn = SiluMulSig*;

// out[m, n] = bf16(silu(c[m, n]) * c[m, 16 + n]) for m < 32, n < 16: a 32 x 32 block of the
//   gate/up product whose first 16 columns are gates and last 16 the matching ups.
//   c [32, 32] fp32 row stride ldc; out [32, 16] bf16 row stride ldo
using SiluMulPairsSig = void(const float* c, int64_t ldc, uint16_t* out, int64_t ldo);
using SiluMulPairsFn = SiluMulPairsSig*;

// The bf16 tile paths (linear_bf16.cpp, attention_tiles.cpp). Not batch invariant: opt-in precision.
//
// One 32 x 32 block of C on bf16 tiles (amx::bf16_block, avx512bf16::bf16_block, or
// scalar::bf16_tile_block, the software model of AMX's instruction: the same layout and pair order):
//   c    [32, 32] fp32, row stride ldc = init + a b
//   a    [32, steps * 32] bf16, row stride lda (elements)
//   b0, b1  two packed 16-output blocks ([steps, 16, 32] bf16 each, tile_pack16's layout):
//        c[:, 0:16] from b0, c[:, 16:32] from b1
//   init [32, 32] fp32, row stride ldi, that c starts from (ldi 0: one row for every row of c, a
//        bias; init may be c itself, to accumulate), or nullptr for zeros
//   rows the rows of c that are needed (1..32): a unit computes at least these (AVX512-BF16: rounded up to 8,
//        so a decode batch of 16 costs half a block; AMX and the model: all 32); the other rows of c and of a
//        are then neither read nor written, or computed from the rows of a as usual
using TileBlockSig = void(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps,
                          const float* init, int64_t ldi, float* c, int64_t ldc, int rows);
using TileBlockFn = TileBlockSig*;
// Packs rows [0, num_rows) of fp32 weights w (row stride ldw, K inputs; num_rows <= 16, the rest
// zeros) into 16-output tiles of the tile unit's B layout, zero past K:
//   out[(s * 16 + p) * 32 + 2 * n + j] = bf16(w[n, s * 32 + 2 * p + j]) for s < ceil(K / 32)
using TilePack16Sig = void(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out);
using TilePack16Fn = TilePack16Sig*;
// The same for rows [r0, r0 + num_rows) of a 4-bit matrix (layout as W4Matrix in ops.h), each weight
// formed as w4_dequant forms it (one fma in fp32) and then rounded: bit for bit w4_dequant, then
// tile_pack16.
using TilePack16W4Sig = void(const uint8_t* codes, const float* scales, const float* mins, int group_size, int64_t K,
                             int64_t r0, int64_t num_rows, uint16_t* out);
using TilePack16W4Fn = TilePack16W4Sig*;
// The same for strip t (16 outputs) of interleaved 4-bit weights (W4Interleaved, ops.h: scales and mins as halves),
// each weight fma(float(code), scale, min) in fp32 and then rounded: bit for bit w4il_dequant, then tile_pack16.
using TilePack16W4IlSig = void(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size,
                               int64_t K, int64_t t, uint16_t* out);
using TilePack16W4IlFn = TilePack16W4IlSig*;
// The same for rows [r0, r0 + num_rows) of an int8 matrix q [N, K] (I8Matrix's codes; the row scales are applied
// to the product): float(q), exact in bf16, so bit for bit i8_dequant, then tile_pack16.
using TilePack16I8Sig = void(const int8_t* q, int64_t K, int64_t r0, int64_t num_rows, uint16_t* out);
using TilePack16I8Fn = TilePack16I8Sig*;
// rmsnorm (ops.h) of rows [0, M): y = w * (x * rs), rs = 1 / sqrt(ss / H + eps), ss each row's sum of squares in 16
// lanes (lane l: the squares of elements l, l + 16, ..., each product rounded, then added) summed as a tree
// ((l, l + 8), then (l, l + 4), (l, l + 2), (0, 1)): every ISA's bits. _bf16: y rounded to bf16 (to_bf16's bits).
using RmsnormSig = void(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y,
                        int64_t ldy);
using RmsnormBf16Sig = void(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, uint16_t* y,
                            int64_t ldy);
// out[i] = bf16(x[i]) for i < n, rounded to nearest even (a NaN stays a NaN).
using ToBf16Sig = void(const float* x, int64_t n, uint16_t* out);
using ToBf16Fn = ToBf16Sig*;
// One kKeyChunk-wide chunk of flash attention's online softmax, for R query rows, in base 2: t = s * scale * log2(e)
// and p = 2^(t - m) = e^(scale * s - m ln 2).
//   s        [R, 64] fp32 raw scores q.k; in row r the keys at and after n_valid[r] are masked
//   m        [R] the row's offset: -inf before its first chunk, then that chunk's max t; raised to a later chunk's
//            max t only when that passes m + kSoftmaxSlack (so p < 2^kSoftmaxSlack, and the accumulator is rescaled
//            rarely: the offset cancels in o / l, any value near the max serves); updated
//   l        [R, 16] running denominator as 16 partial sums (their total is the denominator; which key goes to
//            which is the ISA's: lane j % 16 here); updated
//   p        [R, 64] bf16 out: 2^(t - m_new), 0 where masked
//   corr     [R] out: 2^(m_old - m_new), the factor the row's accumulator (and l) takes: 1 when m stays
// l sums p as rounded to bf16 (the values the P V product sees). A row with n_valid 0 keeps m and l and gets
// corr 1. p before its rounding: std::exp2 (scalar), or within 7.5e-5 relative (AVX-512's exp2_bf16_ps, for
// finite scores; 2^-13.7 against bf16's 2^-9 step).
constexpr float kSoftmaxSlack = 16.0f;
constexpr int kSoftmaxLanes = 16;
constexpr int kKeyChunk = 64;
using SoftmaxChunkSig = void(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l,
                             uint16_t* p, float* corr);
using SoftmaxChunkFn = SoftmaxChunkSig*;
// o[r, i] *= corr[r] for r < R, i < n, rows with corr 1 untouched; o [R, n], contiguous (before the P V tiles
// accumulate into it).
using AccScaleSig = void(float* o, const float* corr, int64_t R, int64_t n);
using AccScaleFn = AccScaleSig*;
// The two loops of quantizing a KV row on write (kv_quant.h's kv_quantize_row does the rest): the row's range
// widened to include 0 (mn <= 0 <= mx), false if it holds a NaN or an infinity; then its codes under (s, zero),
// kv_code_of's for each dim, dt kI8 (hd bytes) or kI4 (packed as kv_pack_i4). The same results on every path.
using KVRowRangeSig = bool(const float* x, int hd, float* mn, float* mx);
using KVRowRangeFn = KVRowRangeSig*;
using KVRowCodesSig = void(const float* x, int hd, float s, uint8_t zero, int dt, uint8_t* codes);
using KVRowCodesFn = KVRowCodesSig*;

// rope_apply (ops.h): each product rounded, then one add or subtract (torch's q * cos + rotate_half(q) * sin), so
// every ISA gives the same bits.
using RopeApplySig = void(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const float* cs);

// fwht.h's fwht_block on n_blocks consecutive blocks of B floats (B a power of two >= 16), in place: the same bits.
using FwhtBlocksSig = void(float* x, int64_t n_blocks, int B, float norm);

// The entry points each ISA defines (same signatures as the pointer types above).
namespace scalar {
RmsnormSig rmsnorm;
RopeApplySig rope_apply;
LinearTileSig linear_tile;
AttnSig attention_one;
W4DequantSig w4_dequant;
I8DequantSig i8_dequant;
SiluMulSig silu_mul_row;
SiluMulPairsSig silu_mul_pairs;
TileBlockSig bf16_tile_block;
TilePack16Sig tile_pack16;
TilePack16W4Sig tile_pack16_w4;
// Strip t (16 outputs) of interleaved 4-bit weights dequantized into out [16, K] fp32: out[n, k] =
// fma(float(code), scale, min), scale and min the halves widened (exact), as w4_dequant forms a weight.
void w4il_dequant(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size, int64_t K,
                  int64_t t, float* out);
ToBf16Sig to_bf16;
SoftmaxChunkSig softmax_chunk;
AccScaleSig acc_scale;
Q8QuantizeSig q8_quantize;
W4A8TileSig w4a8_tile;
W4A8IlTileSig w4a8_il_tile;
I8A8IlTileSig i8a8_il_tile;
A16QuantizeSig a16_quantize;
I8A16IlTileSig i8a16_il_tile;
}  // namespace scalar

#ifdef LMRT_X86
namespace avx2 {
LinearTileSig linear_tile;
AttnSig attention_one;
W4DequantSig w4_dequant;
I8DequantSig i8_dequant;
W4TileSig w4_tile;
I8TileSig i8_tile;
Q8QuantizeSig q8_quantize;
W4A8TileSig w4a8_tile;
}  // namespace avx2

namespace avx512 {
RmsnormSig rmsnorm;  // norm_avx512.cpp
RmsnormBf16Sig rmsnorm_bf16;
RopeApplySig rope_apply;  // rope_avx512.cpp
LinearTileSig linear_tile;
AttnSig attention_one;
W4DequantSig w4_dequant;
I8DequantSig i8_dequant;
W4TileSig w4_tile;
I8TileSig i8_tile;
SiluMulSig silu_mul_row;
SiluMulPairsSig silu_mul_pairs;
TilePack16Sig tile_pack16;
TilePack16W4Sig tile_pack16_w4;
TilePack16W4IlSig tile_pack16_w4il;
TilePack16I8Sig tile_pack16_i8;
ToBf16Sig to_bf16;
SoftmaxChunkSig softmax_chunk;
AccScaleSig acc_scale;
Q8QuantizeSig q8_quantize;
A16QuantizeSig a16_quantize;  // the same bits as scalar::a16_quantize
KVRowRangeSig kv_row_range;   // kv_store_avx512.cpp
KVRowCodesSig kv_row_codes;
FwhtBlocksSig fwht_blocks;   // hadamard_avx512.cpp
W4A8TileSig w4a8_tile;       // int8 dots by maddubs (AVX-512 BW)
W4A8IlTileSig w4a8_il_tile;  // the same bits as scalar::w4a8_il_tile
}  // namespace avx512

#ifdef LMRT_HAVE_AVX512VNNI
// w4a8_tile with VNNI's vpdpbusd (linear_w4a8_avx512vnni.cpp; runs only where vnni_available()).
namespace avx512vnni {
AttnSig attention_one;  // attention_avx512vnni.cpp: avx512's, with int8_q honoured
W4A8TileSig w4a8_tile;
W4A8IlTileSig w4a8_il_tile;    // the same bits as scalar::w4a8_il_tile
I8A8IlTileSig i8a8_il_tile;    // the same bits as scalar::i8a8_il_tile; reads x.qu (quantize_rows makes it)
I8A16IlTileSig i8a16_il_tile;  // the same bits as scalar::i8a16_il_tile
}  // namespace avx512vnni
#endif

#ifdef LMRT_HAVE_AVX512BF16
// The tile unit on AVX512-BF16's VDPBF16PS, and the strip packers with its rounding instruction
// (linear_bf16_avx512bf16.cpp; every AMX CPU has AVX512-BF16 too). The packers give the same bits as
// avx512::tile_pack16 / tile_pack16_w4 except that a denormal weight becomes 0 (which both tile units
// do to it anyway).
namespace avx512bf16 {
TileBlockSig bf16_block;
TilePack16Sig tile_pack16;
TilePack16W4Sig tile_pack16_w4;
TilePack16W4IlSig tile_pack16_w4il;
TilePack16I8Sig tile_pack16_i8;
SiluMulPairsSig silu_mul_pairs;
ToBf16Sig to_bf16;              // VCVTNEPS2BF16: avx512::to_bf16's bits, but a denormal becomes a zero of its sign
SoftmaxChunkSig softmax_chunk;  // attention_tiles_avx512bf16.cpp: l's 16 sums spread keys as VDPBF16PS pairs them
}  // namespace avx512bf16
#endif

#ifdef LMRT_HAVE_AMX
// AMX tiles (linear_bf16_amx.cpp).
namespace amx {
// Loads this thread's tile configuration: tmm0-3 C (16 x 16 fp32), tmm4-5 A, tmm6-7 B (16 x 64 bytes).
void configure_tiles();
void release_tiles();
TileBlockSig bf16_block;
// The int8 products over interleaved weights on AMX-INT8 (linear_w4a8_amx.cpp): the same bits as the scalar tiles.
// Rows from m0, a multiple of 16; x.qn set (Q8Rows).
W4A8IlTileSig w4a8_il_tile;
I8A8IlTileSig i8a8_il_tile;
I8A16IlTileSig i8a16_il_tile;  // K a multiple of 64; rows from m0, a multiple of 16
}  // namespace amx
#endif
#endif

}  // namespace lmrt::cpu
