// 4-bit weights x int8 activations, written once against the vector API of simd_avx2.h / simd_avx512.h plus the
// int8 primitives that each ISA file defines before including this (linear_w4a8_avx2.cpp says what they do):
//   BVec load_blocks(p, nb)       nb * 16 bytes (nb <= kStepBlocks), zeros beyond
//   void split_nibbles(c, lo, hi) the low and the high nibble of each byte, as bytes
//   BVec dot4(acc, u, s)          int32 lane l += sum_{j<4} u8 u[4l + j] * s8 s[4l + j] (exact)
//   Vec to_float(BVec), Vec spread(Vec v, BVec idx) (lane l = v[idx[l]]), BVec lane_index(const int32_t*)
//   float amax32(x)               max |x| over 32 floats
//   int quant16(x, id, out)       out[i] = round_half_even(x[i] * id) for 16 floats; returns their sum
// Raw pointers and intrinsics only (see isa_kernels.h); included inside the ISA's namespace, never elsewhere.

namespace {

constexpr int kStepBlocks = kLanes / 4;  // blocks of 32 inputs per step: one vector of codes (16 bytes a block)
constexpr int kChunkBlocks = 4;          // Q8Rows' chunk
constexpr int kStepsPerChunk = kChunkBlocks / kStepBlocks;

// (no std::min here: an STL template instantiated in an ISA file could be linked into another path)
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Lane l of a step's vector holds a partial sum of block first + l / 4; these are the indices, relative to the
// step's first block (or group), of the d (shift 0) or scale (shift log2(blocks per group)) each lane takes.
// A step starts at block s * kStepBlocks of its chunk, and a group (1, 2 or 4 blocks) never straddles a chunk.
struct StepIndex {
  BVec block;                  // lane -> block
  BVec group[kStepsPerChunk];  // lane -> group, per step of a chunk
};

inline StepIndex step_index(int shift) {
  StepIndex si;
  alignas(64) int32_t idx[kLanes];
  for (int l = 0; l < kLanes; ++l) idx[l] = l / 4;
  si.block = lane_index(idx);
  for (int s = 0; s < kStepsPerChunk; ++s) {
    const int first = s * kStepBlocks;
    for (int l = 0; l < kLanes; ++l) idx[l] = ((first + l / 4) >> shift) - (first >> shift);
    si.group[s] = lane_index(idx);
  }
  return si;
}

inline Vec load_n(const float* p, int n) { return n == kLanes ? load(p) : load_tail(p, tail_mask(n)); }

// How many tiles of C rows ahead the kernel prefetches W (decode streams it once from memory): a later tile's
// codes, scales and mins, in order, spread over this tile's steps (a prefetch never faults).
constexpr int kPrefetchTiles = 4;
inline void prefetch_range(const void* p, int64_t bytes) {
  for (int64_t off = 0; off < bytes; off += 64) prefetch(static_cast<const char*>(p) + off);
}

// R rows of x (from row m) against C rows of W (codes/scales/mins at the first of them).
template <int R, int C>
inline void kernel(const Q8Rows& x, int64_t m, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
                   int shift, const StepIndex& si, const float* bias, float* y, int64_t ldy) {
  const int64_t nblocks = K / 32, G = nblocks >> shift, kb = K / 2;
  Vec acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = zero();
  for (int64_t c0 = 0; c0 < nblocks; c0 += kChunkBlocks) {
    const int nbc = static_cast<int>(min64(kChunkBlocks, nblocks - c0));
    for (int s = 0; s * kStepBlocks < nbc; ++s) {
      const int64_t b0 = c0 + s * kStepBlocks;
      const int nb = min64(kStepBlocks, nbc - s * kStepBlocks);
      BVec alo[R], ahi[R];
      Vec dv[R];
      for (int r = 0; r < R; ++r) {
        const int8_t* a = x.q + (m + r) * x.ldq + c0 * 32 + s * kStepBlocks * 16;
        alo[r] = load_blocks(a, nb);
        ahi[r] = load_blocks(a + nbc * 16, nb);
        dv[r] = spread(load_n(x.d + (m + r) * nblocks + b0, nb), si.block);
      }
      const int64_t g0 = b0 >> shift;
      const int ng = static_cast<int>(((b0 + nb - 1) >> shift) - g0 + 1);
      prefetch_range(codes + kPrefetchTiles * C * kb + b0 * 16 * C, C * nb * 16);
      if (s == 0) {  // a chunk's scales and mins (ng groups of each row), once a chunk
        const int64_t gc = c0 >> shift, nbytes = C * ((((c0 + nbc - 1) >> shift) - gc + 1) * 4);
        prefetch_range(scales + kPrefetchTiles * C * G + gc * C, nbytes);
        prefetch_range(mins + kPrefetchTiles * C * G + gc * C, nbytes);
      }
      for (int c = 0; c < C; ++c) {
        BVec lo, hi;
        split_nibbles(load_blocks(codes + c * kb + b0 * 16, nb), lo, hi);
        const Vec sv = spread(load_n(scales + c * G + g0, ng), si.group[s]);
        for (int r = 0; r < R; ++r) {
          const BVec dot = dot4(dot4(zero_b(), lo, alo[r]), hi, ahi[r]);
          acc[r][c] = fmadd(to_float(dot), mul(dv[r], sv), acc[r][c]);
        }
      }
    }
  }
  for (int64_t g = 0; g < G; g += kLanes) {  // the mins: sum_g min[n, g] * xs[m, g]
    const int n = static_cast<int>(min64(kLanes, G - g));
    for (int r = 0; r < R; ++r) {
      const Vec xs = load_n(x.xs + (m + r) * G + g, n);
      for (int c = 0; c < C; ++c) acc[r][c] = fmadd(load_n(mins + c * G + g, n), xs, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) y[r * ldy + c] = hsum(acc[r][c]) + (bias ? bias[c] : 0.0f);
}

template <int R, int C>
inline void row_block(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins,
                      int shift, const StepIndex& si, const float* bias, float* y, int64_t ldy, int64_t m, int64_t n0,
                      int64_t n1) {
  const int64_t G = (K / 32) >> shift, kb = K / 2;
  int64_t n = n0;
  for (; n + C <= n1; n += C)
    kernel<R, C>(x, m, K, codes + n * kb, scales + n * G, mins + n * G, shift, si, bias ? bias + n : nullptr,
                 y + m * ldy + n, ldy);
  for (; n < n1; ++n)
    kernel<R, 1>(x, m, K, codes + n * kb, scales + n * G, mins + n * G, shift, si, bias ? bias + n : nullptr,
                 y + m * ldy + n, ldy);
}

// w4a8_tile (isa_kernels.h). C4, C3, C2, C1: W rows per block of 4, 3, 2, 1 rows of x.
template <int C4, int C3, int C2, int C1>
void tile(const Q8Rows& x, int64_t K, const uint8_t* codes, const float* scales, const float* mins, int group_size,
          const float* bias, float* y, int64_t ldy, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int shift = group_size == 32 ? 0 : group_size == 64 ? 1 : 2;
  const StepIndex si = step_index(shift);
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4) row_block<4, C4>(x, K, codes, scales, mins, shift, si, bias, y, ldy, m, n0, n1);
  if (m1 - m == 3) row_block<3, C3>(x, K, codes, scales, mins, shift, si, bias, y, ldy, m, n0, n1);
  if (m1 - m == 2) row_block<2, C2>(x, K, codes, scales, mins, shift, si, bias, y, ldy, m, n0, n1);
  if (m1 - m == 1) row_block<1, C1>(x, K, codes, scales, mins, shift, si, bias, y, ldy, m, n0, n1);
}

// q8_quantize (isa_kernels.h): the same bits as scalar::q8_quantize (max, fp32 reciprocal and product, round half
// even; a group's sum of d * float(code sum) as fmas in run order). runs (AVX-512: quant_runs16, W = 16; AVX2:
// quant_runs8, W = 8), where given, takes W runs at once (W a multiple of 4: whole chunks; and of the runs a group,
// 1, 2 or 4, so those W runs are whole groups) while W are left, their maxima and sums reduced across registers and
// their group sums formed there.
template <int W = 1, class Runs = std::nullptr_t>
inline void quantize(const float* x, int64_t ldx, int64_t K, int group_size, int64_t m0, int64_t m1, int8_t* q,
                     int64_t ldq, float* d, float* xs, Runs runs = nullptr) {
  static_assert(W == 1 || W % 4 == 0, "W runs at once must be whole chunks of 4 runs");
  const int64_t nblocks = K / 32, bpg = group_size / 32;
  for (int64_t m = m0; m < m1; ++m) {
    const float* xr = x + m * ldx;
    int8_t* qr = q + m * ldq;
    float* dr = d + m * nblocks;
    float* xsr = xs + m * (nblocks / bpg);
    int64_t b = 0, g = 0;
    if constexpr (W > 1) {
      for (; nblocks - b >= W; b += W, g += W / bpg)  // (b a multiple of W: whole chunks, whole groups)
        runs(xr + b * 32, qr + b * 32, dr + b, static_cast<int>(bpg), xsr + g);
    }
    float group = 0.0f;
    int64_t in_group = 0;  // (a counter, not b % bpg: an integer division a block cost 4% of a prompt's time)
    for (; b < nblocks; ++b) {
      const int64_t c0 = b / 4 * 4;
      const int64_t nbc = min64(4, nblocks - c0), j = b - c0;
      int8_t* lo = qr + c0 * 32 + j * 16;
      int8_t* hi = qr + c0 * 32 + nbc * 16 + j * 16;
      const float db = amax32(xr + b * 32) / 127.0f;
      int32_t sum = 0;
      if (db > 0.0f) {
        const float id = 1.0f / db;  // (a product per input, not a division: llama.cpp's Q8 quantizer does the same)
        sum = quant16(xr + b * 32, id, lo) + quant16(xr + b * 32 + 16, id, hi);
      } else {
        for (int i = 0; i < 16; ++i) lo[i] = hi[i] = 0;
      }
      dr[b] = db;
      group = fmaf(db, static_cast<float>(sum), group);  // fused on every path (ISA files may contract a * b + c)
      if (++in_group == bpg) {
        xsr[g++] = group;
        group = 0.0f;
        in_group = 0;
      }
    }
  }
}

}  // namespace
