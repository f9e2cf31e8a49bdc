// The CUDA op set, being built (issue 15): the counterpart of kernels/cpu/ops.h, op for op on the same contracts,
// over device pointers and a stream (a cudaStream_t passed as void*, so this header needs no CUDA include).
// Compiled only when the build finds nvcc (LMRT_HAVE_CUDA); tests/test_kernels_cuda.py checks each op against the
// CPU op and a float64 reference where a device is at hand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/ops.h"

namespace lmrt::cuda {

// True when the CUDA runtime finds a device; otherwise false, and *why (if given) says what is missing (no driver,
// no device, a driver older than the runtime).
bool available(std::string* why);
// The first device's name ("" without one).
std::string device_name();
// The first device's free and total global memory in bytes (std::runtime_error without a device).
void memory_info(size_t* free_bytes, size_t* total_bytes);

// y[m, :] = x[m, :] / sqrt(mean(x[m, :]^2) + eps) * w[:]   (cpu::rmsnorm's contract; y == x allowed)
//   x [M, H] row stride ldx, w [H], y [M, H] row stride ldy; one block of threads per row, the sum of squares in
//   fp32 over a fixed tree (so a row's result does not depend on M)
void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy,
             void* stream);
// The residual add fused into the norm: x += add (add may be null), then y = rmsnorm(x); x, add, y [M, H] contiguous.
// The same bits as cuda::add then cuda::rmsnorm, in one launch.
void add_rmsnorm(float* x, const float* add, int64_t M, int64_t H, const float* w, float eps, float* y, void* stream);
// out[m, i] = silu(gu[m, i]) * gu[m, I + i]   (cpu::silu_mul's contract)
//   gu [M, 2I] row stride ldg, out [M, I] row stride ldo
void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo, void* stream);

// Rotary embedding in place, HF's rotate_half layout (cpu::rope's contract): angle = float(pos) * inv_freq[i] in
// fp32, cos and sin times attn_scale.   x [M, n_heads * head_dim] row stride ldx; pos [M]; inv_freq [head_dim / 2]
void rope(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
          float attn_scale, void* stream);
