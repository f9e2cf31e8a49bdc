// linear_bf16_tiles_in: the bf16 GEMM's packing, blocking and threading (baseline-compiled), the tile
// unit's software model (scalar::bf16_tile_block), and TileRunner (tiles.h). The units themselves are
// in linear_bf16_amx.cpp (AMX tiles) and linear_bf16_avx512bf16.cpp (VDPBF16PS).
//
// Blocking: C is computed in 32 x 32 blocks (2 x 2 tiles of 16 x 16 fp32): for each 32-wide
// K step, 2 A tiles (32 rows of x as bf16) and 2 B tiles (32 outputs of w), 4 dot products. x comes
// converted once (bf16_tiles_input, [Mp, Kp] zero padded). Threads split the work two ways:
//  - many rows (a prompt chunk, kRowGroupBlocks row blocks a thread or more): a work item is a group of row blocks
//    and runs every strip of 32 outputs of w over its rows, packing each strip itself (so each strip is packed once
//    per group). Each thread reads only its rows of x and writes only its rows of y, so the lines of y do not move
//    between the cores' caches as they do with the strips split (a 512-token prompt on 2 threads, AMX: qkv / o /
//    down 11.5 / 6.9 / 16.5 -> 9.8 / 5.9 / 13.1 ms a forward, gate/up the same, the prefill +10%). Packing the strips
//    once into a shared buffer instead, read by both threads, gained half as much;
//  - few rows (a decode step): each strip is packed by the thread that reaches it, then serves all the row blocks
//    of its work item (the strips split, and the rows too when there are few strips).
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/tiles.h"

namespace lmrt::cpu {

namespace {

constexpr int64_t kTile = 16;   // tile rows, and fp32 columns of a C tile
constexpr int64_t kStep = 32;   // bf16 elements of K per tile row
constexpr int64_t kBlock = 32;  // rows / columns of C per work item (2 x 2 tiles)
// Row blocks per work item when the rows are split (and how many each thread needs for it): a packed strip (36 KB
// at K = 576) serves 8 blocks from L1 before the next one comes in.
constexpr int64_t kRowGroupBlocks = 8;

int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

// The tile unit's TDPBF16PS on one 16 x 16 C tile, as the SDM defines it: for each row m,
// pair p and column n, C[m][n] += A[m][2p] * B[p][2n], then C[m][n] += A[m][2p+1] * B[p][2n+1]
// (products of bf16 are exact in fp32; each sum rounds to nearest even). The hardware flushes
// denormals, which this model does not: the tests' tolerance covers that.
void emulated_dp(float* c, int64_t ldc, const uint16_t* a, int64_t lda,
                 const uint16_t* b) {  // c [16, 16], a [16, lda], b [16, 32]
  for (int64_t m = 0; m < kTile; ++m)
    for (int64_t p = 0; p < kTile; ++p) {
      const float a0 = bf16_bits_to_f32(a[m * lda + 2 * p]), a1 = bf16_bits_to_f32(a[m * lda + 2 * p + 1]);
      for (int64_t n = 0; n < kTile; ++n) {
        c[m * ldc + n] += a0 * bf16_bits_to_f32(b[p * 32 + 2 * n]);
        c[m * ldc + n] += a1 * bf16_bits_to_f32(b[p * 32 + 2 * n + 1]);
      }
    }
}

bool request_amx() {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  unsigned a, b, c, d;
  __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
  const bool amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  if (!amx_bf16 || !amx_tile) return false;
  // Linux keeps the 8 KB tile state off until a process asks for it.
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

}  // namespace

// The software model of amx::bf16_block (same contract, isa_kernels.h).
void scalar::bf16_tile_block(const uint16_t* a, int64_t lda, const uint16_t* b0, const uint16_t* b1, int64_t steps,
                             const float* init, int64_t ldi, float* c, int64_t ldc, int /*rows: all 32, as AMX*/) {
  for (int64_t m = 0; m < kBlock; ++m)
    for (int64_t n = 0; n < kBlock; ++n) c[m * ldc + n] = init ? init[m * ldi + n] : 0.0f;
  for (int64_t s = 0; s < steps; ++s) {
    const uint16_t* as = a + s * kStep;
    const uint16_t* bs[2] = {b0 + s * kTile * 32, b1 + s * kTile * 32};
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 2; ++j) emulated_dp(c + i * kTile * ldc + j * kTile, ldc, as + i * kTile * lda, lda, bs[j]);
  }
}

bool amx_available() {
  static const bool ok = request_amx();
  return ok;
}

bool avx512bf16_available() {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AVX512BF16)
  static const bool ok = avx512_feature(1, 0, 5);  // CPUID.(EAX=7, ECX=1):EAX[5] AVX512_BF16
  return ok;
#else
  return false;
#endif
}

