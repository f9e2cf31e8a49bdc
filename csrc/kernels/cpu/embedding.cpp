#include <cstring>

#include "kernels/cpu/bf16.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out, int64_t ldo) {
  for (int64_t m = 0; m < M; ++m) {
    const int64_t row = static_cast<int64_t>(ids[m]) * H;
    float* o = out + m * ldo;  // [H]
    if (dt == DType::BF16) {
      const uint16_t* src = static_cast<const uint16_t*>(table) + row;  // [H]
      for (int64_t i = 0; i < H; ++i) o[i] = bf16_bits_to_f32(src[i]);
    } else {
      std::memcpy(o, static_cast<const float*>(table) + row, H * sizeof(float));
    }
  }
}

}  // namespace lmrt::cpu
