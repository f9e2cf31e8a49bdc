// The model's weights in the core layout (see lmrt/loader.py for the names).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/buffer.h"
#include "model/matrix.h"
#include "model/model_spec.h"

namespace lmrt {

enum class RawType { F32, BF16, U8, I8 };

// A borrowed view of a host array handed in by the bindings.
struct RawTensor {
  const void* data = nullptr;
  RawType type = RawType::F32;
  std::vector<int64_t> shape;
};

struct LayerWeights {
  std::vector<float> input_norm;      // [H]
  Matrix qkv;                         // [(nh + 2 nkv) hd, H]  q rows, then k, then v
  std::vector<float> qkv_bias;        // [(nh + 2 nkv) hd] or empty
  Matrix o;                           // [H, nh hd]
  std::vector<float> post_attn_norm;  // [H]
  Matrix gate_up;                     // [2 I, H]  gate rows, then up
  Matrix down;                        // [H, I]
};

struct Weights {
  Matrix embed;                      // [V, H]
  std::vector<LayerWeights> layers;  // [num_layers]
  std::vector<float> norm;           // [H]
  Matrix lm_head;                    // [V, H]; empty when tied to embed (a tied model may still
                                     // carry a quantized copy of embed here)

  const Matrix& output_matrix() const { return lm_head.empty() ? embed : lm_head; }
  size_t bytes() const;
};

// Copies and checks every tensor the spec needs; throws std::invalid_argument
// naming a missing tensor, a wrong shape or a wrong dtype. A matrix NAME comes dense
// (NAME, of the spec's weight dtype), 4-bit (NAME.codes, NAME.scales, NAME.mins) or
// int8 (NAME.q, NAME.scales).
Weights load_weights(const ModelSpec& spec, const std::map<std::string, RawTensor>& tensors);

}  // namespace lmrt