const char* tile_unit_name(TileUnit t) {
  switch (t) {
    case TileUnit::Amx: return "amx";
    case TileUnit::Avx512Bf16: return "avx512bf16";
    default: return "model";
  }
}

bool tile_unit_available(TileUnit t) {
  switch (t) {
    case TileUnit::Amx: return amx_available();
    case TileUnit::Avx512Bf16: return avx512bf16_available();
    default: return true;
  }
}

bool best_tile_unit(TileUnit* out) {
  for (TileUnit t : {TileUnit::Amx, TileUnit::Avx512Bf16})
    if (tile_unit_available(t)) {
      *out = t;
      return true;
    }
  return false;
}

TileRunner::TileRunner(TileUnit impl, const char* op) : impl_(impl), block_(scalar::bf16_tile_block) {
  if (!tile_unit_available(impl))
    throw std::runtime_error(std::string(op) + ": this CPU (or OS, or build) has no " +
                             (impl == TileUnit::Amx ? "AMX-BF16" : "AVX512-BF16") +
                             "; use the fp32 path or another tile unit");
#ifdef LMRT_HAVE_AVX512BF16
  if (impl == TileUnit::Avx512Bf16) block_ = avx512bf16::bf16_block;
#endif
#ifdef LMRT_HAVE_AMX
  if (impl == TileUnit::Amx) block_ = amx::bf16_block;
#endif
}

void TileRunner::begin() const {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  if (impl_ == TileUnit::Amx) amx::configure_tiles();
#endif
}

void TileRunner::end() const {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  if (impl_ == TileUnit::Amx) amx::release_tiles();
#endif
}

void scalar::w4il_dequant(const uint8_t* codes, const uint16_t* scales, const uint16_t* mins, int group_size, int64_t K,
                          int64_t t, float* out) {
  const int64_t nblocks = K / 32, G = K / group_size;
  for (int64_t b = 0; b < nblocks; ++b)
    for (int64_t u = 0; u < 4; ++u)
      for (int64_t n = 0; n < kTile; ++n)
        for (int64_t j = 0; j < 4; ++j) {
          const uint8_t byte = codes[((t * nblocks + b) * 4 + u) * 64 + n * 4 + j];  // inputs 4u + j and 16 + 4u + j
          const int64_t g = b * 32 / group_size, k = b * 32 + 4 * u + j;
          const float s = f16_bits_to_f32(scales[(t * G + g) * 16 + n]),
                      m = f16_bits_to_f32(mins[(t * G + g) * 16 + n]);
          out[n * K + k] = std::fma(static_cast<float>(byte & 0x0F), s, m);
          out[n * K + k + 16] = std::fma(static_cast<float>(byte >> 4), s, m);
        }
}

void scalar::tile_pack16(const float* w, int64_t ldw, int64_t num_rows, int64_t K, uint16_t* out) {
  const int64_t steps = (K + kStep - 1) / kStep;
  for (int64_t s = 0; s < steps; ++s)
    for (int64_t p = 0; p < kTile; ++p)
      for (int64_t n = 0; n < kTile; ++n)
        for (int64_t j = 0; j < 2; ++j) {
          const int64_t k = s * kStep + 2 * p + j;
          out[(s * kTile + p) * 32 + 2 * n + j] = n < num_rows && k < K ? f32_to_bf16_bits(w[n * ldw + k]) : 0;
        }
}

int64_t bf16_tiles_x_size(int64_t M, int64_t K) { return round_up(M, kBlock) * round_up(K, kStep); }

int64_t bf16_tiles_row_groups(int64_t M, int num_threads) {
  const int64_t m_blocks = round_up(M, kBlock) / kBlock;
  return m_blocks >= kRowGroupBlocks * num_threads ? m_blocks / kRowGroupBlocks : 0;
}

namespace {

// The rows of a bf16 tile input xb [round_up(M, 32), round_up(K, 32)] in parallel: row(m, out) writes row m < M's
// K values, the rest of every row (and every row past M) is zero.
template <class F>
void tile_input_rows(ThreadPool& pool, int64_t M, int64_t K, uint16_t* xb, const F& row) {
  const int64_t Mp = round_up(M, kBlock), Kp = round_up(K, kStep);
  pool.parallel_for(Mp, 8, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      uint16_t* out = xb + m * Kp;  // [Kp]
      if (m < M) row(m, out);
      std::fill(out + (m < M ? K : 0), out + Kp, uint16_t{0});
    }
  });
}

}  // namespace

