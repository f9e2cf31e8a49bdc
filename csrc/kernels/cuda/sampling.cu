// Sampling on the GPU (ops.h states the contract): each logits row's token under its RowSampling, common/sampling.h's
// rule (sample_row), so a step copies R token ids to the host instead of R x V logits. One block of 1024 threads a
// row. Every reduction has a fixed shape (a thread's own elements in a fixed order, then a fixed tree), so a row's
// token depends on nothing but its inputs. The rule's steps map onto the block as:
//  - the k-th largest value (top-k): a radix select over the values' order-preserving 32-bit keys, 4 passes of 8
//    bits with a 256-bin histogram of counts;
//  - the top-p cut: the same radix walk over histograms of the candidates' probability mass in 2^-62 fixed point
//    (integer sums: exact in any order), down to the value at which the mass before it reaches top_p;
//  - ties at a cut (top-k's k-th value, top-p's last value) ranked by token id: each thread a contiguous run of ids,
//    a block scan of their counts;
//  - the draw: each thread's run of ids summed in id order, a block scan, and the first token past u times the total.
// The host rule sums probabilities in double in its own order; this kernel's sums are other roundings of the same
// values, so a token can differ only where u (or top_p) falls within ~1e-16 of a boundary.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr float kNegligible = 50.0f;              // common/sampling.h's kNegligibleLogit
constexpr double kFixed = 4611686018427387904.0;  // 2^62: a probability as an integer

__device__ __forceinline__ float neg_inf() { return __int_as_float(static_cast<int>(0xff800000u)); }
__device__ __forceinline__ float pos_inf() { return __int_as_float(0x7f800000); }

// A float's 32-bit key: keys order as the floats do (-0 below +0: the kernel writes no -0).
__device__ __forceinline__ uint32_t key_of(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
__device__ __forceinline__ float float_of(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// The better of two (value, index) candidates: the larger value, the smaller index on a tie (the first maximum).
__device__ __forceinline__ void keep_best(float& v, int64_t& i, float v2, int64_t i2) {
  if (v2 > v || (v2 == v && i2 < i)) {
    v = v2;
    i = i2;
  }
}

struct Shared {
  unsigned long long hist[256];
  double d[kWarps];
  long long n[kWarps];
  float f[kWarps];
  int64_t idx[kWarps];
  uint32_t sel;
  unsigned long long carry;
  int found;
};

// Block-wide sums, maxima and scans: every thread calls them and every thread gets the result.
__device__ double block_sum(double v, Shared& sh) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
  if ((threadIdx.x & 31) == 0) sh.d[threadIdx.x >> 5] = v;
  __syncthreads();
  double s = 0.0;
  for (int w = 0; w < kWarps; ++w) s += sh.d[w];
  __syncthreads();
  return s;
}

__device__ long long block_sum(long long v, Shared& sh) {
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, off);
  if ((threadIdx.x & 31) == 0) sh.n[threadIdx.x >> 5] = v;
  __syncthreads();
  long long s = 0;
  for (int w = 0; w < kWarps; ++w) s += sh.n[w];
  __syncthreads();
  return s;
}

__device__ float block_max(float v, Shared& sh) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, off));
  if ((threadIdx.x & 31) == 0) sh.f[threadIdx.x >> 5] = v;
  __syncthreads();
  float m = sh.f[0];
  for (int w = 1; w < kWarps; ++w) m = fmaxf(m, sh.f[w]);
  __syncthreads();
  return m;
}

// The sum of v over the threads before this one (thread order), and the total.
template <typename T>
__device__ T block_exclusive_scan(T v, T* warp_totals, T& total) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  T inc = v;
  for (int off = 1; off < 32; off <<= 1) {
    const T up = __shfl_up_sync(0xFFFFFFFFu, inc, off);
    if (lane >= off) inc += up;
  }
  if (lane == 31) warp_totals[warp] = inc;
  __syncthreads();
  T before = 0;
  total = 0;
  for (int w = 0; w < kWarps; ++w) {
    if (w < warp) before += warp_totals[w];
    total += warp_totals[w];
  }
  __syncthreads();
  return before + inc - v;
}

// This thread's run of ids [lo, hi) for the scans in id order.
struct Run {
  int64_t lo, hi;
  __device__ explicit Run(int64_t V) {
    const int64_t per = (V + kThreads - 1) / kThreads;
    lo = min(V, per * threadIdx.x);
    hi = min(V, lo + per);
  }
};

// Among the values equal to v, in id order, keep the first `keep` and set the others to -inf.
__device__ void keep_first_ties(float* s, int64_t V, float v, long long keep, Shared& sh) {
  const Run run(V);
  long long mine = 0;
  for (int64_t i = run.lo; i < run.hi; ++i) mine += s[i] == v;
  long long total;
  long long rank = block_exclusive_scan(mine, sh.n, total);
  for (int64_t i = run.lo; i < run.hi; ++i)
    if (s[i] == v) {
      if (rank >= keep) s[i] = neg_inf();
      ++rank;
    }
  __syncthreads();
}

