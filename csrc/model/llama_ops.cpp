#include "model/llama_ops.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "model/llama.h"

namespace lmrt {
namespace {

bool quantized(KVDType dt) { return dt == KVDType::I8 || dt == KVDType::I4; }

}  // namespace

template <typename T>
const T* OpsLlamaModel::upload(const std::vector<T>& host) {
  owned_.emplace_back(ops_);
  owned_.back().reserve(host.size() * sizeof(T));
  ops_.to_device(owned_.back().data<void>(), host.data(), host.size() * sizeof(T));
  return owned_.back().data<T>();
}

void* OpsLlamaModel::kv_array(size_t bytes) {
  owned_.emplace_back(ops_);
  owned_.back().reserve(bytes);
  return owned_.back().data<void>();
}

OpsLlamaModel::OpsLlamaModel(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv)
    : spec_((spec.validate(), std::move(spec))), weights_(std::move(weights)), ops_(backend.ops()) {
  const BackendOptions& o = backend.options();
  if (o.linear_precision != LinearPrecision::FP32)
    throw std::invalid_argument("the op-set model runs fp32 activations (no int8 yet): use linear_precision 'fp32'");
  bf16_ = o.prefill_precision == PrefillPrecision::BF16;
  graphs_ = o.step_graphs;
  if (bf16_ && !ops_.bf16_unit())
    throw std::invalid_argument("bf16 prefill: this op set has no bf16 unit: use prefill_precision 'fp32'");
  if (kv.v_dtype == KVDType::I4Channel) throw std::invalid_argument("KV cache: I4Channel is for K only");
  if (kv.k_dtype == KVDType::I4Channel && kv.num_stage_slots <= 0)
    throw std::invalid_argument("KV cache: int4 K (I4Channel) needs staging slots");
  if (kv.num_blocks <= 0 || kv.block_size <= 0)
    throw std::invalid_argument("KV cache: num_blocks and block_size must be positive");
  const int hd = spec_.head_dim, nkv = spec_.num_kv_heads;
  num_blocks_ = kv.num_blocks;
  for (KVDType dt : {kv.k_dtype, kv.v_dtype})
    if (dt == KVDType::I4 && hd % 32)
      throw std::invalid_argument("KV cache: int4 rows need head_dim a multiple of 32, got " + std::to_string(hd));
  if (weights_.embed.format != WeightFormat::Dense)
    throw std::invalid_argument("the op-set model takes a dense embedding table");
  for (DeviceBuffer* b : {&tokens_, &positions_, &slots_, &tables_, &table_start_, &x_, &h_, &qkv_, &attn_, &gu_, &act_,
                          &sel_, &logits_, &tokens_out_, &attn_scratch_, &sampling_, &sampling_ids_, &sealed_})
    *b = DeviceBuffer(ops_);

  const DeviceMatrix embed = ops_.upload_matrix(weights_.embed);
  embed_ = embed.data;
  head_ = weights_.lm_head.empty() ? embed : ops_.upload_matrix(weights_.lm_head);
  norm_ = upload(weights_.norm);
  inv_freq_ = upload(spec_.inv_freq);
  rotate_qk_ = kv.k_dtype == KVDType::I8;
  const int64_t rows = static_cast<int64_t>(kv.num_blocks) * nkv * kv.block_size;  // a layer's cache rows
  // int4 K per channel: every layer's blocks being filled keep their K rows at 8 bits in a staging slot (which
  // block has which: stages_, the engine's bookkeeping; its table crosses to the device each step)
  const bool staged = kv.k_dtype == KVDType::I4Channel;
  const int64_t stage_rows = staged ? static_cast<int64_t>(kv.num_stage_slots) * nkv * kv.block_size : 0;
  if (staged) {
    stages_ = StageTable(kv.num_blocks, kv.num_stage_slots);
    stage_of_block_ = static_cast<int32_t*>(kv_array(kv.num_blocks * sizeof(int32_t)));
  }
  for (const LayerWeights& lw : weights_.layers) {
    Layer l;
    l.qkv = ops_.upload_matrix(lw.qkv);
    l.o = ops_.upload_matrix(lw.o);
    l.gate_up = ops_.upload_matrix(lw.gate_up);
    l.down = ops_.upload_matrix(lw.down);
    l.input_norm = upload(lw.input_norm);
    l.post_attn_norm = upload(lw.post_attn_norm);
    l.qkv_bias = lw.qkv_bias.empty() ? nullptr : upload(lw.qkv_bias);
    KVLayer& c = l.kv;
    c.k_dtype = kv.k_dtype;
    c.v_dtype = kv.v_dtype;
    c.n_kv_heads = nkv;
    c.head_dim = hd;
    c.block_size = kv.block_size;
    c.k = kv_array(rows * kv_row_bytes(kv.k_dtype, hd));
    c.v = kv_array(rows * kv_row_bytes(kv.v_dtype, hd));
    kv_bytes_ += rows * (kv_row_bytes(kv.k_dtype, hd) + kv_row_bytes(kv.v_dtype, hd));
    if (quantized(kv.k_dtype)) {
      c.k_scales = static_cast<uint16_t*>(kv_array(rows * sizeof(uint16_t)));
      c.k_zeros = static_cast<uint8_t*>(kv_array(rows));
      kv_bytes_ += 3 * rows;
    }
    if (staged) {  // a (scale, zero) per block, kv head and channel; the staging slots' I8 rows
      const int64_t channels = static_cast<int64_t>(kv.num_blocks) * nkv * hd;
      c.k_scales = static_cast<uint16_t*>(kv_array(channels * sizeof(uint16_t)));
      c.k_zeros = static_cast<uint8_t*>(kv_array(channels));
      c.k_stage = static_cast<uint8_t*>(kv_array(stage_rows * hd));
      c.k_stage_scales = static_cast<uint16_t*>(kv_array(stage_rows * sizeof(uint16_t)));
      c.k_stage_zeros = static_cast<uint8_t*>(kv_array(stage_rows));
      c.stage_of_block = stage_of_block_;
      kv_bytes_ += 3 * channels + stage_rows * (hd + 3);
    }
    if (quantized(kv.v_dtype)) {
      c.v_scales = static_cast<uint16_t*>(kv_array(rows * sizeof(uint16_t)));
      c.v_zeros = static_cast<uint8_t*>(kv_array(rows));
      kv_bytes_ += 3 * rows;
    }
    layers_.push_back(l);
  }
}

void OpsLlamaModel::reserve(int64_t T, int64_t R, int64_t table_len) {
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size;
  tokens_.reserve(T * sizeof(int32_t));
  positions_.reserve(T * sizeof(int32_t));
  slots_.reserve(T * sizeof(int64_t));
  tables_.reserve(table_len * sizeof(int32_t));
  table_start_.reserve(T * sizeof(int64_t));
  x_.reserve(T * H * 4);
  h_.reserve(T * H * 4);
  qkv_.reserve(T * spec_.qkv_dim() * 4);
  attn_.reserve(T * spec_.q_dim() * 4);
  gu_.reserve(T * 2 * I * 4);
  act_.reserve(T * I * 4);
  attn_scratch_.reserve(std::max<size_t>(ops_.attention_scratch_bytes(T, spec_.num_heads, spec_.head_dim), 1));
  sel_.reserve(std::max<int64_t>(R, 1) * H * 4);
  logits_.reserve(std::max<int64_t>(R, 1) * spec_.vocab_size * 4);
  tokens_out_.reserve(std::max<int64_t>(R, 1) * sizeof(int32_t));
  host_logits_.resize(R * static_cast<int64_t>(spec_.vocab_size));
  host_tokens_.resize(R);
}

const float* OpsLlamaModel::forward(const Batch& batch) {
  const int64_t T = batch.num_tokens(), R = static_cast<int64_t>(batch.logit_rows.size());
  const int64_t V = spec_.vocab_size;
  if (T == 0) return nullptr;
  // Every sequence's block table, end to end (the blocks its last row sees), and each row's start in them.
  const int bs = layers_.empty() ? 1 : layers_[0].kv.block_size;
  host_tables_.clear();
  host_table_start_.assign(T, 0);
  for (const SeqRows& s : batch.seqs) {
    const int64_t start = static_cast<int64_t>(host_tables_.size());
    int32_t last = 0;
    for (int64_t r = s.first_row; r < s.first_row + s.num_rows; ++r) {
      last = std::max(last, batch.positions[r]);
      host_table_start_[r] = start;
    }
    host_tables_.insert(host_tables_.end(), s.block_table, s.block_table + last / bs + 1);
  }
  reserve(T, R, static_cast<int64_t>(host_tables_.size()));
  ops_.to_device(tokens_.data<void>(), batch.tokens.data(), T * sizeof(int32_t));
  ops_.to_device(positions_.data<void>(), batch.positions.data(), T * sizeof(int32_t));
  ops_.to_device(slots_.data<void>(), batch.slots.data(), T * sizeof(int64_t));
  ops_.to_device(tables_.data<void>(), host_tables_.data(), host_tables_.size() * sizeof(int32_t));
  ops_.to_device(table_start_.data<void>(), host_table_start_.data(), T * sizeof(int64_t));
  num_sealed_ = static_cast<int64_t>(batch.sealed_blocks.size());
  if (stage_of_block_) {  // int4 K: the blocks' staging slots as the engine left them, the blocks this step fills
    ops_.to_device(stage_of_block_, stages_.stage_of_block(), num_blocks_ * sizeof(int32_t));
    sealed_.reserve(std::max<int64_t>(num_sealed_, 1) * sizeof(int32_t));
    if (num_sealed_) ops_.to_device(sealed_.data<void>(), batch.sealed_blocks.data(), num_sealed_ * sizeof(int32_t));
  }

  // A decode step (a row per sequence, each a logit row) runs as a graph the op set recorded for its row count, where
  // it records them (the CUDA op set: one launch for the step's ~10 kernels a layer), re-recorded when a workspace
  // has moved since (a larger step grew it).
  const bool decode = static_cast<int64_t>(batch.seqs.size()) == T && R == T && num_sealed_ == 0;
  if (graphs_ && decode) {
    const std::vector<const void*> layout = workspace_layout();
    auto it = graph_layouts_.find(T);
    if (it != graph_layouts_.end() && it->second == layout) {
      ops_.replay(T);
    } else if (ops_.capture(T)) {
      try {
        run(batch, T, R);
      } catch (...) {
        ops_.abandon_capture();
        throw;
      }
      if (ops_.end_capture()) {
        graph_layouts_[T] = layout;
      } else {  // the device refused the recording (nothing ran): every step eager from now on
        graphs_ = false;
        graph_layouts_.clear();
        run(batch, T, R);
      }
    } else {
      run(batch, T, R);
    }
  } else {
    run(batch, T, R);
  }
  if (R == 0) return nullptr;
  if (batch.sample_on_device) {  // only the token ids cross to the host
    if (static_cast<int64_t>(batch.sampling.size()) != R)
      throw std::logic_error("forward: sample_on_device needs one RowSampling a logit row");
    sampling_.reserve(R * sizeof(RowSampling));
    ops_.to_device(sampling_.data<void>(), batch.sampling.data(), R * sizeof(RowSampling));
    const size_t n_ids = batch.sampling_ids.size();
    sampling_ids_.reserve(std::max<size_t>(n_ids, 1) * sizeof(int32_t));
    if (n_ids) ops_.to_device(sampling_ids_.data<void>(), batch.sampling_ids.data(), n_ids * sizeof(int32_t));
    ops_.sample(logits_.data<float>(), R, V, sampling_.data<RowSampling>(), sampling_ids_.data<int32_t>(),
                tokens_out_.data<int32_t>());
    ops_.to_host(host_tokens_.data(), tokens_out_.data<void>(), R * sizeof(int32_t));
    return nullptr;
  }
  ops_.to_host(host_logits_.data(), logits_.data<void>(), R * V * sizeof(float));
  return host_logits_.data();
}

// The step's ops from the embedding to the logits (on the device), for the rows already uploaded.
void OpsLlamaModel::run(const Batch& batch, int64_t T, int64_t R) {
  const int64_t H = spec_.hidden_size, V = spec_.vocab_size;
  float* x = x_.data<float>();
  ops_.embedding(embed_, weights_.embed.dtype, H, tokens_.data<int32_t>(), T, x);
  const float* residual = nullptr;  // the last layer's output, not yet in x
  const bool bf16 = bf16_ && T >= kBf16MinRows;
  for (const Layer& l : layers_) {
    layer(l, T, residual, bf16);
    residual = h_.data<float>();
  }
  if (R == 0) return;
  if (residual) ops_.add(x, residual, T * H);
  float* sel = sel_.data<float>();
  // The final norm of the logit rows, a launch per run of consecutive rows (a decode step's are all of them).
  for (int64_t r = 0; r < R;) {
    const int64_t row = batch.logit_rows[r];
    if (row < 0 || row >= T) throw std::logic_error("forward: logit row outside the batch");
    int64_t n = 1;
    while (r + n < R && batch.logit_rows[r + n] == row + n) ++n;
    ops_.rmsnorm(x + row * H, n, H, H, norm_, spec_.rms_norm_eps, sel + r * H, H);
    r += n;
  }
  ops_.linear(head_, sel, R, H, nullptr, logits_.data<float>(), V, bf16_ && R >= kBf16MinRows);
}

// The device addresses a recorded step reads and writes (a graph keeps them): the workspaces that grow.
std::vector<const void*> OpsLlamaModel::workspace_layout() const {
  std::vector<const void*> out;
  for (const DeviceBuffer* b : {&tokens_, &positions_, &slots_, &tables_, &table_start_, &x_, &h_, &qkv_, &attn_, &gu_,
                                &act_, &sel_, &logits_, &attn_scratch_})
    out.push_back(b->data<void>());
  out.push_back(host_table_start_.data());  // the CPU op set's attention reads it when the op runs
  return out;
}

// One decoder layer, LlamaModel::layer's ops in its order (exact fp32, or the products in bf16), each residual add
// fused into the norm after it (the last one into the next layer's first norm).
void OpsLlamaModel::layer(const Layer& w, int64_t T, const float* residual, bool bf16) {
  const int64_t H = spec_.hidden_size, I = spec_.intermediate_size, QKV = spec_.qkv_dim(), Q = spec_.q_dim();
  const int64_t KVD = spec_.kv_dim();
  const int nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  const float eps = spec_.rms_norm_eps;
  float *x = x_.data<float>(), *h = h_.data<float>(), *qkv = qkv_.data<float>(), *attn = attn_.data<float>();
  const int32_t* pos = positions_.data<int32_t>();
  // attention block
  ops_.add_rmsnorm(x, residual, T, H, w.input_norm, eps, h);
  ops_.linear(w.qkv, h, T, H, w.qkv_bias, qkv, QKV, bf16);
  ops_.rope(qkv, T, QKV, nh + nkv, hd, pos, inv_freq_, spec_.attention_scaling);  // q heads, then k heads
  if (rotate_qk_) ops_.hadamard_heads(qkv, T, QKV, nh + nkv, hd);
  ops_.kv_store(w.kv, qkv + Q, QKV, qkv + Q + KVD, QKV, T, slots_.data<int64_t>());
  if (num_sealed_) ops_.kv_seal(w.kv, sealed_.data<int32_t>(), num_sealed_);  // before a query reads them as int4
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ops_.paged_attention(w.kv, qkv, QKV, attn, Q, pos, tables_.data<int32_t>(), table_start_.data<int64_t>(),
                       host_table_start_.data(), T, nh, scale, attn_scratch_.data<void>());
  ops_.linear(w.o, attn, T, Q, nullptr, h, H, bf16);
  // MLP block
  ops_.add_rmsnorm(x, h, T, H, w.post_attn_norm, eps, h);
  ops_.linear(w.gate_up, h, T, H, nullptr, gu_.data<float>(), 2 * I, bf16);
  ops_.silu_mul(gu_.data<float>(), T, I, 2 * I, act_.data<float>(), I);
  ops_.linear(w.down, act_.data<float>(), T, I, nullptr, h, H, bf16);  // added into x by the next norm
}

std::unique_ptr<Model> make_model(ModelSpec spec, Weights weights, Backend& backend, const KVCacheShape& kv,
                                  bool ops_model) {
  if (ops_model || backend.device() != Device::Cpu)
    return std::make_unique<OpsLlamaModel>(std::move(spec), std::move(weights), backend, kv);
  return std::make_unique<LlamaModel>(std::move(spec), std::move(weights), backend, kv);
}

}  // namespace lmrt