void bf16_tiles_input(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, uint16_t* xb) {
  const ToBf16Fn to_bf16 = to_bf16_fn();
  tile_input_rows(pool, M, K, xb, [&](int64_t m, uint16_t* out) { to_bf16(x + m * ldx, K, out); });
}

void rmsnorm_bf16_tiles(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const float* w, float eps,
                        uint16_t* xb) {
  constexpr int64_t kRows = 4;  // rows normed together (rmsnorm's chains of adds side by side)
  const int64_t Mp = round_up(M, kBlock), Kp = round_up(K, kStep);
  const ToBf16Fn to_bf16 = to_bf16_fn();
  RmsnormBf16Sig* norm_bf16 = nullptr;  // scalar: rmsnorm's fp32 rows, then to_bf16 (the same bits)
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) norm_bf16 = avx512::rmsnorm_bf16;
#endif
  pool.parallel_for(Mp, 8, [&](int64_t m0, int64_t m1) {
    thread_local std::vector<float> t_rows;  // [kRows, K] normed rows
    if (!norm_bf16 && t_rows.size() < static_cast<size_t>(kRows * K)) t_rows.resize(kRows * K);
    for (int64_t m = m0; m < m1; m += kRows) {
      const int64_t end = std::min(m + kRows, m1), live = std::clamp<int64_t>(M - m, 0, end - m);
      if (norm_bf16) {
        norm_bf16(x + m * ldx, live, K, ldx, w, eps, xb + m * Kp, Kp);
      } else {
        rmsnorm(x + m * ldx, live, K, ldx, w, eps, t_rows.data(), K);
        for (int64_t r = m; r < m + live; ++r) to_bf16(t_rows.data() + (r - m) * K, K, xb + r * Kp);
      }
      for (int64_t r = m; r < end; ++r) {  // [Kp]: zeros past K, and in every row past M
        uint16_t* out = xb + r * Kp;
        std::fill(out + (r < M ? K : 0), out + Kp, uint16_t{0});
      }
    }
  });
}

namespace {

// A thread's buffers for the strips it packs: grown once, then reused by every product it runs.
struct StripBuffers {
  std::vector<uint16_t> strip;  // [2 * steps * 16 * 32] bf16: the strip of 32 outputs, tile order
  std::vector<float> rows;      // [16, K] fp32: rows dequantised (4-bit) or widened (bf16) for packing
};
thread_local StripBuffers t_strip;

// Packs the 32 outputs of strip j (two 16-output halves) into strip [2 * steps * 16 * 32] (buf.rows: scratch).
void pack_strip(const TileWeights& w, int64_t N, int64_t K, int64_t j, W4DequantFn dequant, I8DequantFn dequant_i8,
                TilePack16Fn pack, TilePack16W4Fn pack_w4, TilePack16W4IlFn pack_w4il, TilePack16I8Fn pack_i8,
                StripBuffers& buf, uint16_t* strip) {
  const int64_t steps = round_up(K, kStep) / kStep;
  for (int64_t h = 0; h < 2; ++h) {
    // First row and row count of this half (pair_halves: gates from the first half of w, ups from the second).
    const int64_t r0 = w.pair_halves ? h * (N / 2) + j * kTile : j * kBlock + h * kTile;
    const int64_t end = w.pair_halves ? (h + 1) * (N / 2) : N;
    const int64_t rows = std::clamp<int64_t>(end - r0, 0, kTile);
    uint16_t* out = strip + h * steps * kTile * 32;
    const float* src = buf.rows.data();
    if (w.w4il.codes) {  // interleaved 4-bit: strips of 16 outputs (N a multiple of 16: rows is 16 or 0)
      const W4Interleaved& il = w.w4il;
      if (rows > 0 && pack_w4il) {
        pack_w4il(il.codes, il.scales, il.mins, il.group_size, K, r0 / kTile, out);
        continue;
      }
      if (rows > 0) scalar::w4il_dequant(il.codes, il.scales, il.mins, il.group_size, K, r0 / kTile, buf.rows.data());
      pack(src, K, rows, K, out);
      continue;
    }
    if (!w.dense && !w.i8.q && pack_w4) {  // 4-bit, dequantised in registers (rows may be 0: zeros)
      pack_w4(w.w4.codes, w.w4.scales, w.w4.mins, w.w4.group_size, K, r0, rows, out);
      continue;
    }
    if (w.i8.q && pack_i8) {  // int8, widened in registers (rows may be 0: zeros)
      pack_i8(w.i8.q, K, r0, rows, out);
      continue;
    }
    if (rows > 0 && w.i8.q) {  // int8: float(q), exact in bf16
      dequant_i8(w.i8.q, K, r0, r0 + rows, buf.rows.data());
    } else if (rows > 0 && !w.dense) {
      dequant(w.w4.codes, w.w4.scales, w.w4.mins, w.w4.group_size, K, r0, r0 + rows, buf.rows.data());
    } else if (rows > 0 && w.dense_dtype == DType::F32) {
      src = static_cast<const float*>(w.dense) + r0 * K;
    } else if (rows > 0) {
      const uint16_t* b = static_cast<const uint16_t*>(w.dense) + r0 * K;
      for (int64_t i = 0; i < rows * K; ++i) buf.rows[i] = bf16_bits_to_f32(b[i]);
    }
    pack(src, K, rows, K, out);
  }
}

}  // namespace

