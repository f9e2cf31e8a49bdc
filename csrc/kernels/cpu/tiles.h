// The bf16 tile unit as the baseline-compiled ops see it: AMX tiles, AVX512-BF16 dot products, or the
// software model, behind one interface (TileUnit, ops.h). Used by linear_bf16.cpp and attention_tiles.cpp.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa_kernels.h"
#include "kernels/cpu/ops.h"

namespace lmrt::cpu {

class TileRunner {
 public:
  // Throws std::runtime_error naming `op` when the CPU, OS or build lacks `impl`.
  TileRunner(TileUnit impl, const char* op);
  // Around each thread's share of the work: the tile configuration is per-thread state.
  void begin() const;
  void end() const;
  TileBlockFn block() const { return block_; }
  TileUnit impl() const { return impl_; }

 private:
  TileUnit impl_;
  TileBlockFn block_;
};

// Per-ISA vector helpers of the tile paths (AVX-512 where active, else scalar).
ToBf16Fn to_bf16_fn();
// What a hardware unit's inputs are rounded with: AVX512-BF16's instruction (denormals to zero, which the units do to
// a denormal input anyway, so the products keep their bits); the software model keeps to_bf16_fn()'s.
ToBf16Fn to_bf16_fn(TileUnit unit);
SoftmaxChunkFn softmax_chunk_fn(TileUnit unit);  // unit: the resolved tile unit (TileRunner::impl)
AccScaleFn acc_scale_fn();

}  // namespace lmrt::cpu
