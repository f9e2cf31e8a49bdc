// Paged attention on the GPU (ops.h states the contract; cpu/attention.cpp's scalar kernel is the reference): one warp
// per (row, query head), the cache read in position order with an online softmax, quantized rows widened in registers
// (x = code * scale + offset, as the CPU forms it; int4 K per channel: a block's codes with its channels' scales once
// the query sees the whole block, else the block's staged int8 rows, as cpu::kv_reads_sealed says). A row that sees
// more than kAttnSplitKeys positions splits them over up to kAttnSplits warps (equal runs of at least kAttnSplitKeys),
// each leaving its running max, denominator and sums in the scratch, which a second kernel combines; a shorter row runs
// in one warp, as it did before the split. Which a row takes depends on its own position only, so a row's result does
// not depend on the rows beside it. A prompt chunk runs in tiles (attend_tile): K/V rows read into shared memory once
// for up to 64 rows, each row's arithmetic the one-warp kernels' (softmax_step), so the bits do not depend on the
// path either. Several heads of a KV group per warp and tensor-core (flash-attention) arithmetic for the prompt's
// tiles come next.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/kv_quant.cuh"
#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kMaxDimsPerLane = 8;  // head_dim <= 256

// Dim i of cache row `row` as fp32.
struct RowReader {
  const void* cache;
  const uint16_t* scales;
  const uint8_t* zeros;
  KVDType dt;
  int hd;
  __device__ float operator()(int64_t row, int i, float s, float m) const {
    switch (dt) {
      case KVDType::F32: return static_cast<const float*>(cache)[row * hd + i];
      case KVDType::BF16:
        return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(cache)[row * hd + i]) << 16);
      case KVDType::I8: return fmaf(static_cast<float>(static_cast<const uint8_t*>(cache)[row * hd + i]), s, m);
      default: {  // I4: byte j of each run of 32 dims holds dim j (low nibble) and j + 16 (high)
        const uint8_t b = static_cast<const uint8_t*>(cache)[row * (hd / 2) + i / 32 * 16 + i % 16];
        return fmaf(static_cast<float>(i % 32 < 16 ? b & 0x0f : b >> 4), s, m);
      }
    }
  }
  __device__ void params(int64_t row, float* s, float* m) const {
    if (dt == KVDType::I8 || dt == KVDType::I4) {
      *s = f16_bits_to_f32(scales[row]);
      *m = -static_cast<float>(zeros[row]) * *s;
    } else {
      *s = *m = 0.0f;
    }
  }
};

__device__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The online softmax over positions [j0, j1) of row t's sequence for one query head: the running max, the
// denominator and this lane's dims of the weighted sum of V.
struct Partial {
  float run_max, denom, acc[kMaxDimsPerLane];
};

// Lane `lane`'s part of q . k_j for an I4Channel K: the block's int4 codes and per-channel (scale, zero) when the
// query at position p sees all of the block (cpu::kv_reads_sealed), else the staged I8 row.
__device__ float channel_key_dot(const KVLayer& kv, const float* qv, const int32_t* table, int kv_head, int j, int p) {
  const int lane = threadIdx.x, hd = kv.head_dim, bs = kv.block_size, b = j / bs;
  const int64_t block = table[b];
  float part = 0.0f;
  if (p >= (b + 1) * bs - 1) {
    const uint8_t* codes =
        static_cast<const uint8_t*>(kv.k) + ((block * kv.n_kv_heads + kv_head) * bs + j % bs) * (hd / 2);
    const int64_t ch = (block * kv.n_kv_heads + kv_head) * hd;
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i >= hd) break;
      const uint8_t byte = codes[i / 32 * 16 + i % 16];
      const float s = f16_bits_to_f32(kv.k_scales[ch + i]), m = -static_cast<float>(kv.k_zeros[ch + i]) * s;
      part = fmaf(qv[d], fmaf(static_cast<float>(i % 32 < 16 ? byte & 0x0f : byte >> 4), s, m), part);
    }
  } else {
    const RowReader S{kv.k_stage, kv.k_stage_scales, kv.k_stage_zeros, KVDType::I8, hd};
    const int64_t row = (static_cast<int64_t>(kv.stage_of_block[block]) * kv.n_kv_heads + kv_head) * bs + j % bs;
    float s, m;
    S.params(row, &s, &m);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < hd) part = fmaf(qv[d], S(row, i, s, m), part);
    }
  }
  return part;
}