void linear_bf16_tiles_in(ThreadPool& pool, const uint16_t* xb, int64_t M, int64_t K, const TileWeights& w, int64_t N,
                          const float* bias, TileOut mode, void* out, int64_t ldo, TileUnit tile_unit) {
  if (M <= 0 || N <= 0) return;
  if ((mode == TileOut::SiluMul || w.pair_halves) && N % (2 * kBlock))
    throw std::invalid_argument("linear_bf16_tiles: SiluMul / pair_halves need N a multiple of 64, got " +
                                std::to_string(N));
  if (mode == TileOut::SiluMul && !w.pair_halves)
    throw std::invalid_argument("linear_bf16_tiles: SiluMul needs the gate/up weights with pair_halves");
  if (w.i8.q && (mode != TileOut::Store || bias || w.pair_halves))
    throw std::invalid_argument("linear_bf16_tiles: int8 weights run in Store mode only, without bias");
  const TileRunner unit(tile_unit, "linear_bf16_tiles");
  const TileBlockFn block = unit.block();
  SiluMulPairsFn silu_mul = scalar::silu_mul_pairs;
  TilePack16Fn pack = scalar::tile_pack16;
  TilePack16W4Fn pack_w4 = nullptr;      // scalar: w4_dequant, then tile_pack16 (the same bits)
  TilePack16W4IlFn pack_w4il = nullptr;  // scalar: w4il_dequant, then tile_pack16 (the same bits)
  TilePack16I8Fn pack_i8 = nullptr;      // scalar: i8_dequant, then tile_pack16 (the same bits)
  W4DequantFn dequant = scalar::w4_dequant;
  I8DequantFn dequant_i8 = scalar::i8_dequant;
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) {
    silu_mul = avx512::silu_mul_pairs;
    pack = avx512::tile_pack16;
    pack_w4 = avx512::tile_pack16_w4;
    pack_w4il = avx512::tile_pack16_w4il;
    pack_i8 = avx512::tile_pack16_i8;
    dequant = avx512::w4_dequant;
    dequant_i8 = avx512::i8_dequant;
  } else if (active_isa() == Isa::Avx2) {
    dequant = avx2::w4_dequant;
    dequant_i8 = avx2::i8_dequant;
  }
#endif
#ifdef LMRT_HAVE_AVX512BF16
  if (unit.impl() != TileUnit::Model && active_isa() == Isa::Avx512) {  // AVX512-BF16 rounds 32 weights at once
    silu_mul = avx512bf16::silu_mul_pairs;
    pack = avx512bf16::tile_pack16;
    pack_w4 = avx512bf16::tile_pack16_w4;
    pack_w4il = avx512bf16::tile_pack16_w4il;
    pack_i8 = avx512bf16::tile_pack16_i8;
  }
