// paged_attention_tiles: prefill attention on bf16 tiles (flash attention: online softmax over
// 64-key chunks), for the sequences of a batch that bring many query rows. Baseline-compiled; the
// tile block is the tile unit's (AMX, AVX512-BF16 or the software model; tiles.h), the softmax chunk and the
// accumulator's rescale are scalar here or AVX-512 (attention_tiles_avx512.cpp).
//
// Per call: (1) each tile sequence's K and V, for every kv head, are rounded to bf16 and packed
// once into the tile unit's B layout (K rows as bf16_tile_pack packs weight rows; V transposed, so
// keys are the reduction axis); (2) each work item, 32 query rows of one head, walks the key
// chunks up to its last position: S = Q K^T (2 blocks), softmax chunk (base 2, its offset raised only when a
// score passes it by kSoftmaxSlack), O *= corr where the offset moved, then the tiles add P V into O.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/kv_quant.h"
#include "kernels/cpu/ops.h"
#include "kernels/cpu/tiles.h"

namespace lmrt::cpu {

namespace {

constexpr int64_t kRows = 32;             // query rows per work item: the 2 A tiles of a block
constexpr int64_t kChunk = kKeyChunk;     // keys per softmax chunk: 2 blocks of S
constexpr int64_t kMaxHeadDim = 256;      // bounds the per-thread scratch on the stack
constexpr int64_t kBlockElems = 16 * 32;  // bf16 elements of one packed tile (16 rows x 32)

int64_t round_up(int64_t a, int64_t q) { return (a + q - 1) / q * q; }

struct TileSeq {
  const AttnSeq* seq;
  int64_t num_keys;  // last position + 1: the keys its rows can see
  int64_t keys_pad;  // num_keys rounded up to kChunk
  uint16_t* k;       // [n_kv_heads][keys_pad / 16][hdp / 32][16][32]: bf16_tile_pack of the K rows
  uint16_t* v;       // [n_kv_heads][hdp / 16][keys_pad / 32][16][32]: bf16_tile_pack of V^T
  int64_t first_item;
};

// One cache row as fp32 (what the tile unit then takes rounded to bf16): bf16 rows widened, fp32 rows as they are,
// quantized rows dequantised (exact in fp32).
void row_to_f32(const void* cache, const uint16_t* scales, const uint8_t* zeros, KVDType dt, int hd, int64_t row,
                float* out) {
  const char* p = static_cast<const char*>(cache) + row * kv_row_bytes(dt, hd);
  if (dt == KVDType::BF16) {
    const uint16_t* b = reinterpret_cast<const uint16_t*>(p);
    for (int d = 0; d < hd; ++d) out[d] = bf16_bits_to_f32(b[d]);
  } else if (dt == KVDType::F32) {
    std::copy_n(reinterpret_cast<const float*>(p), hd, out);
  } else {
    kv_dequant_row(reinterpret_cast<const uint8_t*>(p), dt, scales[row], zeros[row], hd, out);
  }
}

// Rounds keys [c * kChunk, (c + 1) * kChunk) of kv head h to bf16 and writes them into the packed K
// and V of that head (zeros past num_keys and past head_dim, so padding never meets a NaN): the chunk's K rows and
// its V^T gathered in fp32, then packed 16 rows at a time by the ISA's tile packer (each value bf16(x), RNE, as
// the rest of the tile path rounds).
void pack_chunk(const KVLayer& kv, const TileSeq& t, int h, int64_t c, int64_t hdp, TilePack16Fn pack) {
  const int64_t hd = kv.head_dim, bs = kv.block_size, steps = hdp / 32, ksteps = t.keys_pad / 32;
  uint16_t* kp = t.k + h * t.keys_pad * hdp;
  uint16_t* vp = t.v + h * t.keys_pad * hdp;
  alignas(64) float krows[kChunk * kMaxHeadDim];  // [kChunk, hd] the chunk's K rows (zeros past num_keys)
  alignas(64) float vt[kMaxHeadDim * kChunk];     // [hd, kChunk] its V rows transposed
  float vrow[kMaxHeadDim];
  const int64_t k0 = c * kChunk;
  for (int64_t j = 0; j < kChunk; ++j) {
    const int64_t key = k0 + j;
    float* krow = krows + j * hd;
    if (key >= t.num_keys) {
      std::fill(krow, krow + hd, 0.0f);
      for (int64_t d = 0; d < hd; ++d) vt[d * kChunk + j] = 0.0f;
      continue;
    }
    const int64_t block = t.seq->block_table[key / bs], row = (block * kv.n_kv_heads + h) * bs + key % bs;
    if (kv.k_dtype != KVDType::I4Channel) {
      row_to_f32(kv.k, kv.k_scales, kv.k_zeros, kv.k_dtype, static_cast<int>(hd), row, krow);
    } else if (kv_reads_sealed(key / bs, t.seq->pos[0], bs)) {  // sealed for every row of the chunk
      const int64_t ch = (block * kv.n_kv_heads + h) * hd;
      kv_dequant_channel_row(static_cast<const uint8_t*>(kv.k) + row * (hd / 2), kv.k_scales + ch, kv.k_zeros + ch,
                             static_cast<int>(hd), krow);
    } else {  // a block some row of the chunk sees in part: its staged rows, for every row
      const int64_t staged = (kv.stage_of_block[block] * kv.n_kv_heads + h) * bs + key % bs;
      row_to_f32(kv.k_stage, kv.k_stage_scales, kv.k_stage_zeros, KVDType::I8, static_cast<int>(hd), staged, krow);
    }
    row_to_f32(kv.v, kv.v_scales, kv.v_zeros, kv.v_dtype, static_cast<int>(hd), row, vrow);
    for (int64_t d = 0; d < hd; ++d) vt[d * kChunk + j] = vrow[d];
  }
  // K: 16-key block nb, key n; dims (2p, 2p + 1) of step s form pair p (tile_pack16's layout with keys as rows).
  for (int64_t b = 0; b < kChunk / 16; ++b)
    pack(krows + b * 16 * hd, hd, 16, hd, kp + (k0 / 16 + b) * steps * kBlockElems);
  // V^T: output dim d = 16-column block d / 16, column d % 16; keys (2p, 2p + 1) of step s form pair p.
  for (int64_t cb = 0; cb < hdp / 16; ++cb)
    pack(vt + cb * 16 * kChunk, kChunk, std::clamp<int64_t>(hd - cb * 16, 0, 16), kChunk,
         vp + (cb * ksteps + k0 / 32) * kBlockElems);
}

// One work item: rows [m0, m0 + 32) of head `head` of sequence t.
void attend_rows(const KVLayer& kv, const TileSeq& t, int head, int group, int64_t m0, float scale, int64_t hdp,
                 TileBlockFn block, ToBf16Fn to_bf16, SoftmaxChunkFn softmax, AccScaleFn rescale) {
  const AttnSeq& q = *t.seq;
  const int64_t hd = kv.head_dim, steps = hdp / 32, ksteps = t.keys_pad / 32;
  const int64_t rows = std::min(kRows, q.M - m0);
  const uint16_t* kp = t.k + (head / group) * t.keys_pad * hdp;
  const uint16_t* vp = t.v + (head / group) * t.keys_pad * hdp;
  alignas(64) uint16_t qb[kRows * kMaxHeadDim];  // [32, hdp] bf16 Q rows, zero padded
  alignas(64) float s[kRows * kChunk];           // [32, 64] raw scores of a chunk
  alignas(64) uint16_t p[kRows * kChunk];        // [32, 64] bf16 probabilities
  alignas(64) float o[kRows * kMaxHeadDim];      // [32, hdp] running accumulator
  float m[kRows], corr[kRows];
  float l[kRows * kSoftmaxLanes];  // [32, 16] each row's denominator as partial sums (softmax_chunk)
  int32_t pos[kRows], n_valid[kRows];
  for (int64_t r = 0; r < kRows; ++r) {
    uint16_t* qr = qb + r * hdp;
    std::fill(qr, qr + hdp, uint16_t{0});
    if (r < rows) to_bf16(q.q + (m0 + r) * q.ldq + static_cast<int64_t>(head) * hd, hd, qr);
    pos[r] = q.pos[m0 + std::min(r, rows - 1)];  // padding rows repeat the last row (their output is dropped)
    m[r] = -INFINITY;
    std::fill(l + r * kSoftmaxLanes, l + (r + 1) * kSoftmaxLanes, 0.0f);
  }
  std::fill(o, o + kRows * hdp, 0.0f);
  const int64_t last = *std::max_element(pos, pos + kRows);
  for (int64_t c = 0; c * kChunk <= last; ++c) {
    const int64_t nb = c * kChunk / 16;  // first 16-key block of the chunk
    // The chunk's last 32 keys past every row (the diagonal chunk of an even row block): neither their scores
    // (softmax reads only keys below n_valid) nor their zero probabilities' products are computed.
    const bool half = last < c * kChunk + 32;
    block(qb, hdp, kp + nb * steps * kBlockElems, kp + (nb + 1) * steps * kBlockElems, steps, nullptr, 0, s, kChunk,
          kRows);
    if (!half)
      block(qb, hdp, kp + (nb + 2) * steps * kBlockElems, kp + (nb + 3) * steps * kBlockElems, steps, nullptr, 0,
            s + 32, kChunk, kRows);
    for (int64_t r = 0; r < kRows; ++r)
      n_valid[r] = static_cast<int32_t>(std::clamp<int64_t>(pos[r] - c * kChunk + 1, 0, kChunk));
    softmax(s, n_valid, kRows, scale, m, l, p, corr);
    const int64_t s0 = c * kChunk / 32;  // first 32-key step of the chunk
    rescale(o, corr, kRows, hdp);        // o *= corr (rows whose offset moved), then the tiles add P V into it
    for (int64_t cb = 0; cb < hdp / 16; cb += 2)
      block(p, kChunk, vp + (cb * ksteps + s0) * kBlockElems, vp + ((cb + 1) * ksteps + s0) * kBlockElems, half ? 1 : 2,
            o + cb * 16, hdp, o + cb * 16, hdp, kRows);
  }
  for (int64_t r = 0; r < rows; ++r) {
    float denom = 0.0f;
    for (int i = 0; i < kSoftmaxLanes; ++i) denom += l[r * kSoftmaxLanes + i];
    const float inv = 1.0f / denom;
    float* orow = o + r * hdp;  // [hd]
    if (!q.out_bf16) {
      float* out = q.out + (m0 + r) * q.ldo + static_cast<int64_t>(head) * hd;
      for (int64_t d = 0; d < hd; ++d) out[d] = orow[d] * inv;
      continue;
    }
    for (int64_t d = 0; d < hd; ++d) orow[d] *= inv;
    to_bf16(orow, hd, q.out_bf16 + (m0 + r) * q.ldo_bf16 + static_cast<int64_t>(head) * hd);
  }
}

}  // namespace

void scalar::softmax_chunk(const float* s, const int32_t* n_valid, int64_t R, float scale, float* m, float* l,
                           uint16_t* p, float* corr) {
  const float scale2 = scale * 1.44269504088896341f;  // log2(e): 2^t for e^(scale * s)
  for (int64_t r = 0; r < R; ++r) {
    const float* sr = s + r * kKeyChunk;  // [64]
    uint16_t* pr = p + r * kKeyChunk;     // [64]
    float* lr = l + r * kSoftmaxLanes;    // [16]
    const int nv = n_valid[r];
    float mx = -INFINITY;
    for (int j = 0; j < nv; ++j) mx = std::max(mx, sr[j] * scale2);
    float c = 1.0f;
    if (nv > 0 && mx > m[r] + kSoftmaxSlack) {  // always on the first chunk (m = -inf)
      c = std::exp2(m[r] - mx);                 // 0 there
      m[r] = mx;
    }
    float sum[kSoftmaxLanes] = {};
    for (int j = 0; j < kKeyChunk; ++j) {
      pr[j] = j < nv ? f32_to_bf16_bits(std::exp2(sr[j] * scale2 - m[r])) : 0;
      sum[j % kSoftmaxLanes] += bf16_bits_to_f32(pr[j]);
    }
    for (int i = 0; i < kSoftmaxLanes; ++i) lr[i] = lr[i] * c + sum[i];
    corr[r] = c;
  }
}

void scalar::acc_scale(float* o, const float* corr, int64_t R, int64_t n) {
  for (int64_t r = 0; r < R; ++r)
    if (corr[r] != 1.0f)
      for (int64_t i = 0; i < n; ++i) o[r * n + i] *= corr[r];
}

// AVX512-BF16's rounding where a hardware tile unit takes the probabilities (both flush what it flushes to 0), as
// the strip packers; the software model keeps AVX-512 F's, so each runs in the tests here.
SoftmaxChunkFn softmax_chunk_fn(TileUnit unit) {
#ifdef LMRT_HAVE_AVX512BF16
  if (unit != TileUnit::Model && active_isa() == Isa::Avx512) return avx512bf16::softmax_chunk;
#endif
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::softmax_chunk;
#endif
  return scalar::softmax_chunk;
}

AccScaleFn acc_scale_fn() {
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) return avx512::acc_scale;
#endif
  return scalar::acc_scale;
}

