#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "backend/cpu_backend.h"
#include "kernels/cpu/ops.h"
#include "model/matrix_cpu.h"

namespace lmrt {
namespace {

// Row-wise ops are cheap per row: split rows over the pool only when there are many, at least `grain` at a time.
template <class F>
void rows(cpu::ThreadPool& pool, int64_t num_rows, const F& fn, int64_t grain = 8) {
  if (num_rows < 16)
    fn(0, num_rows);
  else
    pool.parallel_for(num_rows, grain, fn);
}

// Rows written into the KV cache go 64 at a time (kv_store): a cache row's scale (2 bytes) and zero point (1 byte)
// share their 64-byte line with 31-63 neighbours', which two threads writing alternate runs of 16 rows fought over
// (the rope + KV store of a 512-token prompt scaled 1.28x on 2 threads).
constexpr int64_t kKVStoreRows = 64;

// A bf16 tile input's rows and columns, padded to whole 32-row blocks and 32-value steps (bf16_tiles_x_size).
int64_t tile_pad(int64_t n) { return (n + 31) / 32 * 32; }

CpuBackend& cpu_backend(Backend& backend) {
  if (backend.device() != Device::Cpu)
    throw std::invalid_argument("the Llama model has CPU kernels only in this build; use device 'cpu'");
  return static_cast<CpuBackend&>(backend);
}

}  // namespace

LlamaModel::LlamaModel(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv)
    : spec_((spec.validate(), std::move(spec))),
      weights_(std::move(weights)),
      backend_(cpu_backend(backend)),
      kv_(spec_.num_layers, kv.num_blocks, kv.block_size, spec_.num_kv_heads, spec_.head_dim, kv.k_dtype, kv.v_dtype,
          kv.num_stage_slots) {
  const BackendOptions& o = backend.options();
  if (o.prefill_precision == PrefillPrecision::BF16) {
    gate_up_paired_ = spec_.intermediate_size % 32 == 0;
    bf16_prefill_ = true;
    tile_unit_ = o.tile_unit;
  }
  int8_activations_ = o.linear_precision == LinearPrecision::Int8;
  w4_layers_ = true;
  for (const LayerWeights& w : weights_.layers)
    for (const Matrix* m : {&w.qkv, &w.o, &w.gate_up, &w.down})
      w4_layers_ = w4_layers_ && m->format == WeightFormat::W4;
  rotate_qk_ = kv.k_dtype == KVDType::I8;
  if (int8_activations_ && cpu::w4a8_il_fast()) {
    bool all = true;
    for (const LayerWeights& w : weights_.layers)
      for (const Matrix* m : {&w.qkv, &w.o, &w.gate_up, &w.down})
        all = all && m->format == WeightFormat::W4 && m->rows % 16 == 0;
    if (all) {
      for (LayerWeights& w : weights_.layers)
        for (Matrix* m : {&w.qkv, &w.o, &w.gate_up, &w.down}) interleave_w4(*m);
      int8_interleaved_ = true;
    }
    Matrix& head = weights_.lm_head;  // an int8 copy of a tied embedding too (embed itself keeps its rows)
    if (int8_interleaved_ && cpu::i8a8_il_fast() && head.format == WeightFormat::I8 && head.rows % 16 == 0 &&
        head.cols % 32 == 0) {
      interleave_i8(head);
      // Where AMX-INT8 runs it (8+ rows), int16 activations per row: its dots stay in the tiles over all of K, 1.5x
      // / 2x faster at 32 / 64 rows than int8 per run of 32, and closer to exact (ops.h: I8Activations). On vector
      // units alone int8 per run stays (int16's two byte products cost VNNI ~1.3x).
      if (cpu::amx_int8_available() && head.cols % 64 == 0) head.i8_acts = I8Activations::Int16Rows;
      head_interleaved_ = true;
    }
  }
}

void LlamaModel::reserve(int64_t T, int64_t R) {
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size;
  x_.reserve(T * H * 4);
  h_.reserve(T * H * 4);
  qkv_.reserve(T * spec_.qkv_dim() * 4);
  attn_.reserve(T * spec_.q_dim() * 4);
  gu_.reserve(T * 2 * I * 4);
  act_.reserve(T * I * 4);
  rope_cs_.reserve(T * spec_.head_dim * 4);
  sel_.reserve(R * H * 4);
  logits_.reserve(R * static_cast<int64_t>(spec_.vocab_size) * 4);
  if (bf16_prefill_ && T >= kTilesMinRows) {
    tiles_x_.reserve(cpu::bf16_tiles_x_size(T, H) * sizeof(uint16_t));
    tiles_act_.reserve(cpu::bf16_tiles_x_size(T, I) * sizeof(uint16_t));
    tiles_o_.reserve(cpu::bf16_tiles_x_size(T, spec_.q_dim()) * sizeof(uint16_t));
  }
}

const float* LlamaModel::forward(const Batch& batch) {
  cpu::ThreadPool& pool = backend_.pool();
  KVCache& kv = kv_;
  const int64_t T = batch.num_tokens(), R = static_cast<int64_t>(batch.logit_rows.size());
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size, QKV = spec_.qkv_dim(), Q = spec_.q_dim();
  if (T == 0) return nullptr;
  reserve(T, R);
  float* x = x_.data<float>();
  const bool tiles = bf16_prefill_ && T >= kTilesMinRows;
  // int8 mode: the products on AMX-INT8 (or VNNI), but a large step's on AMX's bf16 tiles (kInt8TilesMinRows)
  const bool int8_tiles = tile_unit_ == TileUnit::Amx && T >= kInt8TilesMinRows;
  const bool all_tiles = tiles && (!int8_interleaved_ || int8_tiles);  // layer_tiles for every layer
  // layer_tiles: the attention writes the o product's input as bf16 (tiles_o_), whose padding is zeroed here
  const int64_t Qp = tile_pad(Q), Tp = tile_pad(T);
  uint16_t* ob = all_tiles ? tiles_o_.data<uint16_t>() : nullptr;  // [Tp, Qp]
  if (ob) {
    for (int64_t m = 0; m < T && Qp > Q; ++m) std::fill(ob + m * Qp + Q, ob + (m + 1) * Qp, uint16_t{0});
    std::fill(ob + T * Qp, ob + Tp * Qp, uint16_t{0});
  }
  attn_seqs_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqRows& r = batch.seqs[s];
    attn_seqs_[s] = AttnSeq{
        qkv_.data<float>() + r.first_row * QKV, QKV,       attn_.data<float>() + r.first_row * Q, Q, r.block_table,
        batch.positions.data() + r.first_row,   r.num_rows};
    if (ob) {
      attn_seqs_[s].out_bf16 = ob + r.first_row * Qp;
      attn_seqs_[s].ldo_bf16 = Qp;
    }
  }

