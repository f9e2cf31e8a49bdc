// y = x W^T over a Matrix on the CPU backend: the exact fp32 products, int8 activations, and W as the bf16 tile
// products read it.
#pragma once

#include <cstdint>

#include "common/buffer.h"
#include "kernels/cpu/ops.h"
#include "model/matrix.h"

namespace lmrt {

// With the bf16 tile path on, batches of at least this many rows run their products on it (LlamaModel::layer_tiles),
// and so does the output matrix when that many rows need logits: prompt chunks, and decode steps of 16+ requests.
// Measured on AVX512-BF16 (Zen 4, 2 threads, the default model's products; benchmarks/bench_decode_products.py):
// a step's products at 16 rows take 13.3 ms on the tiles against 19.3 exact fp32 and 15.4 with int8 activations;
// at 8 rows 10.3 against 7.4 (the output matrix's strips cost the same packed for 8 rows as for 32), so smaller
// batches stay on the exact path.
constexpr int64_t kTilesMinRows = 16;
// A sequence's attention runs on the tiles (paged_attention_tiles) from this many query rows: the tile attention
// works on 32 query rows at a time.
constexpr int64_t kTilesAttnMinRows = 32;
// linear_precision Int8 on an AMX host (4-bit matrices interleaved): a step of this many rows runs its products on
// the bf16 tiles, packed from the interleaved layout (a prompt chunk), fewer on AMX-INT8 (decode). Measured there
// (bench_decode_products.py, a step's 4-bit products, 2 threads): 32 rows 11.1 ms on AMX-INT8 against 12.8 on the
// tiles, 64 rows 20.2 against 18.1, 512 rows 150 against 94 (the tiles accumulate a whole row in fp32; AMX-INT8
// hands every 32 inputs' dots to the vector units).
constexpr int64_t kInt8TilesMinRows = 64;
// int8 mode's decode steps over 4-bit layers run in row groups (LlamaModel::decode_row_groups: each thread its rows
// through every layer, no barrier between the ops and the rows' activations in their thread's caches, but every
// thread streams all the weights) from this many rows a group on 2 threads, and G / 2 times as many on G threads: G
// groups read the weights G times, so per the 2-thread crossover a group's rows (its compute) must grow with G to
// stay ahead of that (more than 2 threads: unmeasured, the rule kept conservative). Measured on the Zen 4 host, 2
// threads, the default model, decode tokens/s (benchmarks/bench_decode_rows.py, RESULTS.md 2026-12-05 04:45): 8 rows
// 1179 -> 1196, 16 rows 1459 -> 1512, 32 rows 1378 -> 1636 (before: 1359-1636 over three runs, after 1618-1679).
// Timing-only builds (not kept): groups of 2 rows at 4 rows 937-972 -> 676-688 (the weights' doubled traffic the
// bound); exact fp32 products in groups within 3% at 4-32 rows; dense fp32 layers lost (8 rows 270-282 -> 217).
constexpr int64_t kRowGroupMinRows = 4;

// w as the tile products read it (dense, or 4-bit in rows or interleaved; an interleaved int8 matrix is refused).
// pair_halves: a gate/up matrix whose product ends in silu_mul (cpu::TileWeights).
cpu::TileWeights tile_weights(const Matrix& w, bool pair_halves);

// A 4-bit w (rows a multiple of 16) rearranged in place for the int8 product over many rows (cpu::w4_interleave):
// from then on it runs with int8 activations (cpu::linear_w4a8_il), or on the tiles packed from that layout.
void interleave_w4(Matrix& w);
// An int8 w (rows a multiple of 16, cols of 32) rearranged in place for cpu::linear_i8a8_il (cpu::i8_interleave):
// from then on it runs with int8 activations only, and never on the tiles.
void interleave_i8(Matrix& w);

// y [M, rows] (row stride ldy) = x [M, cols] (row stride ldx) W^T (+ bias [rows]), exact fp32; or, for a 4-bit W
// when int8_scratch is given, with x quantized to int8 per run of 32 inputs (cpu::linear_w4a8, or
// cpu::linear_w4a8_il for interleaved weights; its scratch).
void apply_linear(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, const float* bias,
                  float* y, int64_t ldy, Buffer* int8_scratch = nullptr);
// y [M, rows / 2] = silu(gate) * up for the MLP's gate/up W (gate rows, then up rows), in one pass where W is
// interleaved 4-bit with int8 activations (cpu::linear_w4a8_il_silu: the bits of apply_linear + cpu::silu_mul);
// false, and nothing done, for every other W (the caller runs the two steps).
bool apply_gate_up_silu(cpu::ThreadPool& pool, const Matrix& w, const float* x, int64_t M, int64_t ldx, float* y,
                        int64_t ldy, Buffer* int8_scratch);

}  // namespace lmrt