// A candidate's probability: its weight exp(s - best) in double over the candidates' sum.
__device__ __forceinline__ double prob_of(float s, float best, double sum) {
  return exp(static_cast<double>(s) - static_cast<double>(best)) / sum;
}
__device__ __forceinline__ unsigned long long fixed_of(double p) { return __double2ull_rn(p * kFixed); }

// The radix walk from the top over the keys of s (elements with include(i)): 4 passes of 8 bits, each a histogram
// of weight(i) per bin among the elements whose key starts with the bits chosen so far, then the bin where the
// running total from the top (carry + the bins above) first reaches `want`. Returns false where the total never
// does; else the key (`key`) and the total of the elements with a larger key (`above`).
template <class Weight>
__device__ bool radix_walk(const float* s, int64_t V, unsigned long long want, Weight weight, Shared& sh, uint32_t& key,
                           unsigned long long& above) {
  uint32_t prefix = 0, mask = 0;
  if (threadIdx.x == 0) {
    sh.carry = 0;
    sh.found = 1;
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = threadIdx.x; b < 256; b += kThreads) sh.hist[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < V; i += kThreads) {
      const uint32_t k = key_of(s[i]);
      if ((k & mask) != prefix) continue;
      const unsigned long long w = weight(s[i]);
      if (w) atomicAdd(&sh.hist[(k >> shift) & 255u], w);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      unsigned long long cum = sh.carry;
      int b = 255;
      for (; b >= 0; --b) {
        if (sh.hist[b] && cum + sh.hist[b] >= want) break;
        cum += sh.hist[b];
      }
      if (b < 0) {
        sh.found = 0;
      } else {
        sh.sel = static_cast<uint32_t>(b);
        sh.carry = cum;
      }
    }
    __syncthreads();
    if (!sh.found) return false;
    prefix |= sh.sel << shift;
    mask |= 255u << shift;
    __syncthreads();
  }
  key = prefix;
  above = sh.carry;
  return true;
}

