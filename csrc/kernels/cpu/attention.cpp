// paged_attention: work split and ISA dispatch, plus the scalar per-head kernel.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

namespace scalar {
namespace {

// One cache row as this kernel reads it: dim i as fp32, dequantised on the fly for I8 / I4.
struct Row {
  const char* p;
  int dt;
  float s, m;  // I8 / I4: x = code * s + m, m = -zero * s (exact)
  float operator[](int i) const {
    switch (dt) {
      case kF32: return reinterpret_cast<const float*>(p)[i];
      case kBF16: return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
      default:
        return std::fma(static_cast<float>(kv_code(reinterpret_cast<const uint8_t*>(p), static_cast<KVDType>(dt), i)),
                        s, m);
    }
  }
};

Row row_of(const void* cache, const uint16_t* scales, const uint8_t* zeros, int dt, int hd, int64_t row) {
  Row r{static_cast<const char*>(cache) + row * kv_row_bytes(static_cast<KVDType>(dt), hd), dt, 0.0f, 0.0f};
  if (dt == kI8 || dt == kI4) {
    r.s = f16_bits_to_f32(scales[row]);
    r.m = -static_cast<float>(zeros[row]) * r.s;
  }
  return r;
}

// Online softmax over the sequence's blocks in position order: one running max
// and denominator per (token, head), so its result depends only on its own q,
// pos and cache contents.
void attend(const AttnTask& t) {
  const int hd = t.head_dim, bs = t.block_size;
  float* s = t.scratch;         // [block_size]
  float* acc = t.scratch + bs;  // [head_dim]
  float* krow = acc + hd;       // [head_dim] one I4Channel key row
  std::fill(acc, acc + hd, 0.0f);
  float run_max = -INFINITY, denom = 0.0f;
  const int n_blocks = t.pos / bs + 1;
  for (int b = 0; b < n_blocks; ++b) {
    const int n = b == n_blocks - 1 ? t.pos - b * bs + 1 : bs;
    const int64_t base = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * bs;  // first row
    float block_max = -INFINITY;
    for (int j = 0; j < n; ++j) {
      float d = 0.0f;
      if (t.k_dtype == kI4Channel) {
        if (kv_reads_sealed(b, t.pos, bs)) {
          const int64_t ch = (static_cast<int64_t>(t.block_table[b]) * t.n_kv_heads + t.kv_head) * hd;
          kv_dequant_channel_row(static_cast<const uint8_t*>(t.k) + (base + j) * (hd / 2), t.k_scales + ch,
                                 t.k_zeros + ch, hd, krow);
        } else {
          const int64_t staged =
              (static_cast<int64_t>(t.stage_of_block[t.block_table[b]]) * t.n_kv_heads + t.kv_head) * bs;
          const Row kr = row_of(t.k_stage, t.k_stage_scales, t.k_stage_zeros, kI8, hd, staged + j);
          for (int i = 0; i < hd; ++i) krow[i] = kr[i];
        }
        for (int i = 0; i < hd; ++i) d += t.q[i] * krow[i];
      } else {
        const Row kr = row_of(t.k, t.k_scales, t.k_zeros, t.k_dtype, hd, base + j);
        for (int i = 0; i < hd; ++i) d += t.q[i] * kr[i];
      }
      s[j] = d * t.scale;
      block_max = std::max(block_max, s[j]);
    }
    const float new_max = std::max(run_max, block_max);
    if (new_max > run_max) {
      const float corr = std::exp(run_max - new_max);  // 0 on the first block
      denom *= corr;
      for (int i = 0; i < hd; ++i) acc[i] *= corr;
      run_max = new_max;
    }
    for (int j = 0; j < n; ++j) {
      const float p = std::exp(s[j] - run_max);
      denom += p;
      const Row vr = row_of(t.v, t.v_scales, t.v_zeros, t.v_dtype, hd, base + j);
      for (int i = 0; i < hd; ++i) acc[i] += p * vr[i];
    }
  }
  const float inv = 1.0f / denom;
  for (int i = 0; i < hd; ++i) t.out[i] = acc[i] * inv;
}

}  // namespace

void attention_one(const AttnTask& t) {  // its n_q heads one at a time
  AttnTask u = t;
  for (int g = 0; g < t.n_q; ++g, u.q += t.head_dim, u.out += t.head_dim) attend(u);
}

}  // namespace scalar

namespace {

AttnFn attention_for(Isa isa) {
#ifdef LMRT_X86
  if (isa == Isa::Avx512) return avx512::attention_one;
  if (isa == Isa::Avx2) return avx2::attention_one;
#endif
  return scalar::attention_one;
}

}  // namespace

bool int8_q_scores(const KVLayer& kv) {
#if defined(LMRT_X86) && defined(LMRT_HAVE_AVX512VNNI)
  return active_isa() == Isa::Avx512 && vnni_available() && kv.k_dtype == KVDType::I8 && kv.head_dim % 64 == 0 &&
         kv.head_dim <= 256;
#else
  (void)kv;
  return false;
#endif
}

