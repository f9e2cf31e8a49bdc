// The CUDA runtime's view of the machine, and the host-array test plumbing of the ops (ops.h).
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cuda/ops.h"

namespace lmrt::cuda {
namespace {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

void need_device() {
  std::string why;
  if (!available(&why)) throw std::runtime_error("no CUDA device: " + why);
}

// A device copy of n floats of host (or NaN-filled where host is null), freed on scope exit.
struct DeviceArray {
  float* p = nullptr;
  size_t n;
  DeviceArray(const float* host, size_t n_) : n(n_) {
    check(cudaMalloc(&p, n * sizeof(float)), "cudaMalloc");
    if (host) {
      check(cudaMemcpy(p, host, n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy to device");
    } else {
      const std::vector<float> nan(n, std::nanf(""));
      check(cudaMemcpy(p, nan.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy to device");
    }
  }
  ~DeviceArray() { cudaFree(p); }
  void to_host(float* host) const {
    check(cudaMemcpy(host, p, n * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy to host");
  }
};

}  // namespace

bool available(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = cudaGetErrorString(e);
    cudaGetLastError();  // clear it
    return false;
  }
  if (n == 0) {
    if (why) *why = "the CUDA runtime found no device";
    return false;
  }
  return true;
}

std::string device_name() {
  if (!available(nullptr)) return "";
  cudaDeviceProp p{};
  check(cudaGetDeviceProperties(&p, 0), "cudaGetDeviceProperties");
  return p.name;
}

void rmsnorm_host(const float* x, int64_t M, int64_t H, const float* w, float eps, float* y) {
  need_device();
  DeviceArray dx(x, M * H), dw(w, H), dy(nullptr, M * H);
  rmsnorm(dx.p, M, H, H, dw.p, eps, dy.p, H, nullptr);
  check(cudaGetLastError(), "rmsnorm launch");
  check(cudaDeviceSynchronize(), "rmsnorm");
  dy.to_host(y);
}

void silu_mul_host(const float* gu, int64_t M, int64_t I, float* out) {
  need_device();
  DeviceArray dg(gu, M * 2 * I), dout(nullptr, M * I);
  silu_mul(dg.p, M, I, 2 * I, dout.p, I, nullptr);
  check(cudaGetLastError(), "silu_mul launch");
  check(cudaDeviceSynchronize(), "silu_mul");
  dout.to_host(out);
}

}  // namespace lmrt::cuda
