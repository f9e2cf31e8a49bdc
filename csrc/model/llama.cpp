#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace lmrt {
namespace {

// Row-wise ops are cheap per row: split rows over the pool only when there are many.
template <class F>
void rows(cpu::ThreadPool& pool, int64_t num_rows, const F& fn) {
  if (num_rows < 16) fn(0, num_rows);
  else pool.parallel_for(num_rows, 8, fn);
}

}  // namespace

LlamaModel::LlamaModel(ModelSpec spec, Weights weights) : spec_(std::move(spec)), weights_(std::move(weights)) {
  spec_.validate();
}

void LlamaModel::pack_tiles(bool emulated) {
  for (LayerWeights& w : weights_.layers)
    for (Matrix* m : {&w.qkv, &w.o, &w.gate_up, &w.down}) lmrt::pack_tiles(*m, emulated);
  tiles_ = true;
  tiles_emulated_ = emulated;
}

void LlamaModel::reserve(int64_t T, int64_t R) {
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size;
  x_.reserve(T * H * 4);
  h_.reserve(T * H * 4);
  qkv_.reserve(T * spec_.qkv_dim() * 4);
  attn_.reserve(T * spec_.q_dim() * 4);
  gu_.reserve(T * 2 * I * 4);
  act_.reserve(T * I * 4);
  sel_.reserve(R * H * 4);
  logits_.reserve(R * static_cast<int64_t>(spec_.vocab_size) * 4);
  if (tiles_ && T >= kTilesMinRows)
    tiles_x_.reserve(cpu::bf16_tiles_x_size(T, std::max({H, static_cast<int64_t>(spec_.q_dim()), I})) * sizeof(uint16_t));
}

const float* LlamaModel::forward(const Batch& batch, KVCache& kv, cpu::ThreadPool& pool) {
  const int64_t T = batch.num_tokens(), R = static_cast<int64_t>(batch.logit_rows.size());
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size, V = spec_.vocab_size;
  const int64_t QKV = spec_.qkv_dim(), Q = spec_.q_dim(), KVD = spec_.kv_dim();
  if (T == 0) return nullptr;
  reserve(T, R);
  float* x = x_.data<float>();
  float* h = h_.data<float>();
  float* qkv = qkv_.data<float>();
  float* attn = attn_.data<float>();
  uint16_t* xb = tiles_x_.empty() ? nullptr : tiles_x_.data<uint16_t>();

  attn_seqs_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqRows& r = batch.seqs[s];
    attn_seqs_[s] = cpu::AttnSeq{qkv + r.first_row * QKV, QKV,     attn + r.first_row * Q, Q,
                                 r.block_table,           batch.positions.data() + r.first_row, r.num_rows};
  }
  const float attn_scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));

  cpu::embedding(weights_.embed.data.data(), weights_.embed.dtype, H, batch.tokens.data(), T, x, H);
  for (int l = 0; l < spec_.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    const cpu::KVLayer cache = kv.layer(l);
    // attention block
    rows(pool, T, [&](int64_t b, int64_t e) {
      cpu::rmsnorm(x + b * H, e - b, H, H, w.input_norm.data(), spec_.rms_norm_eps, h + b * H, H);
    });
    apply_linear(pool, w.qkv, h, T, H, w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(), qkv, QKV, xb);
    cpu::rope(qkv, T, QKV, spec_.num_heads, spec_.head_dim, batch.positions.data(), spec_.inv_freq.data(),
              spec_.attention_scaling);
    cpu::rope(qkv + Q, T, QKV, spec_.num_kv_heads, spec_.head_dim, batch.positions.data(), spec_.inv_freq.data(),
              spec_.attention_scaling);
    cpu::kv_store(cache, qkv + Q, QKV, qkv + Q + KVD, QKV, T, batch.slots.data());
    if (tiles_)
      cpu::paged_attention_tiles(pool, cache, attn_seqs_.data(), static_cast<int64_t>(attn_seqs_.size()),
                                 spec_.num_heads, attn_scale, kTilesMinRows, tiles_emulated_, attn_tiles_);
    else
      cpu::paged_attention(pool, cache, attn_seqs_.data(), static_cast<int64_t>(attn_seqs_.size()), spec_.num_heads,
                           attn_scale);
    apply_linear(pool, w.o, attn, T, Q, nullptr, h, H, xb);
    // MLP block
    rows(pool, T, [&](int64_t b, int64_t e) {
      for (int64_t i = b * H; i < e * H; ++i) x[i] += h[i];
      cpu::rmsnorm(x + b * H, e - b, H, H, w.post_attn_norm.data(), spec_.rms_norm_eps, h + b * H, H);
    });
    apply_linear(pool, w.gate_up, h, T, H, nullptr, gu_.data<float>(), 2 * I, xb);
    rows(pool, T, [&](int64_t b, int64_t e) {
      cpu::silu_mul(gu_.data<float>() + b * 2 * I, e - b, I, 2 * I, act_.data<float>() + b * I, I);
    });
    apply_linear(pool, w.down, act_.data<float>(), T, I, nullptr, h, H, xb);
    rows(pool, T, [&](int64_t b, int64_t e) {
      for (int64_t i = b * H; i < e * H; ++i) x[i] += h[i];
    });
  }
  if (R == 0) return nullptr;
  float* sel = sel_.data<float>();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = batch.logit_rows[r];
    if (row < 0 || row >= T) throw std::logic_error("forward: logit row outside the batch");
    cpu::rmsnorm(x + row * H, 1, H, H, weights_.norm.data(), spec_.rms_norm_eps, sel + r * H, H);
  }
  apply_linear(pool, weights_.output_matrix(), sel, R, H, nullptr, logits_.data<float>(), V);
  return logits_.data<float>();
}

}  // namespace lmrt
