#include "model/weights.h"

#include <cstring>
#include <sstream>
#include <stdexcept>

namespace lmrt {
namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

const char* dtype_name(cpu::DType dt) { return dt == cpu::DType::F32 ? "float32" : "bfloat16"; }

size_t dtype_size(cpu::DType dt) { return dt == cpu::DType::F32 ? 4 : 2; }

class Source {
 public:
  explicit Source(const std::map<std::string, RawTensor>& t) : t_(t) {}

  const RawTensor* find(const std::string& name) const {
    auto it = t_.find(name);
    return it == t_.end() ? nullptr : &it->second;
  }

  const RawTensor& get(const std::string& name, const std::vector<int64_t>& shape) const {
    const RawTensor* r = find(name);
    if (!r) throw std::invalid_argument("weights: missing tensor '" + name + "'");
    if (r->shape != shape)
      throw std::invalid_argument("weights: tensor '" + name + "' has shape " + shape_str(r->shape) +
                                  ", expected " + shape_str(shape));
    return *r;
  }

  Matrix matrix(const std::string& name, int64_t rows, int64_t cols, cpu::DType dt) const {
    const RawTensor& r = get(name, {rows, cols});
    if (r.dtype != dt)
      throw std::invalid_argument("weights: tensor '" + name + "' is " + dtype_name(r.dtype) +
                                  ", the model's weight dtype is " + dtype_name(dt));
    Matrix m;
    m.dtype = dt;
    m.rows = rows;
    m.cols = cols;
    m.data.reset(static_cast<size_t>(rows * cols) * dtype_size(dt));
    std::memcpy(m.data.data(), r.data, m.data.bytes());
    return m;
  }

  std::vector<float> vector(const std::string& name, int64_t n) const {
    const RawTensor& r = get(name, {n});
    if (r.dtype != cpu::DType::F32)
      throw std::invalid_argument("weights: tensor '" + name + "' must be float32 (norms and biases)");
    const float* p = static_cast<const float*>(r.data);
    return std::vector<float>(p, p + n);
  }

 private:
  const std::map<std::string, RawTensor>& t_;
};

}  // namespace

size_t Weights::bytes() const {
  size_t b = embed.data.bytes() + lm_head.data.bytes() + norm.size() * 4;
  for (const auto& l : layers)
    b += l.qkv.data.bytes() + l.o.data.bytes() + l.gate_up.data.bytes() + l.down.data.bytes() +
         (l.input_norm.size() + l.post_attn_norm.size() + l.qkv_bias.size()) * 4;
  return b;
}

Weights load_weights(const ModelSpec& spec, const std::map<std::string, RawTensor>& tensors) {
  spec.validate();
  const Source src(tensors);
  const int64_t H = spec.hidden_size, V = spec.vocab_size, I = spec.intermediate_size;
  const cpu::DType dt = spec.weight_dtype;
  Weights w;
  w.embed = src.matrix("embed_tokens", V, H, dt);
  w.norm = src.vector("norm", H);
  if (!spec.tie_word_embeddings) w.lm_head = src.matrix("lm_head", V, H, dt);
  w.layers.resize(spec.num_layers);
  for (int i = 0; i < spec.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    LayerWeights& l = w.layers[i];
    l.input_norm = src.vector(p + "input_norm", H);
    l.qkv = src.matrix(p + "qkv_proj", spec.qkv_dim(), H, dt);
    if (spec.qkv_bias) l.qkv_bias = src.vector(p + "qkv_bias", spec.qkv_dim());
    l.o = src.matrix(p + "o_proj", H, spec.q_dim(), dt);
    l.post_attn_norm = src.vector(p + "post_attn_norm", H);
    l.gate_up = src.matrix(p + "gate_up_proj", 2 * I, H, dt);
    l.down = src.matrix(p + "down_proj", H, I, dt);
  }
  return w;
}

}  // namespace lmrt
