// The CUDA op set, being built (issue 15): the counterpart of kernels/cpu/ops.h, op for op on the same contracts,
// over device pointers and a stream (a cudaStream_t passed as void*, so this header needs no CUDA include).
// Compiled only when the build finds nvcc (LMRT_HAVE_CUDA); tests/test_kernels_cuda.py checks each op against the
// CPU op and a float64 reference where a device is at hand.
#pragma once

#include <cstdint>
#include <string>

namespace lmrt::cuda {

// True when the CUDA runtime finds a device; otherwise false, and *why (if given) says what is missing (no driver,
// no device, a driver older than the runtime).
bool available(std::string* why);
// The first device's name and its global memory in bytes ("" and 0 without one).
std::string device_name();

// y[m, :] = x[m, :] / sqrt(mean(x[m, :]^2) + eps) * w[:]   (cpu::rmsnorm's contract; y == x allowed)
//   x [M, H] row stride ldx, w [H], y [M, H] row stride ldy; one block of threads per row, the sum of squares in
//   fp32 over a fixed tree (so a row's result does not depend on M)
void rmsnorm(const float* x, int64_t M, int64_t H, int64_t ldx, const float* w, float eps, float* y, int64_t ldy,
             void* stream);
// out[m, i] = silu(gu[m, i]) * gu[m, I + i]   (cpu::silu_mul's contract)
//   gu [M, 2I] row stride ldg, out [M, I] row stride ldo
void silu_mul(const float* gu, int64_t M, int64_t I, int64_t ldg, float* out, int64_t ldo, void* stream);

// Test plumbing: the op on host arrays (copied to the device and back, outputs poisoned with NaN beforehand so an
// element the op does not write shows). std::runtime_error naming the CUDA error, or "no CUDA device: why".
void rmsnorm_host(const float* x, int64_t M, int64_t H, const float* w, float eps, float* y);
void silu_mul_host(const float* gu, int64_t M, int64_t I, float* out);

}  // namespace lmrt::cuda