// out[m, :] = table[ids[m], :] as fp32 (cpu::embedding's contract).   table [V, H] of dt; out [M, H] row stride ldo
void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out, int64_t ldo,
               void* stream);

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for dense w of F32 or BF16 (cpu::linear's contract), rows of x 8 at
// a time: a block of 8 warps per 4 outputs, K split among the warps (8 inputs a lane, 16-byte loads, where K is a
// multiple of 8 and x's rows 16-byte aligned; else one input a lane), the sums in a fixed order, so an output does not
// depend on M.   x [M, K] row stride ldx, w [N, K], y [M, N] row stride ldy
void linear(const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N, const float* bias,
            float* y, int64_t ldy, void* stream);
// x[i] += h[i] for i < n (the residual adds)
void add(float* x, const float* h, int64_t n, void* stream);

// The 4-bit decode GEMV's shapes (benchmarks/bench_cuda.py times them side by side): Default (16 outputs a block at
// 1 row, 8 at 2-4, 4 from 5, K split over 8 warps), Narrow (4 outputs a block at every row count: the first shape
// measured), Streamed (a warp per 8 outputs over all of K, 16-byte code loads, the next step's loads in flight
// during a step's arithmetic; rows in slices of at most 4, every slice streamed, so a row's bits do not depend on M).
enum class W4Gemv { Default, Narrow, Streamed };

// y[m, n] = sum_k x[m, k] * w[n, k] (+ bias[n]) for 4-bit w (W4Matrix's layout and (scale, min) groups of 32, 64
// or 128; cpu::linear_w4's contract), the decode path (rows of x 8 at a time): a block of 8 warps per 16 outputs (8
// for 2-4 rows, 4 for more), K split among the warps, each x load serving all the block's outputs, the weights formed
// in registers as fma(code, scale, min); the sums in a fixed order (lanes, a shuffle tree, the warps in turn), so an
// output does not depend on M. narrow: 4 outputs a block (the earlier shape, for benchmarks/bench_cuda.py's
// comparison).
//   x [M, K] row stride ldx (device; 16-byte aligned rows: x and ldx multiples of 4 floats, else invalid_argument),
//   y [M, N] row stride ldy
void linear_w4(const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N, const float* bias,
               float* y, int64_t ldy, void* stream, W4Gemv shape = W4Gemv::Default);

// The same products on the tensor cores (prompt chunks and large batches; cpu::linear_bf16_tiles' counterpart): x
// and the weights rounded to bf16 (round to nearest even; 4-bit weights formed as fma(code, scale, min) in fp32
// first), products on the bf16 MMA units, sums in fp32 in K order, + bias in fp32. A block of 4 warps per 64 rows x
// 64 outputs, K in steps of 32 (the next step's loads in flight during a step's MMAs). A row's outputs do not depend
// on M; they differ from linear / linear_w4 (exact fp32) by the bf16 rounding.
//   x [M, K] row stride ldx, y [M, N] row stride ldy; dense w [N, K] of F32 or BF16
void linear_tc(const float* x, int64_t M, int64_t K, int64_t ldx, const void* w, DType wdt, int64_t N,
               const float* bias, float* y, int64_t ldy, void* stream);
void linear_w4_tc(const float* x, int64_t M, int64_t K, int64_t ldx, const W4Matrix& w, int64_t N, const float* bias,
                  float* y, int64_t ldy, void* stream);

// Writes the K and V rows of M tokens into the paged cache, quantized as they are written: cpu::kv_store's contract
// and bits (F32; BF16 rounded to nearest even; I8 / I4 with one fp16 scale and zero point a row), one warp a row.
// I4Channel K goes into its block's staging slot as an I8 row (a block without a slot: the row is not written; the
// CPU's kernel throws there).
//   kv: device pointers; k, v [M, n_kv_heads * head_dim] row strides ldk, ldv; slot [M] (block * block_size + offset)
void kv_store(const KVLayer& kv, const float* k, int64_t ldk, const float* v, int64_t ldv, int64_t M,
              const int64_t* slot, void* stream);
// Causal attention of T query rows over the paged cache (cpu::paged_attention's contract: row t sees cache positions
// 0..pos[t] of its sequence; F32 / BF16 / I8 / I4 K and V, or I8 K with I4 V; head_dim <= 256). A row that sees more
// than kAttnSplitKeys positions splits them over up to kAttnSplits warps a head (split-KV), their partial softmaxes
// in scratch, then combined; shorter rows run in one warp. The path is the row's own (by its position).
// A prompt chunk (kAttnTileMinRows+ consecutive rows of one sequence, head_dim <= 128, K not I4Channel) runs in
// tiles of kAttnTileRows rows a block, which read each K/V row into shared memory once for the tile instead of once
// a row, and do each row's arithmetic in the one-warp kernels' order: the same bits (batch invariance holds).
//   q, out [T, n_heads * head_dim] row strides ldq, ldo; pos [T]; row t's block table at tables + table_start[t];
//   host_table_start: table_start on the host (the rows of a sequence share theirs), or nullptr (no tiles);
//   scratch: paged_attention_scratch(T, n_heads, head_dim) floats of device memory
constexpr int kAttnSplitKeys = 256, kAttnSplits = 8;
constexpr int kAttnTileRows = 64, kAttnTileMinRows = 16;
inline int64_t paged_attention_scratch(int64_t T, int n_heads, int head_dim) {
  // the split-KV partials, then a row mask [T] and the tiles [T / kAttnTileMinRows + 1] (first row, rows) as int32
  return T * n_heads * kAttnSplits * (head_dim + 2) + T + 2 * (T / kAttnTileMinRows + 1);
}
void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                     const int32_t* tables, const int64_t* table_start, const int64_t* host_table_start, int64_t T,
                     int n_heads, float scale, float* scratch, void* stream);
// cpu::kv_seal's contract and bits (I4Channel K): each of the full blocks `blocks` [num] (device memory) quantized
// from its staged I8 rows, one (scale, zero) per kv head and channel.
void kv_seal(const KVLayer& kv, const int32_t* blocks, int64_t num, void* stream);
// cpu::hadamard_heads' contract and bits: each head rotated in place in blocks of the largest power of two dividing
// head_dim.   x [M, n_heads * head_dim] row stride ldx
void hadamard_heads(float* x, int64_t M, int64_t ldx, int n_heads, int head_dim, void* stream);

