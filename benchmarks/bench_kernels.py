"""GFLOP/s of lmrt's CPU linear on SmolLM2-135M shapes, per ISA path, next to torch.

  PYTHONPATH=src:. python benchmarks/bench_kernels.py [--reps-seconds 0.3]

Shapes: hidden 576, intermediate 1536, vocab 49152 (q/k/v/o, gate_up, down, lm_head),
decode (M=1, 8) and prefill (M=512). Weights fp32 and bf16 (torch gets bf16 weights
converted to fp32 once up front, i.e. its best case; lmrt converts in registers). Then the bf16
prefill GEMM (prefill_precision="bf16": x and w rounded to bf16, fp32 sums) on each tile unit the CPU
has (AMX, AVX512-BF16), next to torch's bf16 matmul (oneDNN) on the same shapes, M=512.
Note: timings on a shared machine move with the neighbours' load; compare columns
from the same run.
"""

import argparse
import time

import numpy as np

from lmrt._core import kernels as K

SHAPES = [  # (name, K, N)
    ("qkv", 576, 576 + 2 * 192),
    ("o", 576, 576),
    ("gate_up", 576, 2 * 1536),
    ("down", 1536, 576),
    ("lm_head", 576, 49152),
]


def timeit(fn, seconds):
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= seconds and n >= 3:
            return dt / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps-seconds", type=float, default=0.3)
    ap.add_argument("--m", type=int, nargs="*", default=[1, 8, 512])
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    isas = [i for i in ("scalar", "avx2", "avx512") if K.isa_supported(i)]
    rng = np.random.default_rng(0)
    print(f"best ISA {K.best_isa()}, physical cores {K.physical_cores()}")
    hdr = f"{'shape':>8} {'M':>4} {'K':>5} {'N':>6} {'w':>4} {'thr':>3} | " + " ".join(f"{i:>8}" for i in isas)
    print(hdr + (f" | {'torch':>8}" if torch else "") + "   (GFLOP/s)")
    for M in args.m:
        for name, Kd, N in SHAPES:
            if M == 512 and name == "lm_head":
                continue  # the engine runs lm_head on the last token only
            x = rng.standard_normal((M, Kd), dtype=np.float32)
            w32 = rng.standard_normal((N, Kd), dtype=np.float32)
            for wd in ("f32", "bf16"):
                w = K.f32_to_bf16(w32) if wd == "bf16" else w32
                wt = K.bf16_to_f32(w) if wd == "bf16" else w32
                for thr in (1, 2):
                    flops = 2.0 * M * Kd * N
                    row = []
                    for isa in isas:
                        if isa == "scalar" and M == 512:
                            row.append(f"{'-':>8}")  # minutes of runtime, and not a serving path
                            continue
                        K.set_isa(isa)
                        dt = timeit(lambda: K.linear(x, w, wdtype=wd, num_threads=thr), args.reps_seconds)
                        row.append(f"{flops / dt / 1e9:8.1f}")
                    line = f"{name:>8} {M:4d} {Kd:5d} {N:6d} {wd:>4} {thr:3d} | " + " ".join(row)
                    if torch:
                        torch.set_num_threads(thr)
                        tx, tw = torch.from_numpy(x), torch.from_numpy(wt)
                        dt = timeit(lambda: torch.matmul(tx, tw.T), args.reps_seconds)
                        line += f" | {flops / dt / 1e9:8.1f}"
                    print(line, flush=True)
    K.set_isa(K.best_isa())
    tile_gemm(rng, torch, args.reps_seconds)


def tile_gemm(rng, torch, seconds, M=512):
    units = [u for u, ok in (("amx", K.amx_available()), ("avx512bf16", K.avx512bf16_available())) if ok]
    if not units:
        print("\nbf16 tile GEMM: skipped, this CPU has neither AMX-BF16 nor AVX512-BF16")
        return
    print(f"\nbf16 tile GEMM, M={M} (x and fp32 w rounded to bf16 by lmrt; torch: bf16 tensors)")
    print(
        f"{'shape':>8} {'K':>5} {'N':>6} {'thr':>3} | "
        + " ".join(f"{u:>10}" for u in units)
        + (f" | {'torch bf16':>10}" if torch else "")
        + "   (GFLOP/s)"
    )
    for name, Kd, N in SHAPES[:4]:
        x = rng.standard_normal((M, Kd), dtype=np.float32)
        w = rng.standard_normal((N, Kd), dtype=np.float32)
        for thr in (1, 2):
            flops = 2.0 * M * Kd * N
            row = [
                f"{flops / timeit(lambda: K.linear_bf16_tiles(x, w, tile_unit=u, num_threads=thr), seconds) / 1e9:10.1f}"
                for u in units
            ]
            line = f"{name:>8} {Kd:5d} {N:6d} {thr:3d} | " + " ".join(row)
            if torch:
                torch.set_num_threads(thr)
                tx, tw = torch.from_numpy(x).bfloat16(), torch.from_numpy(w).bfloat16()
                line += f" | {flops / timeit(lambda: torch.matmul(tx, tw.T), seconds) / 1e9:10.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
