// Device-side timings of the CUDA ops for benchmarks/bench_cuda.py (ops.h states what each measures): inputs made
// on the device from a hash (never zeros), CUDA events around graph replays, medians.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string("bench: ") + what + ": " + cudaGetErrorString(e));
}

__device__ uint32_t mix(uint64_t i, uint32_t seed) {
  uint64_t z = i * 0x9E3779B97F4A7C15ull + seed;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<uint32_t>(z ^ (z >> 31));
}

__global__ void fill_bytes(uint8_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = static_cast<uint8_t>(mix(i, seed));
}

// Uniform in [lo, lo + span).
__global__ void fill_floats(float* p, size_t n, uint32_t seed, float lo, float span) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = lo + span * (mix(i, seed) >> 8) * (1.0f / 16777216.0f);
}

// dst = src, 16 bytes a thread per step (the SMs' own copy, beside the copy engine's cudaMemcpy).
__global__ void copy16(const uint4* __restrict__ src, uint4* __restrict__ dst, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = src[i];
}

struct Device {
  std::vector<void*> ptrs;
  ~Device() {
    for (void* p : ptrs) cudaFree(p);
  }
  template <typename T>
  T* alloc(size_t n) {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
    ptrs.push_back(p);
    return static_cast<T*>(p);
  }
};

// Median milliseconds of one replay of the graph that `record` captures on stream s (the ops it issues on s), after
// 3 warm-up replays, `reps` replays each timed by events; `what` names it in an error.
template <typename Record>
double median_graph_ms(cudaStream_t s, int reps, const char* what, const Record& record) {
  cudaGraph_t graph;
  check(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    record();
  } catch (...) {  // end the capture, so the stream is usable (and the error is the op's, not a later call's)
    if (cudaStreamEndCapture(s, &graph) == cudaSuccess) cudaGraphDestroy(graph);
    throw;
  }
  check(cudaStreamEndCapture(s, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec;
  check(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "cudaEventCreate");
  check(cudaEventCreate(&b), "cudaEventCreate");
  for (int i = 0; i < 3; ++i) check(cudaGraphLaunch(exec, s), "cudaGraphLaunch");
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a, s), "cudaEventRecord");
    check(cudaGraphLaunch(exec, s), "cudaGraphLaunch");
    check(cudaEventRecord(b, s), "cudaEventRecord");
    check(cudaEventSynchronize(b), what);
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "cudaEventElapsedTime");
    t.push_back(ms);
  }
  check(cudaGetLastError(), what);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

CopyBandwidth copy_bandwidth_gbs(size_t bytes, int reps) {
  bytes = bytes / 16 * 16;
  Device d;
  uint8_t* src = d.alloc<uint8_t>(bytes);
  uint8_t* dst = d.alloc<uint8_t>(bytes);
  fill_bytes<<<1024, 256>>>(src, bytes, 1);
  check(cudaGetLastError(), "fill");
  check(cudaDeviceSynchronize(), "fill");  // the timed copies run on another (non-blocking) stream
  int sms = 0;
  check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), "cudaDeviceGetAttribute");
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  CopyBandwidth out;
  for (int kernel = 0; kernel < 2; ++kernel) {
    const double ms = median_graph_ms(s, reps, "copy", [&] {
      if (kernel)
        copy16<<<sms * 8, 256, 0, s>>>(reinterpret_cast<const uint4*>(src), reinterpret_cast<uint4*>(dst), bytes / 16);
      else
        check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s), "cudaMemcpyAsync");
    });
    (kernel ? out.kernel : out.memcpy) = 2.0 * bytes / (ms * 1e-3) / 1e9;  // bytes read plus bytes written
  }
  cudaStreamDestroy(s);
  return out;
}

LinearTiming time_linear_w4(int64_t M, int64_t K, int64_t N, int group_size, int reps, size_t min_bytes, W4Gemv shape,
                            bool tensor_cores) {
  const int64_t G = K / group_size;
  const size_t set_bytes = static_cast<size_t>(N) * (K / 2) + 2 * sizeof(float) * N * G;
  const int sets = static_cast<int>(std::max<size_t>(1, (min_bytes + set_bytes - 1) / set_bytes));
  Device d;
  std::vector<W4Matrix> w(sets);
  for (int i = 0; i < sets; ++i) {
    uint8_t* codes = d.alloc<uint8_t>(N * K / 2);
    float* scales = d.alloc<float>(N * G);
    float* mins = d.alloc<float>(N * G);
    fill_bytes<<<1024, 256>>>(codes, N * K / 2, 11 + i);
    fill_floats<<<1024, 256>>>(scales, N * G, 101 + i, 0.001f, 0.01f);
    fill_floats<<<1024, 256>>>(mins, N * G, 201 + i, -0.08f, 0.01f);
    w[i] = W4Matrix{codes, scales, mins, group_size};
  }
  float* x = d.alloc<float>(M * K);
  float* y = d.alloc<float>(M * N);
  fill_floats<<<1024, 256>>>(x, M * K, 7, -1.0f, 2.0f);
  check(cudaGetLastError(), "fill");
  check(cudaDeviceSynchronize(), "fill");
  cudaStream_t s;
  check(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate");
  // One graph: launches over the weight sets in turn (so the L2 holds none of them), at least 64 launches.
  const int launches = std::max(64, sets);
  const double ms = median_graph_ms(s, reps, "linear_w4", [&] {
    for (int i = 0; i < launches; ++i) {
      if (tensor_cores)
        linear_w4_tc(x, M, K, K, w[i % sets], N, nullptr, y, N, s);
      else
        linear_w4(x, M, K, K, w[i % sets], N, nullptr, y, N, s, shape);
    }
  });
  cudaStreamDestroy(s);
  LinearTiming t;
  t.us = ms * 1e3 / launches;
  t.bytes = static_cast<double>(set_bytes) + 4.0 * (M * K + M * N);
  return t;
}

}  // namespace lmrt::cuda
