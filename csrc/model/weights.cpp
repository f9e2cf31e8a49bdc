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

const char* type_name(RawType t) {
  switch (t) {
    case RawType::F32: return "float32";
    case RawType::BF16: return "bfloat16";
    case RawType::U8: return "uint8";
    case RawType::I8: return "int8";
  }
  return "?";
}

size_t type_size(RawType t) { return t == RawType::F32 ? 4 : t == RawType::BF16 ? 2 : 1; }

RawType raw_type(DType dt) { return dt == DType::F32 ? RawType::F32 : RawType::BF16; }

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
      throw std::invalid_argument("weights: tensor '" + name + "' has shape " + shape_str(r->shape) + ", expected " +
                                  shape_str(shape));
    return *r;
  }

  // Copies tensor `name` of the given shape and type into `dst`.
  void copy(const std::string& name, const std::vector<int64_t>& shape, RawType type, Buffer& dst) const {
    const RawTensor& r = get(name, shape);
    if (r.type != type)
      throw std::invalid_argument("weights: tensor '" + name + "' is " + type_name(r.type) + ", expected " +
                                  type_name(type));
    size_t n = type_size(type);
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    dst.reset(n);
    std::memcpy(dst.data(), r.data, n);
  }

  Matrix matrix(const std::string& name, int64_t rows, int64_t cols, DType dt) const {
    Matrix m;
    m.rows = rows;
    m.cols = cols;
    if (const RawTensor* scales = find(name + ".scales"); scales && find(name + ".codes")) {
      if (scales->shape.size() != 2 || scales->shape[1] <= 0 || cols % scales->shape[1] != 0)
        throw std::invalid_argument("weights: '" + name + ".scales' must be [" + std::to_string(rows) +
                                    ", in / group_size]");
      m.format = WeightFormat::W4;
      m.group_size = static_cast<int>(cols / scales->shape[1]);
      if (m.group_size != 32 && m.group_size != 64 && m.group_size != 128)
        throw std::invalid_argument("weights: '" + name + "' has 4-bit group size " + std::to_string(m.group_size) +
                                    "; supported: 32, 64, 128");
      const int64_t groups = cols / m.group_size;
      copy(name + ".codes", {rows, cols / 2}, RawType::U8, m.data);
      copy(name + ".scales", {rows, groups}, RawType::F32, m.scales);
      copy(name + ".mins", {rows, groups}, RawType::F32, m.mins);
    } else if (find(name + ".q")) {
      m.format = WeightFormat::I8;
      copy(name + ".q", {rows, cols}, RawType::I8, m.data);
      copy(name + ".scales", {rows}, RawType::F32, m.scales);
    } else {
      m.dtype = dt;
      copy(name, {rows, cols}, raw_type(dt), m.data);
    }
    return m;
  }

  bool has_matrix(const std::string& name) const { return find(name) || find(name + ".codes") || find(name + ".q"); }

  std::vector<float> vector(const std::string& name, int64_t n) const {
    const RawTensor& r = get(name, {n});
    if (r.type != RawType::F32)
      throw std::invalid_argument("weights: tensor '" + name + "' must be float32 (norms and biases)");
    const float* p = static_cast<const float*>(r.data);
    return std::vector<float>(p, p + n);
  }

 private:
  const std::map<std::string, RawTensor>& t_;
};

}  // namespace

size_t Weights::bytes() const {
  size_t b = embed.bytes() + lm_head.bytes() + norm.size() * 4;
  for (const auto& l : layers)
    b += l.qkv.bytes() + l.o.bytes() + l.gate_up.bytes() + l.down.bytes() +
         (l.input_norm.size() + l.post_attn_norm.size() + l.qkv_bias.size()) * 4;
  return b;
}

Weights load_weights(const ModelSpec& spec, const std::map<std::string, RawTensor>& tensors) {
  spec.validate();
  const Source src(tensors);
  const int64_t H = spec.hidden_size, V = spec.vocab_size, I = spec.intermediate_size;
  const DType dt = spec.weight_dtype;
  Weights w;
  w.embed = src.matrix("embed_tokens", V, H, dt);
  if (w.embed.format != WeightFormat::Dense)
    throw std::invalid_argument("weights: embed_tokens must be dense (a quantized copy may go in lm_head)");
  w.norm = src.vector("norm", H);
  if (!spec.tie_word_embeddings || src.has_matrix("lm_head")) w.lm_head = src.matrix("lm_head", V, H, dt);
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