  cpu::embedding(weights_.embed.data.data(), weights_.embed.dtype, H, batch.tokens.data(), T, x, H);
  rows(pool, T, [&](int64_t b, int64_t e) {
    cpu::rope_factors(batch.positions.data() + b, e - b, spec_.inv_freq.data(), spec_.head_dim, spec_.attention_scaling,
                      rope_cs_.data<float>() + b * spec_.head_dim);
  });
  const int64_t groups = all_tiles ? 1 : decode_row_groups(batch, pool.num_threads());
  last_row_groups_ = groups;
  if (groups > 1) {
    // An int8-mode decode step of many rows over 4-bit layers: each thread takes whole rows (their sequences)
    // through every layer alone (a one-thread pool), so the layers have no barrier and each row's activations stay
    // in its thread's caches; every op's bits are its rows' own (the kernels' contract), so the step's are those of
    // the layer-by-layer path. (The attention's tile path would send these one-row sequences to the exact one.)
    if (static_cast<int64_t>(group_x_.size()) < groups) group_x_.resize(static_cast<size_t>(groups));
    pool.parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
      thread_local cpu::ThreadPool serial(1);
      for (int64_t g = g0; g < g1; ++g) {
        const int64_t b = g * T / groups, e = (g + 1) * T / groups;
        Buffer* a8 = int8_activations_ ? &group_x_[static_cast<size_t>(g)] : nullptr;  // as a8()
        for (int l = 0; l < spec_.num_layers; ++l) layer(l, batch, kv.layer(l), serial, false, RowSpan{b, e, b, e}, a8);
      }
    });
  } else {
    const RowSpan all{0, T, 0, static_cast<int64_t>(batch.seqs.size())};
    for (int l = 0; l < spec_.num_layers; ++l) {
      if (all_tiles)
        layer_tiles(l, batch, kv.layer(l), pool);
      else
        layer(l, batch, kv.layer(l), pool, tiles, all, a8());
    }
  }
  if (R == 0) return nullptr;
  float* sel = sel_.data<float>();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = batch.logit_rows[r];
    if (row < 0 || row >= T) throw std::logic_error("forward: logit row outside the batch");
    cpu::rmsnorm(x + row * H, 1, H, H, weights_.norm.data(), spec_.rms_norm_eps, sel + r * H, H);
  }
  // Many logit rows (get_logits, perplexity, decode of 16+ requests): the output matrix on the tiles, unless it is
  // interleaved for int8 activations.
  if (bf16_prefill_ && R >= kTilesMinRows && !head_interleaved_) {
    cpu::linear_bf16_tiles(pool, sel, R, H, H, tile_weights(weights_.output_matrix(), false), V, nullptr,
                           cpu::TileOut::Store, logits_.data<float>(), V, tile_unit_, tiles_x_);
  } else {
    apply_linear(pool, weights_.output_matrix(), sel, R, H, nullptr, logits_.data<float>(), V, a8());
  }
  return logits_.data<float>();
}

