// The CUDA backend's op set (device_ops.h): the kernels of csrc/kernels/cuda/ on one stream, over device memory.
// Defined only in a build with the CUDA backend (LMRT_HAVE_CUDA: backend/cuda_ops.cu); this header needs no CUDA
// include.
#pragma once

#include <memory>

#include "backend/device_ops.h"

namespace lmrt {

// std::invalid_argument "no CUDA device: ..." where the runtime finds none.
std::unique_ptr<DeviceOps> make_cuda_ops();

}  // namespace lmrt
