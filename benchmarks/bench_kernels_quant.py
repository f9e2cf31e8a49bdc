"""4-bit and int8 linear (lmrt linear_w4 / linear_i8) on SmolLM2-135M shapes, next to lmrt's
fp32 linear and torch's fp32 matmul.

  PYTHONPATH=src:. python benchmarks/bench_kernels_quant.py [--isa avx2] [--reps-seconds 0.2]

Shapes: hidden 576, intermediate 1536, vocab 49152 (qkv, o, gate_up, down, lm_head) at
decode (M=1, 8) and prefill (M=512; lm_head skipped, the engine runs it on the last token).
Each cell is GFLOP/s (2*M*K*N / time); the quantised columns also give the effective
weight bandwidth in GB/s (bytes of codes + scales + mins read once / time). g128 needs K
to be a multiple of 128, so it is absent for K=576.

cpu/wall: process CPU time over wall time for the whole row, divided by the thread count;
1.00 means every thread had a core to itself, lower means the neighbours took some
(the machine is shared, so compare columns of the same row, not across runs).
"""

import argparse
import time

import numpy as np
from bench_kernels import SHAPES  # the default model's linear shapes

from lmrt._core import kernels as K


class Clock:
    """Wall and process-CPU time summed over every timed call."""

    def __init__(self):
        self.wall = self.cpu = 0.0

    def timeit(self, fn, seconds):
        fn()
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds and n >= 3:
                self.wall += dt
                self.cpu += time.process_time() - c0
                return dt / n


def pack_w4(codes):
    N, Kd = codes.shape
    c = codes.reshape(N, Kd // 32, 2, 16)
    return np.ascontiguousarray((c[:, :, 0, :] | (c[:, :, 1, :] << 4)).reshape(N, Kd // 2))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps-seconds", type=float, default=0.2)
    ap.add_argument("--m", type=int, nargs="*", default=[1, 8, 512])
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--isa", default=K.best_isa())
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    K.set_isa(args.isa)
    rng = np.random.default_rng(0)
    print(f"ISA {K.active_isa()} (best {K.best_isa()}), physical cores {K.physical_cores()}")
    cols = ["f32", "torch"] if torch else ["f32"]
    cols += ["w4g32", "w4g64", "w4g128", "i8"]
    print(
        f"{'shape':>8} {'M':>4} {'K':>5} {'N':>6} {'thr':>3} | "
        + " ".join(f"{c:>13}" for c in cols)
        + " | cpu/wall   (GFLOP/s [weight GB/s])"
    )
    for M in args.m:
        for name, Kd, N in SHAPES:
            if M == 512 and name == "lm_head":
                continue
            x = rng.standard_normal((M, Kd), dtype=np.float32)
            w32 = rng.standard_normal((N, Kd), dtype=np.float32)
            codes = rng.integers(0, 16, size=(N, Kd), dtype=np.uint8)
            packed = pack_w4(codes)
            q = rng.integers(-128, 128, size=(N, Kd), dtype=np.int8)
            qs = rng.uniform(0.001, 0.02, N).astype(np.float32)
            flops = 2.0 * M * Kd * N
            for thr in args.threads:
                clk = Clock()
                cells = []

                def cell(fn, wbytes=None):
                    dt = clk.timeit(fn, args.reps_seconds)
                    s = f"{flops / dt / 1e9:6.1f}"
                    s += f" [{wbytes / dt / 1e9:4.1f}]" if wbytes else " " * 7
                    cells.append(f"{s:>13}")

                cell(lambda: K.linear(x, w32, num_threads=thr), 4 * N * Kd)
                if torch:
                    torch.set_num_threads(thr)
                    tx, tw = torch.from_numpy(x), torch.from_numpy(w32)
                    cell(lambda: torch.matmul(tx, tw.T), 4 * N * Kd)
                for g in (32, 64, 128):
                    if Kd % g:
                        cells.append(f"{'-':>13}")
                        continue
                    sc = rng.uniform(0.002, 0.05, (N, Kd // g)).astype(np.float32)
                    mn = (-rng.integers(0, 16, (N, Kd // g)) * sc).astype(np.float32)
                    cell(lambda: K.linear_w4(x, packed, sc, mn, g, num_threads=thr), N * Kd // 2 + 8 * N * (Kd // g))
                cell(lambda: K.linear_i8(x, q, qs, num_threads=thr), N * Kd + 4 * N)
                ratio = clk.cpu / clk.wall / thr
                print(f"{name:>8} {M:4d} {Kd:5d} {N:6d} {thr:3d} | " + " ".join(cells) + f" | {ratio:5.2f}", flush=True)


if __name__ == "__main__":
    main()
