// Embedding rows on the GPU (ops.h states the contract; cpu/embedding.cpp is the reference).
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

// One block a row; a bf16 entry is the upper half of an fp32 word, so widening it is exact.
__global__ void embedding_kernel(const void* table, bool bf16, int64_t H, const int32_t* ids, float* out, int64_t ldo) {
  const int64_t row = static_cast<int64_t>(ids[blockIdx.x]) * H;
  float* o = out + blockIdx.x * ldo;
  for (int64_t i = threadIdx.x; i < H; i += blockDim.x) {
    if (bf16) {
      const uint32_t bits = static_cast<uint32_t>(static_cast<const uint16_t*>(table)[row + i]) << 16;
      o[i] = __uint_as_float(bits);
    } else {
      o[i] = static_cast<const float*>(table)[row + i];
    }
  }
}

}  // namespace

void embedding(const void* table, DType dt, int64_t H, const int32_t* ids, int64_t M, float* out, int64_t ldo,
               void* stream) {
  if (M <= 0) return;
  embedding_kernel<<<static_cast<unsigned>(M), 256, 0, static_cast<cudaStream_t>(stream)>>>(table, dt == DType::BF16, H,
                                                                                            ids, out, ldo);
}

}  // namespace lmrt::cuda
