// The CPU op set, over the op types of kernels/ops.h. csrc/kernels/cuda/ops.h is to mirror these signatures.
//
// Every op has a scalar reference and, where it pays, AVX2 and AVX-512 paths;
// the path is chosen at run time (isa.h) and can be forced for testing.
//
// note: batch invariance. Each output element is reduced in an order that
// depends only on its own inputs, never on how many rows are in the batch or
// how the work is split across threads, so a request yields bit-identical
// results whether it runs alone or inside any batch (the engine's tests rely
// on this).
#pragma once

#include <cstdint>
#include <functional>

#include "common/buffer.h"
#include "kernels/cpu/isa.h"
#include "kernels/cpu/threadpool.h"
#include "kernels/ops.h"

namespace lmrt::cpu {

// The op types no backend owns (kernels/ops.h), by their old names here.
using lmrt::AttnSeq;
using lmrt::DType;
using lmrt::I8Interleaved;
using lmrt::I8Matrix;
using lmrt::kv_row_bytes;
using lmrt::KVDType;
using lmrt::KVLayer;
using lmrt::TileUnit;
using lmrt::W4Interleaved;
using lmrt::W4Matrix;

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n])
//   x    [M, K] fp32, row stride ldx
//   w    [N, K] (wdt), rows contiguous (row stride K)
//   bias [N] fp32 or nullptr
//   y    [M, N] fp32, row stride ldy; must not alias x
void linear(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N,
            const float* bias, float* y, int64_t ldy);

// y[m, :] = x[m, :] / sqrt(mean(x[m, :]^2) + eps) * w[:]
//   x [M, H] stride ldx, w [H], y [M, H] stride ldy (y == x allowed)
void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy);

// Rotary embedding, HF "rotate_half" layout (pairs are i and i + head_dim/2), in place.
//   x        [M, n_heads * head_dim] stride ldx
//   pos      [M] token positions
//   inv_freq [head_dim / 2] fp32
// angle = float(pos) * inv_freq[i] in fp32; cos and sin are multiplied by attn_scale.
void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
          float attn_scale);
// rope in two halves, so a forward pass computes the cos and sin of its tokens once for every layer (the same bits):
//   cs [M, head_dim]: cs[m, i] = cos(angle) * attn_scale, cs[m, half + i] = sin(angle) * attn_scale
void rope_factors(const int32_t* pos, int64_t M, const float* inv_freq, int head_dim, float attn_scale, float* cs);
void rope_apply(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const float* cs);

// The orthonormal Walsh-Hadamard rotation of each head, in place, in blocks of B = hadamard_block(head_dim) (the
// largest power of two dividing head_dim; the whole head for 64 or 128): x_b <- H_B x_b / sqrt(B), H in Sylvester
// order. Applied to q and k alike it leaves every q.k unchanged, and it spreads a few outlier channels of K over the
// block, so a per-token int8 scale loses less (the model applies it where K is stored as int8; see LlamaModel).
//   x [M, n_heads * head_dim] stride ldx
int hadamard_block(int head_dim);
void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim);

// out[m, i] = silu(gu[m, i]) * gu[m, I + i]   (gate in the first I columns, up in the next I)
//   gu [M, 2I] stride ldg, out [M, I] stride ldo
void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo);

// Writes the K and V rows of M tokens into the cache (rounded to bf16, or quantized, as the cache stores them;
// I4Channel K into its block's staging slot, which must be set: std::logic_error otherwise).
//   k, v        [M, n_kv_heads * head_dim] fp32, row strides ldk, ldv
//   slot        [M] absolute cache slot of each token: block_id * block_size + offset
//   [h0, h1)    the KV heads written (k and v still point at head 0 of each row); all by default
void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot, int h0 = 0, int h1 = -1);
// I4Channel K: quantizes full blocks from their staged rows, one (scale, zero) per channel and kv head
// (each channel's range widened to include 0, then as a row of I4; a non-finite value gives the channel a
// NaN scale). The staging slot stays set: attention still reads it for queries inside the block.
//   blocks      [num] ids of blocks whose every row has been written
void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num);

