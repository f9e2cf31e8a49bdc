"""The vector units' peak multiply-accumulate rates on this CPU (issue 14's compute bounds): a small C++ program,
compiled here with the host compiler, runs 12 independent accumulator chains of one instruction per thread
(vpdpbusd: 64 int8 MACs; vdpbf16ps: 32 bf16 MACs; vfmadd231ps: 16 fp32 MACs, all on 512-bit registers) on 1 and
2 threads, best of 5; GMAC/s. What a product can reach at most on each unit: lmrt's int8 products run on the first,
HF bf16's matmuls (oneDNN) on the second. The last row is the 4-bit x int8 kernel's instruction mix at group 32: 8
vpdpbusd per 3 fp32 multiplies or fmas (each run of 32 inputs, row and 16 outputs: 8 byte products, then the
product of the two scales, its fma and the mins' fma), its int8 MACs only: that kernel's bound where the fp32 ops
share vpdpbusd's pipes (Zen 4: every 512-bit one costs a full cycle of them; broadcasts, masks, shifts and
conversions issue beside them). Needs AVX-512 with VNNI and BF16; appends a section to
benchmarks/RESULTS.md.

    python benchmarks/unit_peaks.py [--threads 1,2] [--no-write]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import results_log
from bench_engine import machine_info

SOURCE = r"""
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>
template <int KIND>
void chains(long iters, double* sink) {
  __m512i a[12];
  __m512 f[12];
  for (int i = 0; i < 12; ++i) { a[i] = _mm512_set1_epi32(i); f[i] = _mm512_set1_ps(i * 1e-3f); }
  const __m512i u = _mm512_set1_epi8(1), s = _mm512_set1_epi8(-1);
  const __m512 x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-7f);
  const __m512bh bx = (__m512bh)_mm512_set1_epi16(0x3f80), by = (__m512bh)_mm512_set1_epi16(0x3380);
  for (long n = 0; n < iters; ++n)
    for (int i = 0; i < 12; ++i) {
      if constexpr (KIND == 0) a[i] = _mm512_dpbusd_epi32(a[i], u, s);
      if constexpr (KIND == 1) f[i] = _mm512_dpbf16_ps(f[i], bx, by);
      if constexpr (KIND == 2) f[i] = _mm512_fmadd_ps(f[i], x, y);
      if constexpr (KIND == 3) {  // 24 vpdpbusd and 9 fp32 fmas an iteration: 8 to 3
        a[i] = _mm512_dpbusd_epi32(a[i], u, s);
        a[i] = _mm512_dpbusd_epi32(a[i], u, s);
        if (i < 9) f[i] = _mm512_fmadd_ps(f[i], x, y);
      }
    }
  double t = 0;
  for (int i = 0; i < 12; ++i) t += _mm512_reduce_add_epi32(a[i]) + _mm512_reduce_add_ps(f[i]);
  *sink = t;  // keeps the chains
}
int main(int argc, char** argv) {
  const int threads = std::atoi(argv[1]);
  const long iters = 20000000;
  const int macs[4] = {64, 32, 16, 128};  // a chain's int8 MACs an iteration (KIND 3: two vpdpbusd)
  for (int k = 0; k < 4; ++k) {
    double best = 1e30;
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<std::thread> ts;
      std::vector<double> sinks(threads);
      const auto t0 = std::chrono::steady_clock::now();
      for (int t = 0; t < threads; ++t)
        ts.emplace_back([&, t] {
          if (k == 0) chains<0>(iters, &sinks[t]);
          if (k == 1) chains<1>(iters, &sinks[t]);
          if (k == 2) chains<2>(iters, &sinks[t]);
          if (k == 3) chains<3>(iters, &sinks[t]);
        });
      for (auto& th : ts) th.join();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = dt < best ? dt : best;
    }
    std::printf("%.1f\n", 12.0 * iters * macs[k] * threads / best / 1e9);
  }
}
"""

UNITS = [
    "vpdpbusd (int8 x int8, 64 MAC)",
    "vdpbf16ps (bf16, 32 MAC)",
    "vfmadd231ps (fp32, 16 MAC)",
    "vpdpbusd with 3 fp32 fmas per 8 (the 4-bit x int8 kernel's mix at group 32; int8 MACs)",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as d:
        src, exe = Path(d) / "peaks.cpp", Path(d) / "peaks"
        src.write_text(SOURCE)
        flags = ["-O3", "-std=c++17", "-mavx512f", "-mavx512bw", "-mavx512vnni", "-mavx512bf16", "-pthread"]
        subprocess.run(["c++", *flags, str(src), "-o", str(exe)], check=True)
        rates = {}
        for t in threads:
            out = subprocess.run([str(exe), str(t)], check=True, capture_output=True, text=True).stdout.split()
            if len(out) != len(UNITS):
                sys.exit(f"unexpected output from the probe: {out}")
            rates[t] = [float(v) for v in out]
    rows = [f"| {u} | " + " | ".join(f"{rates[t][i]:.1f}" for t in threads) + " |" for i, u in enumerate(UNITS)]
    print("\n".join(rows))
    if args.no_write:
        return
    model, cpus = machine_info()
    results_log.append(
        results_log.section(
            "The vector units' peak multiply-accumulate rates (compute bounds)",
            "unit_peaks.py",
            [f"{model}, {cpus} CPUs; 12 independent chains of one 512-bit instruction per thread, best of 5; GMAC/s"],
            ["instruction"] + [f"{t} thread{'s' if t > 1 else ''}" for t in threads],
            rows,
        )
    )


if __name__ == "__main__":
    main()
