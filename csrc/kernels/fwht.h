// The fast Walsh-Hadamard transform of one block, shared by the CPU and CUDA backends (cpu/hadamard.cpp,
// cuda/kv_cache.cu), so both rotate int8 K (and q) with the same operations in the same order: the same bits.
#pragma once

#ifdef __CUDACC__
#define LMRT_HOST_DEVICE __host__ __device__
#else
#define LMRT_HOST_DEVICE
#endif

namespace lmrt {

// v[0..B) <- H_B v * norm in place, H in Sylvester order (H_2n = [[H_n, H_n], [H_n, -H_n]]), B a power of two. The
// first two levels run together as 4-point transforms on each run of 4; the later levels pair runs of len >= 4
// contiguous floats (which a compiler vectorizes); norm rides on the last level.
LMRT_HOST_DEVICE inline void fwht_block(float* v, int B, float norm) {
  if (B == 1) return;
  if (B == 2) {
    const float a = v[0], c = v[1];
    v[0] = (a + c) * norm;
    v[1] = (a - c) * norm;
    return;
  }
  const float s4 = B == 4 ? norm : 1.0f;
  for (int i = 0; i < B; i += 4) {  // levels len = 1 and 2
    const float a = v[i], c = v[i + 1], d = v[i + 2], e = v[i + 3];
    const float p = a + c, q = a - c, r = d + e, t = d - e;
    v[i] = (p + r) * s4;
    v[i + 1] = (q + t) * s4;
    v[i + 2] = (p - r) * s4;
    v[i + 3] = (q - t) * s4;
  }
  for (int len = 4; len < B; len <<= 1) {
    const float s = 2 * len == B ? norm : 1.0f;
    for (int i = 0; i < B; i += 2 * len) {
      float* lo = v + i;
      float* hi = v + i + len;
      for (int j = 0; j < len; ++j) {
        const float a = lo[j], c = hi[j];
        lo[j] = (a + c) * s;
        hi[j] = (a - c) * s;
      }
    }
  }
}

}  // namespace lmrt
