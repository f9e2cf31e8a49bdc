"""Decode attention alone (lmrt._core.kernels.paged_attention), per KV cache dtype: B sequences of one query row
each after C cached tokens, the default model's heads (9 query heads sharing 3 KV heads, head_dim 64), block size
64, 2 threads; ms per layer (one call), median of --reps timings of --seconds each, and the K/V bytes read per
second. --layers L gives each call its own layer's cache, L of them in turn, as a decode step's 30 layers do (L = 1:
the same cache every call, which stays in the CPU caches while a model's would not). Appends a section to
benchmarks/RESULTS.md (--label names the build, e.g. a commit, for a before/after).

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_attention.py [--batch 1,32] [--ctx 400,2000] [--layers 30]
        [--label X]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import results_log
from bench_engine import machine_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from kernel_paths import PagedCache  # noqa: E402

from lmrt._core import kernels as K  # noqa: E402

N_HEADS, N_KV, HD, BS = 9, 3, 64, 64
ROW_BYTES = {"f32": 4 * HD, "bf16": 2 * HD, "i8": HD + 3, "i8q": HD + 3}  # i8q: int8 KV, q as int8 (int8 mode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--ctx", default="400,2000")
    ap.add_argument("--dtypes", default="bf16,i8", help="of f32, bf16, i8, i8q (i8 with int8 q, as int8 mode)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--label", default="")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for dt in args.dtypes.split(","):
        for b in (int(v) for v in args.batch.split(",")):
            for ctx in (int(v) for v in args.ctx.split(",")):
                layers = []
                for _ in range(args.layers):
                    cache = PagedCache(b * (ctx // BS + 1), N_KV, HD, BS, "i8" if dt == "i8q" else dt, rng)
                    seqs = []
                    for _ in range(b):
                        table, _k, _v = cache.new_seq(ctx + 1)
                        q = rng.standard_normal((1, N_HEADS * HD)).astype(np.float32)
                        seqs.append((q, table, np.array([ctx], np.int32)))
                    layers.append((cache, seqs))
                turn = [0]

                def call(layers=layers, turn=turn, int8_q=dt == "i8q"):
                    cache, seqs = layers[turn[0] % len(layers)]
                    turn[0] += 1
                    cache.attend(seqs, N_HEADS, HD**-0.5, 2, int8_q=int8_q)

                times = []
                for _ in range(args.reps):
                    call()
                    n, t0 = 0, time.perf_counter()
                    while (dt_s := time.perf_counter() - t0) < args.seconds or n < 3:
                        call()
                        n += 1
                    times.append(dt_s / n)
                t = statistics.median(times)
                gbs = b * (ctx + 1) * N_KV * 2 * ROW_BYTES[dt] / t / 1e9
                rows.append(f"| {dt} | {b} | {ctx} | {t * 1e3:.3f} | {gbs:.1f} |")
                print(rows[-1], flush=True)
    if args.no_write:
        return
    model, cpus = machine_info()
    label = f" ({args.label})" if args.label else ""
    results_log.append(
        results_log.section(
            f"Decode attention alone per KV dtype{label}",
            "bench_attention.py",
            [
                f"{model}, {cpus} CPUs, 2 threads, ISA {K.active_isa()}; {N_HEADS} query heads on {N_KV} KV heads, "
                f"head_dim {HD}, block {BS}; {args.layers} layers' caches in turn; medians of {args.reps}",
            ],
            ["KV", "sequences", "cached tokens", "ms per layer", "K/V GB/s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
