// The bf16 tile unit as the baseline-compiled ops see it: AMX where the CPU has it, or the
// software model (emulate), behind one interface. Used by linear_bf16.cpp and attention_tiles.cpp.
#pragma once

#include <cstdint>

#include "kernels/cpu/isa_kernels.h"

namespace lmrt::cpu {

class TileUnit {
 public:
  // Throws std::runtime_error naming `op` when !emulate and the CPU, OS or build has no AMX-BF16.
  TileUnit(bool emulate, const char* op);
  // Around each thread's share of the work: the tile configuration is per-thread state.
  void begin() const;
  void end() const;
  TileBlockFn block() const { return block_; }
  bool emulated() const { return emulate_; }

 private:
  bool emulate_;
  TileBlockFn block_;
};

// Per-ISA vector helpers of the tile paths (AVX-512 where active, else scalar).
ToBf16Fn to_bf16_fn();
SoftmaxChunkFn softmax_chunk_fn();
AccUpdateFn acc_update_fn();

}  // namespace lmrt::cpu
