#include "model/llama.h"

#include <cmath>
#include <stdexcept>

namespace lmrt {

LlamaModel::LlamaModel(ModelSpec spec, Weights weights) : spec_(std::move(spec)), weights_(std::move(weights)) {
  spec_.validate();
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
}

const float* LlamaModel::forward(const Batch& batch, KVCache& kv, cpu::ThreadPool& pool) {
  const int64_t T = batch.num_tokens(), R = static_cast<int64_t>(batch.logit_rows.size());
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size, V = spec_.vocab_size;
  const int64_t QKV = spec_.qkv_dim(), Q = spec_.q_dim(), KVD = spec_.kv_dim();
  const cpu::DType wdt = spec_.weight_dtype;
  if (T == 0) return nullptr;
  reserve(T, R);
  float* x = x_.data<float>();
  float* h = h_.data<float>();
  float* qkv = qkv_.data<float>();
  float* attn = attn_.data<float>();

  attn_seqs_.resize(batch.seqs.size());
  for (size_t s = 0; s < batch.seqs.size(); ++s) {
    const SeqRows& r = batch.seqs[s];
    attn_seqs_[s] = cpu::AttnSeq{qkv + r.first_row * QKV, QKV,     attn + r.first_row * Q, Q,
                                 r.block_table,           batch.positions.data() + r.first_row, r.num_rows};
  }
  const float attn_scale = 1.0f / std::sqrt(static_cast<float>(spec_.head_dim));

  cpu::embedding(weights_.embed.data.data(), wdt, H, batch.tokens.data(), T, x, H);
  for (int l = 0; l < spec_.num_layers; ++l) {
    const LayerWeights& w = weights_.layers[l];
    const cpu::KVLayer cache = kv.layer(l);
    // attention block
    cpu::rmsnorm(x, T, H, H, w.input_norm.data(), spec_.rms_norm_eps, h, H);
    cpu::linear(pool, h, T, H, H, w.qkv.data.data(), wdt, QKV, w.qkv_bias.empty() ? nullptr : w.qkv_bias.data(), qkv, QKV);
    cpu::rope(qkv, T, QKV, spec_.num_heads, spec_.head_dim, batch.positions.data(), spec_.inv_freq.data(),
              spec_.attention_scaling);
    cpu::rope(qkv + Q, T, QKV, spec_.num_kv_heads, spec_.head_dim, batch.positions.data(), spec_.inv_freq.data(),
              spec_.attention_scaling);
    cpu::kv_store(cache, qkv + Q, QKV, qkv + Q + KVD, QKV, T, batch.slots.data());
    cpu::paged_attention(pool, cache, attn_seqs_.data(), static_cast<int64_t>(attn_seqs_.size()), spec_.num_heads,
                         attn_scale);
    cpu::linear(pool, attn, T, Q, Q, w.o.data.data(), wdt, H, nullptr, h, H);
    for (int64_t i = 0; i < T * H; ++i) x[i] += h[i];
    // MLP block
    cpu::rmsnorm(x, T, H, H, w.post_attn_norm.data(), spec_.rms_norm_eps, h, H);
    cpu::linear(pool, h, T, H, H, w.gate_up.data.data(), wdt, 2 * I, nullptr, gu_.data<float>(), 2 * I);
    cpu::silu_mul(gu_.data<float>(), T, I, 2 * I, act_.data<float>(), I);
    cpu::linear(pool, act_.data<float>(), T, I, I, w.down.data.data(), wdt, H, nullptr, h, H);
    for (int64_t i = 0; i < T * H; ++i) x[i] += h[i];
  }
  if (R == 0) return nullptr;
  float* sel = sel_.data<float>();
  for (int64_t r = 0; r < R; ++r) {
    const int64_t row = batch.logit_rows[r];
    if (row < 0 || row >= T) throw std::logic_error("forward: logit row outside the batch");
    cpu::rmsnorm(x + row * H, 1, H, H, weights_.norm.data(), spec_.rms_norm_eps, sel + r * H, H);
  }
  const Matrix& out = weights_.output_matrix();
  cpu::linear(pool, sel, R, H, H, out.data.data(), wdt, V, nullptr, logits_.data<float>(), V);
  return logits_.data<float>();
}

}  // namespace lmrt
