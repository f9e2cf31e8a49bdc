// Run-time choice of the CPU kernel path.
#pragma once

namespace lmrt::cpu {

// Ordered from narrowest to widest.
enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// True when this build contains the path and this CPU (and OS) can run it.
bool isa_supported(Isa isa);
// The widest supported path.
Isa best_isa();
// The path the ops use now: best_isa() unless forced (set_isa, or the
// environment variable LMRT_ISA=scalar|avx2|avx512 read once at start-up).
Isa active_isa();
// Forces a path process-wide; throws std::invalid_argument when unsupported.
void set_isa(Isa isa);
const char* isa_name(Isa isa);
// Parses "scalar" | "avx2" | "avx512"; throws std::invalid_argument otherwise.
Isa parse_isa(const char* name);
// True when the AVX-512 path is supported (isa_supported) and CPUID.(EAX=7, ECX=subleaf) sets bit `bit` of
// register `reg` (0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX): the AVX-512 extensions (VNNI, BF16) that come on top of it.
bool avx512_feature(unsigned subleaf, int reg, int bit);

}  // namespace lmrt::cpu
