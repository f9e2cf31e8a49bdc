// linear_bf16_tiles: the bf16 GEMM's packing, blocking and threading (baseline-compiled), the tile
// unit's software model (scalar::bf16_tile_block), and TileUnit (tiles.h). The AMX code itself is
// in linear_bf16_amx.cpp (compiled with -mamx-tile -mamx-bf16).
//
// Blocking: C is computed in 32 x 32 blocks (2 x 2 tiles of 16 x 16 fp32): for each 32-wide
// K step, 2 A tiles (32 rows of x as bf16) and 2 B tiles (32 outputs of packed w), 4 dot
// products. x is converted once per call into a zero-padded [Mp, Kp] bf16 workspace.
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/tiles.h"

namespace lmrt::cpu {

namespace {

constexpr int64_t kTile = 16;   // tile rows, and fp32 columns of a C tile
constexpr int64_t kStep = 32;   // bf16 elements of K per tile row
constexpr int64_t kBlock = 32;  // rows / columns of C per work item (2 x 2 tiles)

int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

// The tile unit's TDPBF16PS on one 16 x 16 C tile, as the SDM defines it: for each row m,
// pair p and column n, C[m][n] += A[m][2p] * B[p][2n], then C[m][n] += A[m][2p+1] * B[p][2n+1]
// (products of bf16 are exact in fp32; each sum rounds to nearest even). The hardware flushes
// denormals, which this model does not: the tests' tolerance covers that.
void emulated_dp(float* c, int64_t ldc, const uint16_t* a, int64_t lda, const uint16_t* b) {  // c [16, 16], a [16, lda], b [16, 32]
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
                             const float* init, int64_t ldi, float* c, int64_t ldc) {
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

TileUnit::TileUnit(bool emulate, const char* op) : emulate_(emulate), block_(scalar::bf16_tile_block) {
  if (emulate) return;
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  if (!amx_available())
    throw std::runtime_error(std::string(op) + ": this CPU (or OS) has no AMX-BF16; use the fp32 path instead");
  block_ = amx::bf16_block;
#else
  throw std::runtime_error(std::string(op) + ": this build has no AMX code (compiler too old?)");
#endif
}

void TileUnit::begin() const {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  if (!emulate_) amx::configure_tiles();
#endif
}

void TileUnit::end() const {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AMX)
  if (!emulate_) amx::release_tiles();
#endif
}

int64_t bf16_tile_packed_size(int64_t N, int64_t K) { return round_up(N, kBlock) * round_up(K, kStep); }

int64_t bf16_tiles_x_size(int64_t M, int64_t K) { return round_up(M, kBlock) * round_up(K, kStep); }

void bf16_tile_pack(const void* w, DType wdt, int64_t N, int64_t K, uint16_t* out, bool pair_halves) {
  if (pair_halves && N % (2 * kBlock))
    throw std::invalid_argument("bf16_tile_pack: pair_halves needs N a multiple of 64, got " + std::to_string(N));
  const int64_t Np = round_up(N, kBlock), steps = round_up(K, kStep) / kStep;
  // out[((nb * steps + s) * 16 + p) * 32 + 2 * n + j] = w[row(nb, n), s * 32 + 2 * p + j], where row(nb, n) =
  // nb * 16 + n, or with pair_halves (nb / 2) * 16 + n from the first half of w (nb even), the second (nb odd).
  for (int64_t nb = 0; nb < Np / kTile; ++nb)
    for (int64_t s = 0; s < steps; ++s)
      for (int64_t p = 0; p < kTile; ++p)
        for (int64_t n = 0; n < kTile; ++n)
          for (int64_t j = 0; j < 2; ++j) {
            const int64_t row = pair_halves ? (nb % 2) * (N / 2) + (nb / 2) * kTile + n : nb * kTile + n;
            const int64_t col = s * kStep + 2 * p + j;
            uint16_t v = 0;
            if (row < N && col < K)
              v = wdt == DType::BF16 ? static_cast<const uint16_t*>(w)[row * K + col]
                                     : f32_to_bf16_bits(static_cast<const float*>(w)[row * K + col]);
            out[((nb * steps + s) * kTile + p) * 32 + 2 * n + j] = v;
          }
}

void bf16_tiles_input(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, uint16_t* xb) {
  const ToBf16Fn to_bf16 = to_bf16_fn();
  const int64_t Mp = round_up(M, kBlock), Kp = round_up(K, kStep);
  pool.parallel_for(Mp, 8, [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      uint16_t* row = xb + m * Kp;  // [Kp]
      const int64_t k_end = m < M ? K : 0;
      to_bf16(x + m * ldx, k_end, row);
      std::fill(row + k_end, row + Kp, uint16_t{0});
    }
  });
}

void linear_bf16_tiles_in(ThreadPool& pool, const uint16_t* xb, int64_t M, int64_t K, const uint16_t* packed,
                          int64_t N, const float* bias, TileOut mode, void* out, int64_t ldo, bool emulate) {
  if (M <= 0 || N <= 0) return;
  if (mode == TileOut::SiluMul && N % (2 * kBlock))
    throw std::invalid_argument("linear_bf16_tiles_in: SiluMul needs N a multiple of 64, got " + std::to_string(N));
  const TileUnit unit(emulate, "linear_bf16_tiles");
  const TileBlockFn block = unit.block();
  SiluMulPairsFn silu_mul = scalar::silu_mul_pairs;
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) silu_mul = avx512::silu_mul_pairs;
#endif
  float* y = static_cast<float*>(out);
  uint16_t* act = static_cast<uint16_t*>(out);
  const int64_t Mp = round_up(M, kBlock), Kp = round_up(K, kStep), steps = Kp / kStep;
  const int64_t m_items = Mp / kBlock, n_items = round_up(N, kBlock) / kBlock;
  // Items that share a W block are adjacent, so a thread's chunk reuses it from cache.
  pool.parallel_for(m_items * n_items, 1, [&](int64_t begin, int64_t end) {
    unit.begin();
    float c[kBlock * kBlock];  // [32, 32]: a block that is not stored straight into y
    for (int64_t i = begin; i < end; ++i) {
      const int64_t m0 = (i % m_items) * kBlock, nb = (i / m_items) * 2;  // nb: first 16-output block
      const int64_t n0 = nb * kTile;
      const uint16_t* a = xb + m0 * Kp;
      const uint16_t* b0 = packed + nb * steps * kTile * 32;
      const uint16_t* b1 = b0 + steps * kTile * 32;
      if (mode == TileOut::SiluMul) {  // all 32 rows: the padding rows give finite values the next product drops
        block(a, Kp, b0, b1, steps, bias ? bias + n0 : nullptr, 0, c, kBlock);
        silu_mul(c, kBlock, act + m0 * ldo + n0 / 2, ldo);
        continue;
      }
      const bool whole = m0 + kBlock <= M && n0 + kBlock <= N;
      float* yb = y + m0 * ldo + n0;
      if (whole && mode == TileOut::Store) {  // the tiles store straight into y
        block(a, Kp, b0, b1, steps, bias ? bias + n0 : nullptr, 0, yb, ldo);
        continue;
      }
      if (whole && !bias) {  // Add: the tiles start from y and store back
        block(a, Kp, b0, b1, steps, yb, ldo, yb, ldo);
        continue;
      }
      block(a, Kp, b0, b1, steps, nullptr, 0, c, kBlock);
      for (int64_t m = m0; m < std::min(M, m0 + kBlock); ++m)
        for (int64_t n = n0; n < std::min(N, n0 + kBlock); ++n) {
          const float v = c[(m - m0) * kBlock + (n - n0)] + (bias ? bias[n] : 0.0f);
          y[m * ldo + n] = mode == TileOut::Add ? y[m * ldo + n] + v : v;
        }
    }
    unit.end();
  });
}

void linear_bf16_tiles(ThreadPool& pool, const float* x, int64_t M, int64_t K, int64_t ldx, const uint16_t* packed,
                       int64_t N, const float* bias, float* y, int64_t ldy, bool emulate, uint16_t* x_bf16) {
  if (M <= 0 || N <= 0) return;
  const TileUnit unit(emulate, "linear_bf16_tiles");  // refuses before any work
  std::unique_ptr<uint16_t[]> own;
  if (!x_bf16) {
    own.reset(new uint16_t[static_cast<size_t>(bf16_tiles_x_size(M, K))]);
    x_bf16 = own.get();
  }
  bf16_tiles_input(pool, x, M, K, ldx, x_bf16);
  linear_bf16_tiles_in(pool, x_bf16, M, K, packed, N, bias, TileOut::Store, y, ldy, emulate);
}

}  // namespace lmrt::cpu
