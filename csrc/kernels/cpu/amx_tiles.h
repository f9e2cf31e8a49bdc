// AMX's tile configuration (palette 1): what each *_amx.cpp loads into a thread before its tile instructions run
// (and releases after). Compiled only into those files (-mamx-tile).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lmrt::cpu::amx {

// The 64-byte tile configuration (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];  // bytes per row of tmm0..15
  uint8_t rows[16];    // rows of tmm0..15
};

// Not _tile_loadconfig: gcc 11/12 declare its memory operand as one pointer (8 bytes), so the stores of rows/colsb
// count as dead and are dropped (ldtilecfg then faults on a config of zeros). This operand names all 64 bytes.
inline void load_tile_config(const TileConfig& cfg) { __asm__ volatile("ldtilecfg %0" ::"m"(cfg)); }

}  // namespace lmrt::cpu::amx