// out[r] = the token of logits row r under rows[r] (common/sampling.h's sample_row: -1 where a logit is NaN or +inf;
// the penalty and bans, then greedy, or temperature, top-k, top-p, min-p and the draw at rows[r].u), one block a row;
// logits changed in place.   logits [R, V] contiguous, rows [R], ids: the rows' token lists, out [R] int32
void sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int32_t* out,
            void* stream);

// Test plumbing: the op on host arrays (copied to the device and back, outputs poisoned with NaN beforehand so an
// element the op does not write shows). std::runtime_error naming the CUDA error, or "no CUDA device: why".
void rmsnorm_host(const float* x, int64_t M, int64_t H, const float* w, float eps, float* y);
// add_rmsnorm on host arrays: x (updated in place: x + add) and y.
void add_rmsnorm_host(float* x, const float* add, int64_t M, int64_t H, const float* w, float eps, float* y);
void silu_mul_host(const float* gu, int64_t M, int64_t I, float* out);
// x rotated in place on the host array.
void rope_host(float* x, int64_t M, int n_heads, int head_dim, const int32_t* pos, const float* inv_freq,
               float attn_scale);
// table [V, H] of dt on the host (V rows).
void embedding_host(const void* table, DType dt, int64_t V, int64_t H, const int32_t* ids, int64_t M, float* out);
// w [N, K] of wdt on the host too. tensor_cores: linear_tc, else linear.
void linear_host(const float* x, int64_t M, int64_t K, const void* w, DType wdt, int64_t N, const float* bias, float* y,
                 bool tensor_cores = false);
// w's arrays on the host too (codes [N, K / 2], scales and mins [N, K / group_size]). tensor_cores: linear_w4_tc.
void linear_w4_host(const float* x, int64_t M, int64_t K, const W4Matrix& w, int64_t N, const float* bias, float* y,
                    bool tensor_cores = false, W4Gemv shape = W4Gemv::Default);
// kv's arrays on the host (num_blocks blocks; I4Channel K: num_stage_slots staging slots and the block -> slot
// table): copied to the device, written, copied back.
void kv_store_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const float* k, const float* v,
                   int64_t M, const int64_t* slot);
void kv_seal_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const int32_t* blocks, int64_t num);
// kv, q [T, n_heads * head_dim], pos, tables (all sequences' block tables end to end, n_table ids) and
// table_start [T] on the host; out [T, n_heads * head_dim].
void paged_attention_host(const KVLayer& kv, int64_t num_blocks, int64_t num_stage_slots, const float* q,
                          const int32_t* pos, const int32_t* tables, int64_t n_table, const int64_t* table_start,
                          int64_t T, int n_heads, float scale, float* out);
void hadamard_heads_host(float* x, int64_t M, int n_heads, int head_dim);
// logits [R, V] (left as the op leaves them), rows [R] and ids [n_ids] on the host.
void sample_host(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int64_t n_ids,
                 int32_t* out);

// Benchmark plumbing (bench.cu), device-side timings for benchmarks/bench_cuda.py, inputs from a hash on the device.
// The device-to-device copy bandwidth in GB/s counting bytes read plus written (median of reps graph replays): by
// cudaMemcpyAsync (the copy engine) and by a kernel of 16-byte loads and stores on every SM.
struct CopyBandwidth {
  double memcpy = 0, kernel = 0;
};
CopyBandwidth copy_bandwidth_gbs(size_t bytes, int reps);
// linear_w4 at [M, K] x [N, K]: the median over reps replays of a graph of >= 64 launches that cycle through enough
// weight sets (>= min_bytes in all) that the L2 holds none, per launch; bytes = one set + x + y.
struct LinearTiming {
  double us = 0, bytes = 0;
};
// tensor_cores: linear_w4_tc instead.
LinearTiming time_linear_w4(int64_t M, int64_t K, int64_t N, int group_size, int reps, size_t min_bytes,
                            W4Gemv shape = W4Gemv::Default, bool tensor_cores = false);

}  // namespace lmrt::cuda