// Causal attention of one sequence's new tokens over its paged cache.
//   q           [M, n_heads * head_dim] stride ldq
//   out         [M, n_heads * head_dim] stride ldo
//   block_table [ceil((max(pos) + 1) / block_size)] block ids of the sequence
//   pos         [M] position of each query token; token m attends to cache positions 0..pos[m]
// The cache must already hold K/V for every position attended to (kv_store first). Quantized rows are
// dequantised in registers as they are read; no copy of a block in another precision is made.
// GQA: query head h reads kv head h / (n_heads / n_kv_heads).
// Softmax in fp32 with the running max subtracted; scale is usually 1/sqrt(head_dim).
// int8_q (the "int8" linear precision's attention): where int8_q_scores(kv) (I8 K, head_dim a multiple of 64 up to
// 256, AVX-512 active with VNNI), each head's q is quantized to int8 (one scale a head, max|q| / 127) and the
// scores' q . codes are integer dot products (vpdpbusd), as llama.cpp scores a Q8 K cache; with I8 V and a head_dim
// that is a multiple of 32, P V too: each value row's weight p_j * scale_j rounded to int16 on a step of 1/32767 of
// the largest |weight| of its run (up to 64 keys of a block), the sums of weight * code exact in int32 (vpdpwssd),
// so a weight moves by at most 2^-16 of its run's largest. Elsewhere it is ignored. Either way each output depends
// only on its own q and the cache (batch invariant).
// prepare (decode steps: every sequence one row): the work items are (sequence, KV head) with all the heads of that
// KV head, and each first calls (*prepare)(s, kv_head), which writes what the item reads (the model's RoPE and
// kv_store of that row and KV head): that work spread over the threads with the attention, without a pass and a
// wait of its own. A sequence of more rows with prepare: std::invalid_argument (its rows would read each other's).
using AttnPrepare = std::function<void(int64_t seq, int kv_head)>;
void paged_attention(ThreadPool& pool, const KVLayer& kv, const AttnSeq* seqs, int64_t num_seqs, int n_heads,
                     float scale, bool int8_q = false, const AttnPrepare* prepare = nullptr);
bool int8_q_scores(const KVLayer& kv);
// The same attention with the sequences of at least min_rows rows on bf16 tiles (prefill; see
// linear_bf16_tiles for what that means): q, K, V and the softmax probabilities rounded to bf16,
// every sum in fp32, the softmax online over 64-key chunks (flash attention). Not batch invariant;
// the other sequences take paged_attention's exact path. scratch grows as needed and is reused
// (the packed K/V). tile_unit: the unit; throws std::runtime_error when it is not available here.
// int8_q, prepare: passed to paged_attention for the sequences it takes (with prepare, every sequence must be one
// of them: std::invalid_argument otherwise). A sequence with out_bf16 set gets its output there, as bf16, whichever
// path takes it.
void paged_attention_tiles(ThreadPool& pool, const KVLayer& kv, const AttnSeq* seqs, int64_t num_seqs, int n_heads,
                           float scale, int64_t min_rows, TileUnit tile_unit, Buffer& scratch, bool int8_q = false,
                           const AttnPrepare* prepare = nullptr);

// y = x w^T (+ bias) for 4-bit w [N, K]; same contract as linear().
void linear_w4(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N,
               const float* bias, float* y, int64_t ldy);