int64_t LlamaModel::decode_row_groups(const Batch& batch, int threads) const {
  const int64_t T = batch.num_tokens(), G = threads;
  // Each group streams every layer's weights itself: G groups read them G times, so the rows a group must have to
  // stay compute-bound grow with G (kRowGroupMinRows' notes)
  const int64_t per_group = kRowGroupMinRows * G;
  if (!int8_activations_ || !w4_layers_ || G < 2 || 2 * T < G * per_group) return 1;
  if (T != static_cast<int64_t>(batch.seqs.size()) || !batch.sealed_blocks.empty()) return 1;  // not a decode step
  for (int64_t s = 0; s < T; ++s)
    if (batch.seqs[static_cast<size_t>(s)].first_row != s) return 1;  // (a group's sequences are its rows)
  return G;
}

void LlamaModel::rope_store(const Batch& batch, const KVLayer& cache, int64_t b, int64_t e) {
  const int64_t QKV = spec_.qkv_dim(), Q = spec_.q_dim(), KVD = spec_.kv_dim();
  float* r = qkv_.data<float>() + b * QKV;  // q heads then k heads are contiguous: one rope call rotates both
  cpu::rope_apply(r, e - b, QKV, spec_.num_heads + spec_.num_kv_heads, spec_.head_dim,
                  rope_cs_.data<float>() + b * spec_.head_dim);
  if (rotate_qk_) cpu::hadamard_heads(r, e - b, QKV, spec_.num_heads + spec_.num_kv_heads, spec_.head_dim);
  cpu::kv_store(cache, r + Q, QKV, r + Q + KVD, QKV, e - b, batch.slots.data() + b);
}

void LlamaModel::rope_store_head(const Batch& batch, const KVLayer& cache, int64_t r, int h) {
  const int64_t QKV = spec_.qkv_dim(), Q = spec_.q_dim(), KVD = spec_.kv_dim(), hd = spec_.head_dim;
  const int group = spec_.num_heads / spec_.num_kv_heads;
  float* q = qkv_.data<float>() + r * QKV + h * group * hd;  // the group's q heads
  float* k = qkv_.data<float>() + r * QKV + Q + h * hd;
  const float* cs = rope_cs_.data<float>() + r * spec_.head_dim;
  cpu::rope_apply(q, 1, QKV, group, spec_.head_dim, cs);
  cpu::rope_apply(k, 1, QKV, 1, spec_.head_dim, cs);
  if (rotate_qk_) {
    cpu::hadamard_heads(q, 1, QKV, group, spec_.head_dim);
    cpu::hadamard_heads(k, 1, QKV, 1, spec_.head_dim);
  }
  const float* kr = qkv_.data<float>() + r * QKV + Q;
  cpu::kv_store(cache, kr, QKV, kr + KVD, QKV, 1, batch.slots.data() + r, h, h + 1);
}

