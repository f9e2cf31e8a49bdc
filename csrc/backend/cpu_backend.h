// The CPU backend: the kernel thread pool, and the kernels' precision choices (backend.h).
#pragma once

#include "backend/cpu_ops.h"
#include "backend/pool_backend.h"

namespace lmrt {

class CpuBackend final : public PoolBackend {
 public:
  // Throws std::invalid_argument when bf16 prefill asks for a tile unit this CPU (or OS, or build) lacks.
  explicit CpuBackend(const BackendOptions& options);

  DeviceOps& ops() override { return ops_; }

 private:
  // The CPU kernels over host memory, for OpsLlamaModel; bf16 products on the tile unit where prefill is bf16.
  CpuOps ops_{pool(), options().prefill_precision == PrefillPrecision::BF16
                          ? std::optional<cpu::TileUnit>(options().tile_unit)
                          : std::nullopt};
};

}  // namespace lmrt