void paged_attention(ThreadPool& pool, const KVLayer& kv, const AttnSeq* seqs, int64_t num_seqs, int n_heads,
                     float scale, bool int8_q, const AttnPrepare* prepare) {
  int8_q = int8_q && int8_q_scores(kv);
  AttnFn fn = attention_for(active_isa());
#if defined(LMRT_X86) && defined(LMRT_HAVE_AVX512VNNI)
  if (int8_q) fn = avx512vnni::attention_one;
#endif
  const int group = n_heads / kv.n_kv_heads;
  // Work item i is (sequence, token, heads): the query heads that share a KV head together (their key and value
  // rows decoded once), or one head an item when there would be fewer groups than threads. Either way every head's
  // result is the same bits (the kernels' contract), so the split may follow the batch. Measured
  // (benchmarks/bench_attention.py, default model's heads, 2 threads): a decode row after 2,000 tokens 0.049 ->
  // 0.040 ms a layer (bf16 KV), 0.053 -> 0.050 (int8); 32 rows after 400 tokens 0.267 -> 0.227, 0.329 -> 0.297.
  // With prepare, an item is always a whole KV head's group: the item that writes a KV head's row reads it.
  int64_t rows = 0;
  for (int64_t s = 0; s < num_seqs; ++s) {
    rows += seqs[s].M;
    if (prepare && seqs[s].M != 1)
      throw std::invalid_argument("paged_attention: prepare takes sequences of one row each; sequence " +
                                  std::to_string(s) + " has " + std::to_string(seqs[s].M));
  }
  int per_task = prepare || rows * kv.n_kv_heads >= pool.num_threads() ? group : 1;  // a divisor of group
  while (!prepare && (per_task > kAttnMaxGroup || group % per_task)) --per_task;     // and <= kAttnMaxGroup
  const int tasks_per_row = n_heads / per_task;
  std::vector<int64_t> first(num_seqs + 1, 0);  // first item of each sequence
  for (int64_t s = 0; s < num_seqs; ++s) first[s + 1] = first[s] + seqs[s].M * tasks_per_row;
  const int64_t items = first[num_seqs];
  const int64_t grain = int8_q ? std::max<int64_t>(1, items / (4 * pool.num_threads())) : 1;
  pool.parallel_for(items, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(kAttnMaxGroup * (kv.block_size + 2 * kv.head_dim)));
    AttnTask t{};
    t.k = kv.k;
    t.v = kv.v;
    t.k_scales = kv.k_scales;
    t.k_zeros = kv.k_zeros;
    t.v_scales = kv.v_scales;
    t.v_zeros = kv.v_zeros;
    t.k_stage = kv.k_stage;
    t.k_stage_scales = kv.k_stage_scales;
    t.k_stage_zeros = kv.k_stage_zeros;
    t.stage_of_block = kv.stage_of_block;
    t.scratch = scratch.data();
    t.k_dtype = static_cast<int>(kv.k_dtype);
    t.v_dtype = static_cast<int>(kv.v_dtype);
    t.n_kv_heads = kv.n_kv_heads;
    t.head_dim = kv.head_dim;
    t.block_size = kv.block_size;
    t.scale = scale;
    t.int8_q = int8_q;
    int64_t s = std::upper_bound(first.begin(), first.end(), begin) - first.begin() - 1;
    for (int64_t i = begin; i < end; ++i) {
      while (i >= first[s + 1]) ++s;
      const AttnSeq& q = seqs[s];
      const int64_t m = (i - first[s]) / tasks_per_row;
      const int h = static_cast<int>((i - first[s]) % tasks_per_row) * per_task;
      t.block_table = q.block_table;
      t.pos = q.pos[m];
      t.kv_head = h / group;
      t.next_table = nullptr;
      if (i + 1 < end) {  // the next item of this thread's run (runs of about 4 a thread with int8_q)
        int64_t sn = s;
        while (i + 1 >= first[sn + 1]) ++sn;
        const int64_t mn = (i + 1 - first[sn]) / tasks_per_row;
        t.next_table = seqs[sn].block_table;
        t.next_pos = seqs[sn].pos[mn];
        t.next_kv_head = static_cast<int>((i + 1 - first[sn]) % tasks_per_row) * per_task / group;
      }
      if (prepare) (*prepare)(s, t.kv_head);
      for (int g = 0; g < per_task; g += kAttnMaxGroup) {  // (more than kAttnMaxGroup heads only with prepare)
        t.q = q.q + m * q.ldq + static_cast<int64_t>(h + g) * kv.head_dim;
        t.out = q.out + m * q.ldo + static_cast<int64_t>(h + g) * kv.head_dim;
        t.n_q = std::min(per_task - g, kAttnMaxGroup);
        fn(t);
      }
    }
  });
}

}  // namespace lmrt::cpu