void LlamaModel::attention(const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool tiles,
                           const RowSpan& span) {
  const int64_t T = batch.num_tokens();
  if (T == static_cast<int64_t>(batch.seqs.size()) && batch.sealed_blocks.empty()) {
    // A decode step (a row a sequence, no block to seal): each attention item first ropes and stores the K/V head
    // it reads, so that work runs beside the attention, on every thread, without a pass and a wait of its own.
    const cpu::AttnPrepare prepare = [&](int64_t s, int h) {
      rope_store_head(batch, cache, batch.seqs[span.s0 + s].first_row, h);
    };
    attend(batch, cache, pool, tiles, span, &prepare);
    return;
  }
  rows(
      pool, span.e - span.b, [&](int64_t b, int64_t e) { rope_store(batch, cache, span.b + b, span.b + e); },
      kKVStoreRows);
  attend(batch, cache, pool, tiles, span);
}

void LlamaModel::attend(const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool tiles,
                        const RowSpan& span, const std::function<void(int64_t, int)>* prepare) {
  const int64_t num_sealed = static_cast<int64_t>(batch.sealed_blocks.size());
  if (num_sealed)
    pool.parallel_for(num_sealed, 1,
                      [&](int64_t b, int64_t e) { cpu::kv_seal(cache, batch.sealed_blocks.data() + b, e - b); });
  const float scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));
  const AttnSeq* seqs = attn_seqs_.data() + span.s0;
  const int64_t num_seqs = span.s1 - span.s0;
  if (tiles)
    cpu::paged_attention_tiles(pool, cache, seqs, num_seqs, spec_.num_heads, scale, kTilesAttnMinRows, tile_unit_,
                               attn_tiles_, int8_activations_, prepare);
  else
    cpu::paged_attention(pool, cache, seqs, num_seqs, spec_.num_heads, scale, int8_activations_, prepare);
}

void LlamaModel::layer(int l, const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool, bool attn_tiles,
                       const RowSpan& span, Buffer* a8) {
  const LayerWeights& w = weights_.layers[l];
  const int64_t T = span.e - span.b, H = spec_.hidden_size, I = spec_.intermediate_size;
  const float eps = spec_.rms_norm_eps;
  float* x = x_.data<float>() + span.b * H;
  float* h = h_.data<float>() + span.b * H;
  float* gu = gu_.data<float>() + span.b * 2 * I;
  float* act = act_.data<float>() + span.b * I;
  // attention block
  rows(pool, T,
       [&](int64_t b, int64_t e) { cpu::rmsnorm(x + b * H, e - b, H, H, w.input_norm.data(), eps, h + b * H, H); });
  apply_linear(pool, w.qkv, h, T, H, w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(),
               qkv_.data<float>() + span.b * spec_.qkv_dim(), spec_.qkv_dim(), a8);
  attention(batch, cache, pool, attn_tiles, span);
  apply_linear(pool, w.o, attn_.data<float>() + span.b * spec_.q_dim(), T, spec_.q_dim(), nullptr, h, H, a8);
  // MLP block
  rows(pool, T, [&](int64_t b, int64_t e) {
    for (int64_t i = b * H; i < e * H; ++i) x[i] += h[i];
    cpu::rmsnorm(x + b * H, e - b, H, H, w.post_attn_norm.data(), eps, h + b * H, H);
  });
  if (!apply_gate_up_silu(pool, w.gate_up, h, T, H, act, I, a8)) {
    apply_linear(pool, w.gate_up, h, T, H, nullptr, gu, 2 * I, a8);
    rows(pool, T, [&](int64_t b, int64_t e) { cpu::silu_mul(gu + b * 2 * I, e - b, I, 2 * I, act + b * I, I); });
  }
  apply_linear(pool, w.down, act, T, I, nullptr, h, H, a8);
  rows(pool, T, [&](int64_t b, int64_t e) {
    for (int64_t i = b * H; i < e * H; ++i) x[i] += h[i];
  });
}