// The same product with int8 activations (the "int8" decode precision; llama.cpp's q4_1 x q8_1 dot product):
// each run of 32 inputs (block b) of a row of x is quantized with its own scale d_b = max|x| / 127 (fp32) to
// q = round_half_even(x * (1 / d_b)) in fp32 (all 0 when d_b = 0), and
//   y[m, n] = sum_b d_b * (scale[n, g] * sum_{k in b} code[n, k] q[m, k] + min[n, g] * sum_{k in b} q[m, k]) + bias[n]
// (g the group of block b): the integer sums exact (int8 dot products: VNNI's vpdpbusd, or maddubs), the rest fp32.
// Not exact: |y - linear_w4(x)| <= sum_k |w[n, k]| d_b(k) / 2 plus fp32 rounding. Each output still depends only on
// its own row of x and row of w (per ISA), so a request's result does not depend on the batch around it.
//   scratch: the quantized rows (grown as needed); allow_vnni false: AVX-512 uses maddubs even where the CPU has
//   VNNI (to test both paths). group_size 32, 64 or 128; K a multiple of it.
void linear_w4a8(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N,
                 const float* bias, float* y, int64_t ldy, Buffer& scratch, bool allow_vnni = true);
// The unit that runs the int8 products over interleaved weights (linear_w4a8_il, linear_w4a8_il_silu,
// linear_i8a8_il). Every unit gives the same bits, so the choice is speed alone.
enum class Int8Unit {
  Auto,     // AMX-INT8 from kAmxMinRows rows (4-bit; kAmxI8MinRows int8) where the CPU grants it, else Vector
  Amx,      // AMX-INT8 at every row count; std::runtime_error where amx_int8_available() is false (tests)
  Vector,   // the active ISA's vector path (AVX-512 with VNNI where present) or the scalar one; never AMX
  Maddubs,  // as Vector, but AVX-512 without VNNI (maddubs), to test that path (linear_i8a8_il: as Vector)
};
// Rows from which Int8Unit::Auto takes AMX-INT8 (bench_decode_products.py's table on an AMX host, the default
// model's products: 4-bit at 8 / 16 / 32 rows 5.7 / 7.0 / 11.1 ms on AMX against 3.7 / 6.8 / 12.2 with VNNI; the
// int8 output matrix at 8 / 12 rows 0.86 / 0.85 against 0.95 / 1.28).
constexpr int64_t kAmxMinRows = 16;
constexpr int64_t kAmxI8MinRows = 8;

// linear_w4a8 over interleaved weights (W4Interleaved): the same integers (activations quantized alike, each run's
// code * q summed exactly), the fp32 part per output in a fixed order: acc = fma(float(dot_b), scale[n, g] * d_b,
// acc) over the runs b, then acc = fma(min[n, g], xs[m, g], acc) over the groups, then + bias[n] (xs as Q8Rows').
// Each output depends only on its own row of x and of w, on every path: batch invariant, and one kernel serves
// every row count (decode and prompt chunks). The paths give the same bits: AMX-INT8 (tdpbsud), AVX-512 VNNI
// (vpdpbusd), AVX-512 (maddubs) and scalar. N a multiple of 16; group_size 32, 64 or 128; K a multiple of it.
void linear_w4a8_il(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Interleaved& w,
                    int64_t N, const float* bias, float* y, int64_t ldy, Buffer& scratch,
                    Int8Unit unit = Int8Unit::Auto);
// The MLP's gate/up product and silu_mul in one pass: w's first N/2 rows are the gates and the next N/2 their ups
// (as silu_mul's gu), and y[m, n] = silu(gate_n) * up_n for n < N/2, each of gate_n and up_n the bits
// linear_w4a8_il gives and the silu silu_mul uses on this ISA: the same y as the two calls, without the [M, N]
// intermediate's round trip through memory. N a multiple of 32.
void linear_w4a8_il_silu(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const W4Interleaved& w,
                         int64_t N, float* y, int64_t ldy, Buffer& scratch, Int8Unit unit = Int8Unit::Auto);