#endif
  float* y = static_cast<float*>(out);
  uint16_t* act = static_cast<uint16_t*>(out);
  const int64_t Kp = round_up(K, kStep), steps = Kp / kStep, strip_elems = 2 * steps * kTile * 32;
  const int64_t m_blocks = round_up(M, kBlock) / kBlock, strips = round_up(N, kBlock) / kBlock;
  auto grow = [&](StripBuffers& buf) {
    if (buf.strip.size() < static_cast<size_t>(strip_elems)) buf.strip.resize(strip_elems);
    if (buf.rows.size() < static_cast<size_t>(kTile * K)) buf.rows.resize(kTile * K);
  };
  auto pack_into = [&](int64_t j, StripBuffers& buf, uint16_t* strip) {
    pack_strip(w, N, K, j, dequant, dequant_i8, pack, pack_w4, pack_w4il, pack_i8, buf, strip);
  };
  // Row block mb of strip j (packed: b0, then b1 = its second half) into out by mode; c: a thread's [32, 32].
  auto run_block = [&](const uint16_t* b0, int64_t j, int64_t mb, float* c) {
    const uint16_t* b1 = b0 + steps * kTile * 32;
    const int64_t m0 = mb * kBlock, n0 = j * kBlock;
    const int live = static_cast<int>(std::min(kBlock, M - m0));  // rows of the block that are needed
    const uint16_t* a = xb + m0 * Kp;
    if (mode == TileOut::SiluMul) {  // all 32 rows: the padding rows give finite values the next product drops
      block(a, Kp, b0, b1, steps, bias ? bias + n0 : nullptr, 0, c, kBlock, live);
      silu_mul(c, kBlock, act + m0 * ldo + n0 / 2, ldo);
      return;
    }
    const bool whole = m0 + kBlock <= M && n0 + kBlock <= N;
    float* yb = y + m0 * ldo + n0;
    if (whole && mode == TileOut::Store) {  // the tiles store straight into y
      block(a, Kp, b0, b1, steps, bias ? bias + n0 : nullptr, 0, yb, ldo, kBlock);
      if (w.i8.q)  // int8: raw dots times the row scales, while the block is in cache
        for (int64_t m = 0; m < kBlock; ++m)
          for (int64_t n = 0; n < kBlock; ++n) yb[m * ldo + n] *= w.i8.scales[n0 + n];
      return;
    }
    if (whole && !bias) {  // Add: the tiles start from y and store back
      block(a, Kp, b0, b1, steps, yb, ldo, yb, ldo, kBlock);
      return;
    }
    block(a, Kp, b0, b1, steps, nullptr, 0, c, kBlock, live);
    for (int64_t m = m0; m < m0 + live; ++m)
      for (int64_t n = n0; n < std::min(N, n0 + kBlock); ++n) {
        const float v = w.i8.q ? c[(m - m0) * kBlock + (n - n0)] * w.i8.scales[n]
                               : c[(m - m0) * kBlock + (n - n0)] + (bias ? bias[n] : 0.0f);
        y[m * ldo + n] = mode == TileOut::Add ? y[m * ldo + n] + v : v;
      }
  };
  if (const int64_t groups = bf16_tiles_row_groups(M, pool.num_threads())) {  // rows split: each packs every strip
    const int64_t per_group = (m_blocks + groups - 1) / groups;
    pool.parallel_for(groups, 1, [&](int64_t begin, int64_t end) {
      StripBuffers& buf = t_strip;
      grow(buf);
      unit.begin();
      float c[kBlock * kBlock] = {};  // [32, 32]: a block that is not stored straight into y
      for (int64_t g = begin; g < end; ++g)
        for (int64_t j = 0; j < strips; ++j) {
          pack_into(j, buf, buf.strip.data());
          for (int64_t mb = g * per_group; mb < std::min(m_blocks, (g + 1) * per_group); ++mb)
            run_block(buf.strip.data(), j, mb, c);
        }
      unit.end();
    });
    return;
  }
  // Strips split: a work item is one strip (packed once per item) over a group of row blocks. With enough strips
  // for every thread a group is all rows; otherwise rows are split too (each group packs the strip again).
  const int64_t groups = std::clamp<int64_t>((4 * pool.num_threads() + strips - 1) / strips, 1, m_blocks);
  const int64_t per_group = (m_blocks + groups - 1) / groups;
  pool.parallel_for(strips * groups, 1, [&](int64_t begin, int64_t end) {
    StripBuffers& buf = t_strip;
    grow(buf);
    unit.begin();
    float c[kBlock * kBlock] = {};  // [32, 32]: a block that is not stored straight into y
    for (int64_t i = begin; i < end; ++i) {
      const int64_t j = i / groups, g = i % groups;
      pack_into(j, buf, buf.strip.data());
      for (int64_t mb = g * per_group; mb < std::min(m_blocks, (g + 1) * per_group); ++mb)
        run_block(buf.strip.data(), j, mb, c);
    }
    unit.end();
  });
}

void linear_bf16_tiles(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const TileWeights& w,
                       int64_t N, const float* bias, TileOut mode, void* out, int64_t ldo, TileUnit tile_unit,
                       Buffer& scratch) {
  if (M <= 0 || N <= 0) return;
  scratch.reserve(static_cast<size_t>(bf16_tiles_x_size(M, K)) * sizeof(uint16_t));
  uint16_t* xb = scratch.data<uint16_t>();
  bf16_tiles_input(pool, x, M, K, ldx, xb);
  linear_bf16_tiles_in(pool, xb, M, K, w, N, bias, mode, out, ldo, tile_unit);
}

}  // namespace lmrt::cpu