// The same layer with every product on bf16 tiles: inputs handed over as bf16, the residual adds
// and silu(gate) * up done by the products as they store (linear_bf16_tiles_in's modes). With rows enough for the
// products to split them among the threads anyway (cpu::bf16_tiles_row_groups), the ops that only read and write
// their own rows run row-local: each thread takes a range of whole 32-row blocks through the norm, qkv, RoPE and
// the K/V store, and later through o, the norm, gate/up and down, alone (a one-thread pool), so the layer waits
// for all threads only where the attention needs every row's keys: 4 barriers a layer instead of 9, the same bits.
void LlamaModel::layer_tiles(int l, const Batch& batch, const KVLayer& cache, cpu::ThreadPool& pool) {
  const LayerWeights& w = weights_.layers[l];
  const int64_t T = batch.num_tokens(), H = spec_.hidden_size, I = spec_.intermediate_size, Q = spec_.q_dim();
  const int64_t QKV = spec_.qkv_dim(), Hp = tile_pad(H), Qp = tile_pad(Q), Ip = tile_pad(I);
  const float eps = spec_.rms_norm_eps;
  const cpu::TileUnit em = tile_unit_;
  const RowSpan all{0, T, 0, static_cast<int64_t>(batch.seqs.size())};
  float* x = x_.data<float>();
  uint16_t* xb = tiles_x_.data<uint16_t>();      // [Tp, Hp]
  uint16_t* actb = tiles_act_.data<uint16_t>();  // [Tp, Ip]
  uint16_t* ob = tiles_o_.data<uint16_t>();      // [Tp, Qp]
  using cpu::TileOut;
  // Rows [b, e) (b a multiple of 32) on pool p: the attention block up to the attention, then the rest.
  auto front = [&](cpu::ThreadPool& p, int64_t b, int64_t e) {
    cpu::rmsnorm_bf16_tiles(p, x + b * H, e - b, H, H, w.input_norm.data(), eps, xb + b * Hp);
    cpu::linear_bf16_tiles_in(p, xb + b * Hp, e - b, H, tile_weights(w.qkv, false), w.qkv.rows,
                              w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(), TileOut::Store,
                              qkv_.data<float>() + b * QKV, QKV, em);
  };
  auto back = [&](cpu::ThreadPool& p, int64_t b, int64_t e) {
    float* xr = x + b * H;
    cpu::linear_bf16_tiles_in(p, ob + b * Qp, e - b, Q, tile_weights(w.o, false), H, nullptr, TileOut::Add, xr, H, em);
    // MLP block
    cpu::rmsnorm_bf16_tiles(p, xr, e - b, H, H, w.post_attn_norm.data(), eps, xb + b * Hp);
    if (gate_up_paired_) {
      cpu::linear_bf16_tiles_in(p, xb + b * Hp, e - b, H, tile_weights(w.gate_up, true), 2 * I, nullptr,
                                TileOut::SiluMul, actb + b * Ip, I, em);
    } else {
      float* gu = gu_.data<float>() + b * 2 * I;
      float* act = act_.data<float>() + b * I;
      cpu::linear_bf16_tiles_in(p, xb + b * Hp, e - b, H, tile_weights(w.gate_up, false), 2 * I, nullptr,
                                TileOut::Store, gu, 2 * I, em);
      rows(p, e - b, [&](int64_t i, int64_t j) { cpu::silu_mul(gu + i * 2 * I, j - i, I, 2 * I, act + i * I, I); });
      cpu::bf16_tiles_input(p, act, e - b, I, I, actb + b * Ip);
    }
    cpu::linear_bf16_tiles_in(p, actb + b * Ip, e - b, I, tile_weights(w.down, false), H, nullptr, TileOut::Add, xr, H,
                              em);
  };
  const int64_t groups = cpu::bf16_tiles_row_groups(T, pool.num_threads());
  if (groups == 0) {  // few rows: every op on the whole pool
    front(pool, 0, T);
    attention(batch, cache, pool, true, all);  // into tiles_o_ as bf16 (forward set AttnSeq::out_bf16)
    back(pool, 0, T);
    return;
  }
  const int64_t blocks = tile_pad(T) / 32;
  auto each_group = [&](auto&& ops) {
    pool.parallel_for(groups, 1, [&](int64_t g0, int64_t g1) {
      thread_local cpu::ThreadPool serial(1);
      for (int64_t g = g0; g < g1; ++g)
        ops(serial, g * blocks / groups * 32, std::min(T, (g + 1) * blocks / groups * 32));
    });
  };
  each_group([&](cpu::ThreadPool& p, int64_t b, int64_t e) {
    front(p, b, e);
    rope_store(batch, cache, b, e);
  });
  attend(batch, cache, pool, true, all);  // into tiles_o_ as bf16 (forward set AttnSeq::out_bf16)
  each_group(back);
}

}  // namespace lmrt