// W4Matrix [N, K] -> W4Interleaved's layout: codes [N * K / 2] bytes, scales and mins [N * K / group_size] halves
// each (rounded to nearest where not exact).
void w4_interleave(const W4Matrix& w, int64_t N, int64_t K, uint8_t* codes, uint16_t* scales, uint16_t* mins);
// True where linear_w4a8_il runs on vector units here (AVX-512 active; the scalar path is for tests).
bool w4a8_il_fast();
// The int8 matrix (the output matrix) with integer activations, over interleaved weights. Int8Runs: x quantized as
// linear_w4a8 does (d_b per run of 32), y[m, n] = acc * scale[n] (+ bias[n]) with acc = fma(float(dot_b), d_b, acc)
// over the runs b in order, dot_b = sum_{k in b} q[n, k] * xq[m, k] exact (VNNI: xq + 128 as unsigned bytes, less
// the offsets; AMX-INT8: tdpbssd, signed by signed). Int16Rows: H = sum_k hi[m, k] q[n, k], L = sum_k lo[m, k] q[n, k]
// exact (VNNI: hi + 128 and lo as unsigned bytes, the offsets' sum taken from H; AMX-INT8: tdpbssd and tdpbusd over
// all of K), y[m, n] = (fma(256, float(H), float(L)) * a_m) * scale[n] (+ bias[n]). Batch invariant; the AMX, VNNI and
// scalar paths give the same bits (no maddubs path: its int16 pairs would saturate at 255 * 127 * 2). N a multiple
// of 16, K of 32 (Int16Rows on AMX: of 64; Int8Unit::Auto takes VNNI otherwise).
void linear_i8a8_il(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const I8Interleaved& w,
                    int64_t N, const float* bias, float* y, int64_t ldy, Buffer& scratch,
                    Int8Unit unit = Int8Unit::Auto, I8Activations acts = I8Activations::Int8Runs);
// The activations as I8Activations::Int16Rows quantizes them (for tests): hi [M, K] ((c >> 8) + 128), lo [M, K]
// (c & 255), alpha [M] (A16Rows).
void quantize_a16(const float* x, int64_t M, int64_t K, int64_t ldx, uint8_t* hi, uint8_t* lo, float* alpha);
// I8Matrix [N, K] -> I8Interleaved's q [N * K] and offsets [N * K / 32] (the scales stay the matrix's).
void i8_interleave(const I8Matrix& w, int64_t N, int64_t K, int8_t* q, int32_t* offsets);
// I8Interleaved's sums [N] from its offsets (each output's runs summed).
void i8_offset_sums(const int32_t* offsets, int64_t N, int64_t K, int32_t* sums);
// True where linear_i8a8_il runs on VNNI here (AVX-512 active and VNNI present).
bool i8a8_il_fast();
// The activations as linear_w4a8 quantizes them, in input order (for tests): q [M, K], d [M, K / 32].
void quantize_q8(const float* x, int64_t M, int64_t K, int64_t ldx, int8_t* q, float* d);
// True when the CPU has AVX-512 VNNI (and the AVX-512 path is supported) and this build has the code.
bool vnni_available();
// True when the CPU has AMX-INT8 (with AMX-BF16, granted as amx_available()) and this build has the code.
bool amx_int8_available();

void linear_i8(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const I8Matrix& w, int64_t N,
               const float* bias, float* y, int64_t ldy);