// One key's step of the online softmax (score sc, this lane's dims of the key's V row from v(i)), in the order
// every kernel here keeps, with rounding stated (no contraction), so the tile kernel gives the one-warp kernels' bits.
template <int DPL, class VAt>
__device__ __forceinline__ void softmax_step(float sc, float& run_max, float& denom, float* acc, VAt v) {
  if (sc > run_max) {
    const float corr = expf(run_max - sc);  // 0 on the first key
    denom = __fmul_rn(denom, corr);
    for (int d = 0; d < DPL; ++d) acc[d] = __fmul_rn(acc[d], corr);
    run_max = sc;
  }
  const float pr = expf(sc - run_max);
  denom = __fadd_rn(denom, pr);
  for (int d = 0; d < DPL; ++d) {
    const int i = threadIdx.x % 32 + 32 * d;
    acc[d] = fmaf(pr, v(i, d), acc[d]);
  }
}

__device__ void attend_range(const KVLayer& kv, const float* qh, const int32_t* table, int kv_head, float scale, int j0,
                             int j1, int p, Partial& st) {
  const int lane = threadIdx.x, hd = kv.head_dim, bs = kv.block_size;
  const RowReader K{kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, hd};
  const RowReader V{kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, hd};
  float qv[kMaxDimsPerLane];
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    qv[d] = i < hd ? qh[i] : 0.0f;
    st.acc[d] = 0.0f;
  }
  st.run_max = -INFINITY;
  st.denom = 0.0f;
  for (int j = j0; j < j1; ++j) {
    const int64_t row = (static_cast<int64_t>(table[j / bs]) * kv.n_kv_heads + kv_head) * bs + j % bs;
    float part = 0.0f;
    if (kv.k_dtype == KVDType::I4Channel) {
      part = channel_key_dot(kv, qv, table, kv_head, j, p);
    } else {
      float ks, km;
      K.params(row, &ks, &km);
      for (int d = 0; d < kMaxDimsPerLane; ++d) {
        const int i = lane + 32 * d;
        if (i < hd) part = fmaf(qv[d], K(row, i, ks, km), part);
      }
    }
    const float sc = __fmul_rn(warp_sum(part), scale);
    float vs, vm;
    V.params(row, &vs, &vm);
    softmax_step<kMaxDimsPerLane>(sc, st.run_max, st.denom, st.acc,
                                  [&](int i, int) { return i < hd ? V(row, i, vs, vm) : 0.0f; });
  }
}

// How row t's positions 0..p split: runs of `chunk` (at least kAttnSplitKeys), `splits` of them (<= kAttnSplits).
__device__ void split_of(int p, int* chunk, int* splits) {
  const int n = p + 1;
  const int c = (n + kAttnSplits - 1) / kAttnSplits;
  *chunk = c > kAttnSplitKeys ? c : kAttnSplitKeys;
  *splits = (n + *chunk - 1) / *chunk;
}

// Rows that see at most kAttnSplitKeys positions: the whole softmax in one warp.
__global__ void attend(KVLayer kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                       const int32_t* tables, const int64_t* table_start, int group, float scale,
                       const int32_t* tiled) {
  const int t = blockIdx.x, head = blockIdx.y, lane = threadIdx.x;
  const int p = pos[t];
  if (p + 1 > kAttnSplitKeys || (tiled && tiled[t])) return;  // attend_split's, or attend_tile's
  const int hd = kv.head_dim;
  Partial st;
  attend_range(kv, q + t * ldq + static_cast<int64_t>(head) * hd, tables + table_start[t], head / group, scale, 0,
               p + 1, p, st);
  float* o = out + t * ldo + static_cast<int64_t>(head) * hd;
  const float inv = 1.0f / st.denom;
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < hd) o[i] = st.acc[d] * inv;
  }
}

