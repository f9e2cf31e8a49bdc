// The op types no backend owns: element types, the 4-bit and int8 weight matrices, the paged KV cache's layer
// layout and an attention sequence. Every backend's op set (kernels/cpu/ops.h; kernels/cuda/ to come) takes these,
// and the model and the engine see nothing else of the kernels.
#pragma once

#include <cstdint>

namespace lmrt {

// Element types of weights and of the KV cache. BF16 is the upper half of an
// IEEE fp32 word, stored as uint16_t.
enum class DType : int { F32 = 0, BF16 = 1 };

// Element types of the KV cache. F32 and BF16 hold the values. I8 and I4 hold codes, with one
// (scale, zero point) per row (a row = one token of one kv head): x = (code - zero) * scale, asymmetric,
// computed when the row is written (kv_store) from the row's own range [min, max] widened to include 0:
// scale = (max - min) / (2^bits - 1) rounded up to fp16 (so the range is covered), zero = round(-min / scale),
// code = clamp(round(x / scale) + zero, 0, 2^bits - 1), rounding half to even. The dequantised value is
// exact in fp32 (a code of at most 8 bits times an 11-bit scale), so attention over codes computes
// what attention over those values computes. I8: one byte per dim. I4: two codes per byte; in each run
// of 32 dims, byte j holds dim j (low nibble) and dim j + 16 (high nibble), as W4Matrix's codes.
// I4Channel (K only, KIVI's scheme): I4's codes and row layout, but one (scale, zero point) per *channel*
// of each block and kv head, from the channel's range over the block's rows, so a key channel with
// outliers gets its own scale. That range is only known once the block is full: until then the block's K
// rows live in a staging slot as I8 rows, and kv_seal quantizes the block when its last row has been
// written. Attention reads a block's int4 codes when every row of the block is visible to the query
// (pos >= the block's last position) and the staged I8 rows otherwise, so a token's attention is the
// same whether it ran in a prompt chunk or in decode.
// What a row holds is the model's choice: where K is I8, the model stores each K head rotated by an orthonormal
// Hadamard matrix and rotates q alike (LlamaModel, cpu::hadamard_heads), which the kernels need not know.
enum class KVDType : int { F32 = 0, BF16 = 1, I8 = 2, I4 = 3, I4Channel = 4 };
// Bytes of one row of head_dim elements (I4 / I4Channel need head_dim a multiple of 32).
int64_t kv_row_bytes(KVDType dt, int head_dim);

// One layer's paged KV cache. Row (block b, kv head h, slot s) is row ((b * n_kv_heads + h) * block_size + s)
// of k and of v, each row kv_row_bytes(dtype, head_dim) bytes; for I8 / I4 its scale (fp16 bits) and zero
// point are entry `row` of *_scales and *_zeros (nullptr for F32 / BF16). K and V have the same dtype, or
// K is I8 and V I4, or K is I4Channel and V I4. I4Channel K: the (scale, zero) of channel c of (block b,
// kv head h) is entry (b * n_kv_heads + h) * head_dim + c of k_scales / k_zeros, and the block's staging
// slot (stage_of_block[b], -1 for none) holds its rows as I8: row (slot, h, s) is row
// ((slot * n_kv_heads + h) * block_size + s) of k_stage, k_stage_scales and k_stage_zeros.
struct KVLayer {
  void* k = nullptr;
  void* v = nullptr;
  uint16_t* k_scales = nullptr;  // [num_blocks * n_kv_heads * block_size] (I8 / I4 K); I4Channel: [.. * head_dim]
  uint8_t* k_zeros = nullptr;    // the same shape as k_scales
  uint16_t* v_scales = nullptr;  // [num_blocks * n_kv_heads * block_size] (I8 / I4 V)
  uint8_t* v_zeros = nullptr;
  KVDType k_dtype = KVDType::F32;
  KVDType v_dtype = KVDType::F32;
  int n_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  // I4Channel K only:
  uint8_t* k_stage = nullptr;               // [num_slots * n_kv_heads * block_size, head_dim] I8 codes
  uint16_t* k_stage_scales = nullptr;       // [num_slots * n_kv_heads * block_size]
  uint8_t* k_stage_zeros = nullptr;         // [num_slots * n_kv_heads * block_size]
  const int32_t* stage_of_block = nullptr;  // [num_blocks] staging slot of a block being filled, or -1
};

// One sequence's new tokens in a paged attention call: their queries and outputs, its block table, their positions.
struct AttnSeq {
  const float* q;  // [M, n_heads * head_dim] row stride ldq
  int64_t ldq;
  float* out;  // [M, n_heads * head_dim] row stride ldo
  int64_t ldo;
  const int32_t* block_table;  // [ceil((max(pos) + 1) / block_size)] block ids of the sequence
  const int32_t* pos;          // [M] position of each token
  int64_t M;
  // [M, n_heads * head_dim] bf16 row stride ldo_bf16, or nullptr: where set, paged_attention_tiles writes the
  // output here instead of out, rounded to bf16 as the tile unit's inputs are (to nearest even; a hardware unit's
  // rounding makes a denormal zero), the next product's input as it is.
  uint16_t* out_bf16 = nullptr;
  int64_t ldo_bf16 = 0;
};

// One logits row's sampling where the logits are (an op set's sample op): its request's sampling parameters for this
// step, its draw, and its token lists as ranges of one ids array. The rule is common/sampling.h's sample_row.
struct RowSampling {
  float temperature = 0.f;         // <= 0: greedy (the first maximum), no draw
  float top_p = 1.f;               // 1 = off
  float min_p = 0.f;               // 0 = off
  float repetition_penalty = 1.f;  // over ids[penalized_begin, penalized_end)
  int32_t top_k = 0;               // 0 = off
  int32_t reserved = 0;
  double u = 0.0;  // the draw in [0, 1): 53 bits of the request's generator (temperature > 0 only)
  int64_t penalized_begin = 0, penalized_end = 0;  // ids[..): the context's distinct tokens (penalty != 1)
  int64_t banned_begin = 0, banned_end = 0;        // ids[..): tokens it may not draw yet (their logits -> -inf)
};
static_assert(sizeof(RowSampling) == 64, "RowSampling crosses to the GPU as bytes: one layout on both sides");

// 4-bit weights with a (scale, min) pair per group of `group_size` inputs (32, 64 or 128;
// K a multiple of it): w[n, k] = code[n, k] * scales[n, k / g] + mins[n, k / g], code in 0..15.
// AutoAWQ (min = -zero * scale) and GGUF Q4_0 / Q4_1 (group 32) map onto it exactly.
struct W4Matrix {
  const uint8_t* codes;  // [N, K / 2]: in each run of 32 inputs of a row, byte j holds input j
                         // (low nibble) and input j + 16 (high nibble)
  const float* scales;   // [N, K / group_size]
  const float* mins;     // [N, K / group_size]
  int group_size;
};

// The same 4-bit weights rearranged for products with int8 activations over many rows (linear_w4a8_il): each
// vector of 64 bytes holds 4 consecutive code bytes of 16 consecutive outputs, so one load gives a byte-dot-product
// instruction 16 outputs x 8 inputs (low nibbles: inputs 4u..4u+3 of a run of 32, high: 16+4u..16+4u+3) with no
// transpose at run time. N a multiple of 16. The scales and mins are IEEE halves (half the bytes of fp32: a
// decode step streams every one of them): exact for GGUF Q4_0 / Q4_1 and AutoAWQ scales, which are halves already;
// a min that is not (AWQ's -zero * scale) rounds to the nearest half. w4_interleave makes it from a W4Matrix.
struct W4Interleaved {
  const uint8_t* codes;    // [N / 16, K / 32, 4, 16, 4]: (strip t, run b, quad u, output n, byte j) holds
                           // W4Matrix's code byte [16 t + n, 16 b + 4 u + j]
  const uint16_t* scales;  // [N / 16, K / group_size, 16] half bits: (strip t, group g, output n) = scales[16 t + n, g]
  const uint16_t* mins;    // [N / 16, K / group_size, 16] half bits
  int group_size;
};

// int8 weights with one scale per output row: w[n, k] = q[n, k] * scale[n].
struct I8Matrix {
  const int8_t* q;      // [N, K]
  const float* scales;  // [N]
};

// The same int8 weights rearranged for products with int8 activations over many rows (linear_i8a8_il): 4
// consecutive inputs of 16 consecutive outputs per 64-byte vector, and what the activations' +128 adds to each run
// of 32 inputs (VNNI multiplies unsigned by signed bytes). N a multiple of 16, K of 32. i8_interleave makes it.
struct I8Interleaved {
  const int8_t* q;                // [N / 16, K / 4, 16, 4]: (strip t, quad v, output n, byte j) = q[16 t + n, 4 v + j]
  const int32_t* offsets;         // [N / 16, K / 32, 16]: (t, run b, n) = 128 * sum_{k in b} q[16 t + n, k]
  const float* scales;            // [N]
  const int32_t* sums = nullptr;  // [N] 128 * sum_k q[n, k] (each output's offsets summed): I8Activations::Int16Rows'
                                  // correction; nullptr: the product sums the offsets itself
};

// CPU backends: the unit that runs the bf16 tile products (kernels/cpu/tiles.h): the software model of AMX's
// instruction (any CPU; tests), AMX tiles, or VDPBF16PS in zmm registers on the same packed layout.
enum class TileUnit { Model, Amx, Avx512Bf16 };

// The activations of the CPU's int8-matrix product with integer activations (cpu::linear_i8a8_il).
enum class I8Activations {
  // int8 codes with a scale per run of 32 inputs, as linear_w4a8 quantizes them.
  Int8Runs,
  // int16 codes with one scale per row, each split into a signed high and an unsigned low byte (A16Rows): both
  // byte products sum over all of K in int32, so AMX-INT8 keeps a row's dots in its tiles to the end instead of
  // storing them every 32 inputs. On the default model's output matrix (its final hidden states, 1,024 tokens)
  // mean KL against the exact input 2.5e-7, top-1 100%, where Int8Runs gives 1.35e-3 and 97.2%.
  Int16Rows,
};

}  // namespace lmrt