void paged_attention_tiles(ThreadPool& pool, const KVLayer& kv, const AttnSeq* seqs, int64_t num_seqs, int n_heads,
                           float scale, int64_t min_rows, TileUnit tile_unit, Buffer& scratch, bool int8_q,
                           const AttnPrepare* prepare) {
  const int64_t hdp = round_up(kv.head_dim, 32);
  std::vector<AttnSeq> exact;  // sequences with few rows: the exact per-row path
  std::vector<TileSeq> tiled;
  int64_t elems = 0, items = 0;
  for (int64_t i = 0; i < num_seqs; ++i) {
    const AttnSeq& q = seqs[i];
    if (q.M < std::max<int64_t>(min_rows, 1) || hdp > kMaxHeadDim) {
      exact.push_back(q);
      continue;
    }
    if (prepare)
      throw std::invalid_argument("paged_attention_tiles: prepare takes only sequences for the exact path; sequence " +
                                  std::to_string(i) + " has " + std::to_string(q.M) + " rows");
    TileSeq t{&q, *std::max_element(q.pos, q.pos + q.M) + 1, 0, nullptr, nullptr, items};
    t.keys_pad = round_up(t.num_keys, kChunk);
    tiled.push_back(t);
    elems += 2 * kv.n_kv_heads * t.keys_pad * hdp;
    items += n_heads * ((q.M + kRows - 1) / kRows);
  }
  if (!exact.empty()) {
    paged_attention(pool, kv, exact.data(), static_cast<int64_t>(exact.size()), n_heads, scale, int8_q, prepare);
    const ToBf16Fn to_bf16 = to_bf16_fn(tile_unit);
    for (const AttnSeq& q : exact)  // the exact path writes fp32: rounded here where bf16 is asked for
      if (q.out_bf16)
        for (int64_t m = 0; m < q.M; ++m)
          to_bf16(q.out + m * q.ldo, n_heads * kv.head_dim, q.out_bf16 + m * q.ldo_bf16);
  }
  if (tiled.empty()) return;
  const TileRunner unit(tile_unit, "paged_attention_tiles");
  const TileBlockFn block = unit.block();
  const ToBf16Fn to_bf16 = to_bf16_fn(unit.impl());  // q and the output rows
  TilePack16Fn pack = scalar::tile_pack16;  // (not AVX512-BF16's packer: it flushes denormals, these keep them)
#ifdef LMRT_X86
  if (active_isa() == Isa::Avx512) pack = avx512::tile_pack16;
#endif
  const SoftmaxChunkFn softmax = softmax_chunk_fn(unit.impl());
  const AccScaleFn rescale = acc_scale_fn();
  scratch.reserve(static_cast<size_t>(elems) * sizeof(uint16_t));
  uint16_t* at = scratch.data<uint16_t>();
  std::vector<int64_t> first_pack(tiled.size() + 1, 0);  // pack work items: (sequence, kv head, chunk)
  for (size_t i = 0; i < tiled.size(); ++i) {
    TileSeq& t = tiled[i];
    t.k = at;
    t.v = at + kv.n_kv_heads * t.keys_pad * hdp;
    at += 2 * kv.n_kv_heads * t.keys_pad * hdp;
    first_pack[i + 1] = first_pack[i] + kv.n_kv_heads * (t.keys_pad / kChunk);
  }
  pool.parallel_for(first_pack.back(), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const size_t si = std::upper_bound(first_pack.begin(), first_pack.end(), i) - first_pack.begin() - 1;
      const int64_t chunks = tiled[si].keys_pad / kChunk, local = i - first_pack[si];
      pack_chunk(kv, tiled[si], static_cast<int>(local / chunks), local % chunks, hdp, pack);
    }
  });
  const int group = n_heads / kv.n_kv_heads;
  // Work item: (sequence, 32-row block, head), within a sequence the last row blocks first: they see the most keys,
  // so the items the threads take last are the cheap ones and they finish together.
  pool.parallel_for(items, 1, [&](int64_t begin, int64_t end) {
    unit.begin();
    for (int64_t i = begin; i < end; ++i) {
      size_t si = 0;
      while (si + 1 < tiled.size() && tiled[si + 1].first_item <= i) ++si;
      const TileSeq& t = tiled[si];
      const int64_t local = i - t.first_item, blocks = (t.seq->M + kRows - 1) / kRows;
      const int64_t row_block = blocks - 1 - local / n_heads;
      attend_rows(kv, t, static_cast<int>(local % n_heads), group, row_block * kRows, scale, hdp, block, to_bf16,
                  softmax, rescale);
    }
    unit.end();
  });
}

}  // namespace lmrt::cpu