// Longer rows, one warp per (row, head, run): its partial softmax into part[((t * n_heads + head) * kAttnSplits +
// split) * (head_dim + 2) ..]: max, denominator, then the head_dim sums.
__global__ void attend_split(KVLayer kv, const float* q, int64_t ldq, const int32_t* pos, const int32_t* tables,
                             const int64_t* table_start, int group, float scale, float* part, const int32_t* tiled) {
  const int t = blockIdx.x, head = blockIdx.y, split = blockIdx.z, lane = threadIdx.x, n_heads = gridDim.y;
  const int p = pos[t];
  if (p + 1 <= kAttnSplitKeys || (tiled && tiled[t])) return;  // attend's, or attend_tile's
  int chunk, splits;
  split_of(p, &chunk, &splits);
  if (split >= splits) return;
  const int hd = kv.head_dim, j0 = split * chunk, j1 = min(p + 1, j0 + chunk);
  Partial st;
  attend_range(kv, q + t * ldq + static_cast<int64_t>(head) * hd, tables + table_start[t], head / group, scale, j0, j1,
               p, st);
  float* w = part + ((static_cast<int64_t>(t) * n_heads + head) * kAttnSplits + split) * (hd + 2);
  if (lane == 0) {
    w[0] = st.run_max;
    w[1] = st.denom;
  }
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < hd) w[2 + i] = st.acc[d];
  }
}

// The runs of a long row combined in run order: each rescaled to the largest max, out = sums / denominator.
__global__ void attend_combine(const float* part, const int32_t* pos, int head_dim, float* out, int64_t ldo) {
  const int t = blockIdx.x, head = blockIdx.y, lane = threadIdx.x, n_heads = gridDim.y;
  const int p = pos[t];
  if (p + 1 <= kAttnSplitKeys) return;
  int chunk, splits;
  split_of(p, &chunk, &splits);
  const float* w = part + (static_cast<int64_t>(t) * n_heads + head) * kAttnSplits * (head_dim + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, w[s * (head_dim + 2)]);
  float denom = 0.0f, acc[kMaxDimsPerLane] = {};
  for (int s = 0; s < splits; ++s) {
    const float* ws = w + s * (head_dim + 2);
    const float f = expf(ws[0] - m);
    denom = fmaf(ws[1], f, denom);
    for (int d = 0; d < kMaxDimsPerLane; ++d) {
      const int i = lane + 32 * d;
      if (i < head_dim) acc[d] = fmaf(ws[2 + i], f, acc[d]);
    }
  }
  float* o = out + t * ldo + static_cast<int64_t>(head) * head_dim;
  const float inv = 1.0f / denom;
  for (int d = 0; d < kMaxDimsPerLane; ++d) {
    const int i = lane + 32 * d;
    if (i < head_dim) o[i] = acc[d] * inv;
  }
}

// A tile of up to kAttnTileRows consecutive rows of one sequence, one head: 8 warps, each rows
// warp, warp + 8, ..; the K and V rows of kAttnTileKeys positions at a time widened into shared memory once for the
// tile, then each row's keys in order with attend_range's arithmetic (its split runs, when it has them, written to
// the scratch for attend_combine as attend_split writes them). DPL: head_dim / 32 rounded up (<= 4).
constexpr int kAttnTileKeys = 32, kAttnTileWarps = 8, kRowsPerWarp = kAttnTileRows / kAttnTileWarps;

