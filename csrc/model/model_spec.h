// Shape and numerics of a Llama-family model, as the core needs them.
// Built in Python (lmrt/model_config.py) from an HF config.json.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ops.h"

namespace lmrt {

struct ModelSpec {
  int vocab_size = 0;
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  float rms_norm_eps = 1e-6f;
  std::vector<float> inv_freq;     // [head_dim / 2] rotary frequencies, scaling variants applied
  float attention_scaling = 1.0f;  // multiplies cos and sin (1 except for YaRN-like variants)
  bool tie_word_embeddings = false;
  bool qkv_bias = false;
  DType weight_dtype = DType::F32;

  int q_dim() const { return num_heads * head_dim; }
  int kv_dim() const { return num_kv_heads * head_dim; }
  int qkv_dim() const { return q_dim() + 2 * kv_dim(); }

  void validate() const {
    auto need = [](bool ok, const std::string& what) {
      if (!ok) throw std::invalid_argument("invalid model spec: " + what);
    };
    need(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_layers > 0,
         "vocab_size, hidden_size, intermediate_size and num_layers must be positive");
    need(num_heads > 0 && num_kv_heads > 0 && num_heads % num_kv_heads == 0,
         "num_heads must be a positive multiple of num_kv_heads");
    need(head_dim > 0 && head_dim % 2 == 0, "head_dim must be positive and even");
    need(static_cast<int>(inv_freq.size()) == head_dim / 2, "inv_freq must hold head_dim / 2 values");
    need(rms_norm_eps > 0.f, "rms_norm_eps must be positive");
  }
};

}  // namespace lmrt