__global__ void __launch_bounds__(kThreads)
    sample_rows(float* __restrict__ logits, int64_t V, const RowSampling* __restrict__ rows,
                const int32_t* __restrict__ ids, int32_t* __restrict__ out) {
  __shared__ Shared sh;
  float* s = logits + static_cast<int64_t>(blockIdx.x) * V;
  const RowSampling p = rows[blockIdx.x];
  const int tid = threadIdx.x;

  // NaN or +inf anywhere (before the penalties, as the engine checks): no token.
  long long bad = 0;
  for (int64_t i = tid; i < V; i += kThreads) bad += !(s[i] < pos_inf());
  if (block_sum(bad, sh)) {
    if (tid == 0) out[blockIdx.x] = -1;
    return;
  }
  // The penalty over the context's distinct tokens, then the bans.
  if (p.repetition_penalty != 1.f)
    for (int64_t j = p.penalized_begin + tid; j < p.penalized_end; j += kThreads) {
      const int32_t t = ids[j];
      if (t < 0 || t >= V) continue;
      const float x = s[t];
      s[t] = x > 0 ? x / p.repetition_penalty : x * p.repetition_penalty;
    }
  __syncthreads();
  for (int64_t j = p.banned_begin + tid; j < p.banned_end; j += kThreads) {
    const int32_t t = ids[j];
    if (t >= 0 && t < V) s[t] = neg_inf();
  }
  __syncthreads();

  if (p.temperature <= 0.f) {  // greedy: the first maximum (a row of -inf gives 0)
    float v = neg_inf();
    int64_t idx = INT64_MAX;
    for (int64_t i = tid; i < V; i += kThreads) keep_best(v, idx, s[i], i);
    for (int off = 16; off > 0; off >>= 1) {
      const float v2 = __shfl_xor_sync(0xFFFFFFFFu, v, off);
      const int64_t i2 = __shfl_xor_sync(0xFFFFFFFFu, idx, off);
      keep_best(v, idx, v2, i2);
    }
    if ((tid & 31) == 0) {
      sh.f[tid >> 5] = v;
      sh.idx[tid >> 5] = idx;
    }
    __syncthreads();
    if (tid == 0) {
      for (int w = 1; w < kWarps; ++w) keep_best(v, idx, sh.f[w], sh.idx[w]);
      out[blockIdx.x] = idx == INT64_MAX ? 0 : static_cast<int32_t>(idx);
    }
    return;
  }

  // Temperature (in place; -0 written as +0, so equal values have one key), and the best.
  float best = neg_inf();
  for (int64_t i = tid; i < V; i += kThreads) {
    float x = s[i] / p.temperature;
    if (x == 0.f) x = 0.f;
    s[i] = x;
    best = fmaxf(best, x);
  }
  best = block_max(best, sh);
  if (best == neg_inf()) {  // every token banned: greedy's answer
    if (tid == 0) out[blockIdx.x] = 0;
    return;
  }
  float floor = best - kNegligible;

  // top-k: the k-th largest value (with repeats), a floor; past k candidates, the ties at it kept by id.
  const bool cut_k = p.top_k > 0 && p.top_k < V;
  float kth = neg_inf();
  if (cut_k) {
    uint32_t key;
    unsigned long long above;
    radix_walk(s, V, static_cast<unsigned long long>(p.top_k), [](float) { return 1ull; }, sh, key, above);
    kth = float_of(key);
    floor = fmaxf(floor, kth);
  }
  long long n_cand = 0, n_above = 0;
  for (int64_t i = tid; i < V; i += kThreads) {
    n_cand += s[i] >= floor;
    n_above += s[i] > kth;
  }
  n_cand = block_sum(n_cand, sh);
  n_above = block_sum(n_above, sh);
  // Candidates only from here: every other value -inf (the floor is finite, so a candidate never is).
  for (int64_t i = tid; i < V; i += kThreads)
    if (!(s[i] >= floor)) s[i] = neg_inf();
  __syncthreads();
  if (cut_k && p.top_k < n_cand) keep_first_ties(s, V, kth, p.top_k - n_above, sh);

  double sum = 0.0;
  for (int64_t i = tid; i < V; i += kThreads)
    if (s[i] > neg_inf()) sum += exp(static_cast<double>(s[i]) - static_cast<double>(best));
  sum = block_sum(sum, sh);

  // top-p: in (value descending, id ascending) order, each candidate while the mass before it is below top_p.
  if (p.top_p < 1.f) {
    const unsigned long long want = fixed_of(static_cast<double>(p.top_p));
    uint32_t key;
    unsigned long long above;
    const bool cut = radix_walk(
        s, V, want, [=](float x) { return x > neg_inf() ? fixed_of(prob_of(x, best, sum)) : 0ull; }, sh, key, above);
    if (cut) {  // the last value kept: those above it, and of its ties while the mass before each is below top_p
      const float last = float_of(key);
      const unsigned long long w = fixed_of(prob_of(last, best, sum));
      const long long keep = w ? static_cast<long long>((want - above + w - 1) / w) : V;
      for (int64_t i = tid; i < V; i += kThreads)
        if (s[i] < last) s[i] = neg_inf();
      __syncthreads();
      keep_first_ties(s, V, last, keep > 0 ? keep : 1, sh);
    }
  }
  // min-p: those whose probability is at least min_p times the best's (1 / sum).
  if (p.min_p > 0.f) {
    const double thr = static_cast<double>(p.min_p) / sum;
    for (int64_t i = tid; i < V; i += kThreads)
      if (s[i] > neg_inf() && prob_of(s[i], best, sum) < thr) s[i] = neg_inf();
    __syncthreads();
  }

  // The draw: the first survivor in id order whose running sum passes u times the total (else the last survivor).
  const Run run(V);
  double mine = 0.0;
  int64_t last_id = -1;
  for (int64_t i = run.lo; i < run.hi; ++i)
    if (s[i] > neg_inf()) {
      mine += prob_of(s[i], best, sum);
      last_id = i;
    }
  double total;
  double acc = block_exclusive_scan(mine, sh.d, total);
  const double target = p.u * total;
  int64_t pick = INT64_MAX;
  if (acc + mine > target)
    for (int64_t i = run.lo; i < run.hi; ++i)
      if (s[i] > neg_inf()) {
        acc += prob_of(s[i], best, sum);
        if (target < acc) {
          pick = i;
          break;
        }
      }
  // the first thread's pick (its run comes first in id order); with none, the largest survivor id
  int64_t a = pick, b = last_id;
  for (int off = 16; off > 0; off >>= 1) {
    a = min(a, __shfl_xor_sync(0xFFFFFFFFu, a, off));
    b = max(b, __shfl_xor_sync(0xFFFFFFFFu, b, off));
  }
  if ((tid & 31) == 0) {
    sh.idx[tid >> 5] = a;
    sh.n[tid >> 5] = b;
  }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kWarps; ++w) {
      a = min(a, sh.idx[w]);
      b = max(b, static_cast<int64_t>(sh.n[w]));
    }
    out[blockIdx.x] = static_cast<int32_t>(a != INT64_MAX ? a : b);
  }
}

}  // namespace

void sample(float* logits, int64_t R, int64_t V, const RowSampling* rows, const int32_t* ids, int32_t* out,
            void* stream) {
  if (R <= 0) return;
  sample_rows<<<static_cast<unsigned>(R), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(logits, V, rows, ids, out);
}

}  // namespace lmrt::cuda