template <int DPL>
__global__ void __launch_bounds__(kAttnTileWarps * 32)
    attend_tile(KVLayer kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                const int32_t* tables, const int64_t* table_start, const int32_t* tiles, int group, float scale,
                float* part) {
  __shared__ float ks[kAttnTileKeys][DPL * 32], vs[kAttnTileKeys][DPL * 32];
  const int row0 = tiles[2 * blockIdx.x], nrows = tiles[2 * blockIdx.x + 1];
  const int head = blockIdx.y, n_heads = gridDim.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int hd = kv.head_dim, bs = kv.block_size, kv_head = head / group;
  const int32_t* table = tables + table_start[row0];
  int last = 0;  // the most positions a row of the tile sees
  for (int k = 0; k < nrows; ++k) last = max(last, pos[row0 + k]);
  const RowReader K{kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, hd};
  const RowReader V{kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, hd};
  // this warp's rows: position, split runs, the running softmax, q
  int p[kRowsPerWarp], chunk[kRowsPerWarp], splits[kRowsPerWarp], run[kRowsPerWarp];
  float run_max[kRowsPerWarp], denom[kRowsPerWarp], acc[kRowsPerWarp][DPL], qv[kRowsPerWarp][DPL];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int k = warp + kAttnTileWarps * r;
    p[r] = k < nrows ? pos[row0 + k] : -1;
    chunk[r] = p[r] + 1;
    splits[r] = 1;
    if (p[r] + 1 > kAttnSplitKeys) split_of(p[r], &chunk[r], &splits[r]);
    run[r] = 0;
    run_max[r] = -INFINITY;
    denom[r] = 0.0f;
    const float* qh = q + static_cast<int64_t>(row0 + k) * ldq + static_cast<int64_t>(head) * hd;
    for (int d = 0; d < DPL; ++d) {
      const int i = lane + 32 * d;
      qv[r][d] = k < nrows && i < hd ? qh[i] : 0.0f;
      acc[r][d] = 0.0f;
    }
  }
  // a row's run of keys done: its partial to the scratch (split rows), its output (the others)
  auto finish_run = [&](int r) {
    const int64_t t = row0 + warp + kAttnTileWarps * r;
    if (splits[r] > 1) {
      float* w = part + ((t * n_heads + head) * kAttnSplits + run[r]) * (hd + 2);
      if (lane == 0) {
        w[0] = run_max[r];
        w[1] = denom[r];
      }
      for (int d = 0; d < DPL; ++d)
        if (lane + 32 * d < hd) w[2 + lane + 32 * d] = acc[r][d];
    } else {
      float* o = out + t * ldo + static_cast<int64_t>(head) * hd;
      const float inv = 1.0f / denom[r];
      for (int d = 0; d < DPL; ++d)
        if (lane + 32 * d < hd) o[lane + 32 * d] = acc[r][d] * inv;
    }
  };
  for (int j0 = 0; j0 <= last; j0 += kAttnTileKeys) {
    __syncthreads();  // the previous keys are used
    for (int e = threadIdx.x; e < kAttnTileKeys * hd; e += kAttnTileWarps * 32) {
      const int jj = e / hd, i = e % hd, j = j0 + jj;
      if (j > last) break;
      const int64_t row = (static_cast<int64_t>(table[j / bs]) * kv.n_kv_heads + kv_head) * bs + j % bs;
      float s, m;
      K.params(row, &s, &m);
      ks[jj][i] = K(row, i, s, m);
      V.params(row, &s, &m);
      vs[jj][i] = V(row, i, s, m);
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int j1 = min(j0 + kAttnTileKeys, p[r] + 1);
      for (int j = j0; j < j1; ++j) {
        if (j == (run[r] + 1) * chunk[r]) {  // a split row's next run starts afresh
          finish_run(r);
          ++run[r];
          run_max[r] = -INFINITY;
          denom[r] = 0.0f;
          for (int d = 0; d < DPL; ++d) acc[r][d] = 0.0f;
        }
        float dot = 0.0f;
        for (int d = 0; d < DPL; ++d)
          if (lane + 32 * d < hd) dot = fmaf(qv[r][d], ks[j - j0][lane + 32 * d], dot);
        const float sc = __fmul_rn(warp_sum(dot), scale);
        const float* vrow = vs[j - j0];
        softmax_step<DPL>(sc, run_max[r], denom[r], acc[r], [&](int i, int) { return i < hd ? vrow[i] : 0.0f; });
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
    if (p[r] >= 0) finish_run(r);
}

}  // namespace

void paged_attention(const KVLayer& kv, const float* q, int64_t ldq, float* out, int64_t ldo, const int32_t* pos,
                     const int32_t* tables, const int64_t* table_start, const int64_t* host_table_start, int64_t T,
                     int n_heads, float scale, float* scratch, void* stream) {
  if (kv.head_dim > 32 * kMaxDimsPerLane) throw std::invalid_argument("paged_attention on CUDA: head_dim above 256");
  if (T <= 0) return;
  const cudaStream_t s = static_cast<cudaStream_t>(stream);
  const int group = n_heads / kv.n_kv_heads, hd = kv.head_dim;
  // Prompt chunks in tiles: the rows of a sequence (consecutive, one table_start) when there are enough of them.
  // The row mask and tile list go to the scratch's tail; a step without such a chunk (decode: what a step graph
  // records) copies nothing.
  int32_t* tiled = nullptr;
  int64_t num_tiles = 0;
  if (host_table_start && hd <= 128 && kv.k_dtype != KVDType::I4Channel) {
    std::vector<int32_t> mask(T, 0), tiles;
    for (int64_t t = 0; t < T;) {
      int64_t e = t + 1;
      while (e < T && host_table_start[e] == host_table_start[t]) ++e;
      if (e - t >= kAttnTileMinRows)
        for (int64_t r = t; r < e; r += kAttnTileRows) {
          tiles.push_back(static_cast<int32_t>(r));
          tiles.push_back(static_cast<int32_t>(std::min<int64_t>(kAttnTileRows, e - r)));
          std::fill(mask.begin() + r, mask.begin() + std::min<int64_t>(r + kAttnTileRows, e), 1);
        }
      t = e;
    }
    num_tiles = static_cast<int64_t>(tiles.size()) / 2;
    if (num_tiles) {
      tiled = reinterpret_cast<int32_t*>(scratch + T * n_heads * kAttnSplits * (hd + 2));
      mask.insert(mask.end(), tiles.begin(), tiles.end());
      const cudaError_t e =
          cudaMemcpyAsync(tiled, mask.data(), mask.size() * sizeof(int32_t), cudaMemcpyHostToDevice, s);
      if (e != cudaSuccess) throw std::runtime_error(std::string("paged_attention tiles: ") + cudaGetErrorString(e));
    }
  }
  const dim3 grid(static_cast<unsigned>(T), static_cast<unsigned>(n_heads));
  attend<<<grid, 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, group, scale, tiled);
  // the long rows (each kernel skips the other's rows: no host knowledge of positions, so a recorded graph holds)
  const dim3 split_grid(static_cast<unsigned>(T), static_cast<unsigned>(n_heads), kAttnSplits);
  attend_split<<<split_grid, 32, 0, s>>>(kv, q, ldq, pos, tables, table_start, group, scale, scratch, tiled);
  if (num_tiles) {
    const dim3 tile_grid(static_cast<unsigned>(num_tiles), static_cast<unsigned>(n_heads));
    const int32_t* tl = tiled + T;
    const int dpl = (hd + 31) / 32;
    if (dpl == 1)
      attend_tile<1><<<tile_grid, kAttnTileWarps * 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, tl,
                                                               group, scale, scratch);
    else if (dpl == 2)
      attend_tile<2><<<tile_grid, kAttnTileWarps * 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, tl,
                                                               group, scale, scratch);
    else if (dpl == 3)
      attend_tile<3><<<tile_grid, kAttnTileWarps * 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, tl,
                                                               group, scale, scratch);
    else
      attend_tile<4><<<tile_grid, kAttnTileWarps * 32, 0, s>>>(kv, q, ldq, out, ldo, pos, tables, table_start, tl,
                                                               group, scale, scratch);
  }
  attend_combine<<<grid, 32, 0, s>>>(scratch, pos, kv.head_dim, out, ldo);
}

}  // namespace lmrt::cuda