// bf16 GEMM on a tile unit, for prefill: AMX tiles where the CPU has AMX-BF16 (Intel Sapphire Rapids
// and later), AVX512-BF16's dot products where it has that but no AMX (AMD Zen 4 and later).
// Not batch invariant with linear(): x and w are rounded to bf16, so this is an opt-in precision
// for many-row batches, like HF's bf16 path. Each output element is still reduced in a fixed order
// (32-wide K steps, pairs within a step as the tile unit does), whatever the threads.
// The weights stay as the model stores them: each 32-output strip is rounded to bf16 and packed
// into the tile unit's layout (a per-thread buffer) as the product reaches it, then reused for
// every row block, so no bf16 copy of the model is kept.
struct TileWeights {
  const void* dense = nullptr;  // [N, K] of dense_dtype; nullptr: the 4-bit w4, or i8 where i8.q is set
  DType dense_dtype = DType::F32;
  W4Matrix w4{};
  // Or the same 4-bit weights interleaved (W4Interleaved; w4il.codes set): each weight formed as from w4 (the
  // same bits where the scales and mins are halves, as interleaving leaves them).
  W4Interleaved w4il{};
  // int8 rows (the output matrix): q rounds to bf16 exactly (|q| <= 127), and each output is its raw
  // dot times the row's scale, as linear_i8 finishes it. Store mode only, no bias.
  I8Matrix i8{};
  // For a gate/up matrix (N a multiple of 64): each 32-wide block of outputs takes 16 rows from the
  // first half of w and the 16 matching rows of the second half (so it holds 16 gates and their ups).
  bool pair_halves = false;
};
// True when the CPU has AMX-TILE and AMX-BF16 and the OS granted this process the tile state
// (asked once, arch_prctl ARCH_REQ_XCOMP_PERM).
bool amx_available();
// True when the CPU has AVX-512 F/BW/VL/DQ and AVX512-BF16 with the OS saving zmm state, and this
// build has the code.
bool avx512bf16_available();
const char* tile_unit_name(TileUnit t);  // "model", "amx", "avx512bf16"
bool tile_unit_available(TileUnit t);
// The fastest unit this CPU has: Amx, else Avx512Bf16; false when neither.
bool best_tile_unit(TileUnit* out);
// The product in two parts, so producers can hand it its input as bf16 and it can finish its output
// in place. bf16_tiles_input: x [M, K] -> xb [round_up(M, 32), round_up(K, 32)] bf16, zero padded
// (bf16_tiles_x_size(M, K) elements). linear_bf16_tiles_in then computes c = xb w^T + bias and, by mode:
//   Store    out = y [M, N] fp32 (row stride ldo): y = c
//   Add      y += c (a residual connection)
//   SiluMul  w with pair_halves: out = act [round_up(M, 32), N / 2] bf16 (row stride ldo),
//            act[m, i] = silu(c[m, i]) * c[m, N / 2 + i], ready as the next product's xb
// tile_unit: the unit. Throws std::runtime_error when it is not available here.
enum class TileOut { Store, Add, SiluMul };
int64_t bf16_tiles_x_size(int64_t M, int64_t K);
// How linear_bf16_tiles_in splits M rows among num_threads threads: into this many groups of whole 32-row blocks
// (each thread takes a group and runs every strip of w over it), or 0 where the rows are too few and the strips
// are split instead. A caller may run a group's row-local ops on one thread with the same result.
int64_t bf16_tiles_row_groups(int64_t M, int num_threads);
void bf16_tiles_input(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, uint16_t* xb);
// bf16_tiles_input of rmsnorm(x, w, eps) in one pass (each row normed, then rounded): the same bits, without the
// fp32 rows written and read back, nor a second parallel pass.
void rmsnorm_bf16_tiles(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const float* w, float eps,
                        uint16_t* xb);
void linear_bf16_tiles_in(ThreadPool& pool, const uint16_t* xb, int64_t M, int64_t K, const TileWeights& w, int64_t N,
                          const float* bias, TileOut mode, void* out, int64_t ldo, TileUnit tile_unit);
// The same with x [M, K] fp32 (row stride ldx): rounded to bf16 into scratch (grown as needed) first.
void linear_bf16_tiles(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const TileWeights& w,
                       int64_t N, const float* bias, TileOut mode, void* out, int64_t ldo, TileUnit tile_unit,
                       Buffer& scratch);

// Row gather from an embedding table: out[m, :] = table[ids[m], :] as fp32.
//   table [V, H] (dt), out [M, H] stride ldo
void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out, int64_t ldo);

// Conversions used by loaders and tests (round to nearest even).
uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t x);

}  // namespace lmrt::cpu
