#include "kernels/cpu/isa.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#ifdef LMRT_X86
#include <cpuid.h>
#endif

namespace lmrt::cpu {
namespace {

#ifdef LMRT_X86
// XCR0: which register states the OS saves on context switch. Inline asm so
// this file needs no -mxsave.
uint64_t xgetbv0() {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
};

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const bool avx2 = b & (1u << 5);
  const bool f512 = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31);
  f.avx2 = avx2 && fma && f16c && os_ymm;
  f.avx512 = f.avx2 && f512 && bw && vl && dq && os_zmm;
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();
  return f;
}
#endif

// -1 until first use; then the path in force.
std::atomic<int> g_active{-1};

Isa initial_isa() {
  const char* env = std::getenv("LMRT_ISA");
  if (env && *env) {
    try {
      Isa want = parse_isa(env);
      if (isa_supported(want)) return want;
      std::fprintf(stderr, "lmrt: LMRT_ISA=%s is not supported on this CPU/build; using %s\n", env,
                   isa_name(best_isa()));
    } catch (const std::invalid_argument&) {
      std::fprintf(stderr, "lmrt: ignoring unknown LMRT_ISA=%s (want scalar|avx2|avx512)\n", env);
    }
  }
  return best_isa();
}

}  // namespace

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return true;
#ifdef LMRT_X86
    case Isa::Avx2: return features().avx2;
    case Isa::Avx512: return features().avx512;
#endif
    default: return false;
  }
}

Isa best_isa() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Scalar;
}

Isa active_isa() {
  int v = g_active.load(std::memory_order_acquire);
  if (v >= 0) return static_cast<Isa>(v);
  int expected = -1;
  // A concurrent set_isa wins over the start-up default.
  g_active.compare_exchange_strong(expected, static_cast<int>(initial_isa()), std::memory_order_acq_rel);
  return static_cast<Isa>(g_active.load(std::memory_order_acquire));
}

void set_isa(Isa isa) {
  if (!isa_supported(isa))
    throw std::invalid_argument(std::string("ISA ") + isa_name(isa) + " is not supported by this CPU/OS or build");
  g_active.store(static_cast<int>(isa), std::memory_order_release);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
  }
  return "unknown";
}

bool avx512_feature(unsigned subleaf, int reg, int bit) {
#ifdef LMRT_X86
  if (!isa_supported(Isa::Avx512)) return false;  // AVX-512 F/BW/VL/DQ, zmm state saved by the OS
  unsigned r[4];
  __cpuid_count(7, subleaf, r[0], r[1], r[2], r[3]);
  return (r[reg] >> bit) & 1u;
#else
  return false;
#endif
}

Isa parse_isa(const char* name) {
  if (name) {
    if (!std::strcmp(name, "scalar")) return Isa::Scalar;
    if (!std::strcmp(name, "avx2")) return Isa::Avx2;
    if (!std::strcmp(name, "avx512")) return Isa::Avx512;
  }
  throw std::invalid_argument(std::string("unknown ISA '") + (name ? name : "(null)") + "' (want scalar|avx2|avx512)");
}

}  // namespace lmrt::cpu
