"""The products of one decode step of the default model, per precision mode and batch size (issue 14): where the
engine switches a step's products from the exact fp32 path to the bf16 tiles (csrc/model/matrix_cpu.h,
kTilesMinRows) is read off this table.

For M rows (M requests decoding together): the 30 layers' 4-bit products (qkv, o, gate_up, down at the model's
shapes, group 32, synthetic codes) and the int8 output matrix (49152 x 576), each timed alone through
lmrt._core.kernels, 2 threads, median of --reps timings of --seconds each; layers = 30 x (qkv + o + gate_up + down).
Modes: exact fp32 (linear_w4 / linear_i8), int8 activations over the row layout (linear_w4 activations="int8"; the
output matrix has no int8-activation path and stays fp32 there), int8 activations over interleaved weights
(interleaved=True, where AVX-512 is active: what the engine runs with linear_precision="int8" there; the output
matrix as the engine runs it then: interleaved with int8 activations where VNNI is, else on the tiles from 16 rows
and fp32 below) on the vector units (int8-il, amx=False) and on AMX-INT8 tiles (int8-amx, amx=True, where the CPU
has them: the same bits; the engine takes them from kAmxMinRows rows, kAmxI8MinRows for the output matrix,
csrc/kernels/cpu/ops.h, thresholds read off this table), and the best bf16 tile unit here.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_decode_products.py [--m 1,8,12,16,24,32] [--reps 3]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import results_log
from bench_engine import machine_info
from bench_kernels import SHAPES, timeit
from bench_kernels_quant import pack_w4

from lmrt._core import kernels as K

LAYERS = 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--m", default="1,8,12,16,24,32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.15)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    unit = K.best_tile_unit()
    rng = np.random.default_rng(0)
    weights = {}
    for name, k, n in SHAPES:
        if name == "lm_head":
            weights[name] = (
                rng.integers(-128, 128, (n, k), dtype=np.int8),
                rng.uniform(1e-3, 2e-2, n).astype(np.float32),
            )
            if K.vnni_available():
                weights[name + ":il"] = K.i8_interleave(weights[name][0])
        else:
            sc = rng.uniform(0.002, 0.05, (n, k // 32)).astype(np.float32)
            weights[name] = (
                pack_w4(rng.integers(0, 16, (n, k), dtype=np.uint8)),
                sc,
                (-rng.integers(0, 16, sc.shape) * sc).astype(np.float32),
            )
            weights[name + ":il"] = K.w4_interleave(*weights[name], 32)
    il = K.active_isa() == "avx512"
    amx = il and K.amx_int8_available()
    modes = ["fp32", "int8"] + (["int8-il"] if il else []) + (["int8-amx"] if amx else []) + ([unit] if unit else [])
    rows = []
    for m in [int(v) for v in args.m.split(",")]:
        cells = {}
        for mode in modes:
            layer_t, head_t = [], []
            for _ in range(args.reps):
                lt = ht = 0.0
                for name, k, _n in SHAPES:
                    x = rng.standard_normal((m, k), dtype=np.float32)
                    w = weights[name]
                    if name == "lm_head" and mode in ("int8-il", "int8-amx") and K.vnni_available():
                        qi, off = weights[name + ":il"]
                        kw = {"amx": mode == "int8-amx"}
                        ht = timeit(lambda: K.linear_i8(x, qi, w[1], num_threads=2, offsets=off, **kw), args.seconds)
                    elif name == "lm_head":
                        tile = unit if mode == unit or (mode == "int8-il" and m >= 16) else None
                        ht = timeit(lambda: K.linear_i8(x, w[0], w[1], num_threads=2, tile_unit=tile), args.seconds)
                    elif mode in ("int8-il", "int8-amx"):
                        wi = weights[name + ":il"]
                        kw = {"activations": "int8", "interleaved": True, "amx": mode == "int8-amx"}
                        lt += LAYERS * timeit(lambda: K.linear_w4(x, *wi, 32, num_threads=2, **kw), args.seconds)
                    else:
                        kw = {"tile_unit": unit} if mode == unit else {"activations": mode}
                        lt += LAYERS * timeit(lambda: K.linear_w4(x, *w, 32, num_threads=2, **kw), args.seconds)
                layer_t.append(lt)
                head_t.append(ht)
            cells[mode] = (statistics.median(layer_t) * 1e3, statistics.median(head_t) * 1e3)
        best = min(modes, key=lambda md: sum(cells[md]))
        rows.append(
            f"| {m} | "
            + " | ".join(f"{cells[md][0]:.2f} + {cells[md][1]:.2f} = {sum(cells[md]):.2f}" for md in modes)
            + f" | {best} |"
        )
        print(rows[-1], flush=True)
    if args.no_write:
        return
    model, cpus = machine_info()
    results_log.append(
        results_log.section(
            "The products of one decode step per precision mode and batch size (default model's shapes)",
            "bench_decode_products.py",
            [
                f"{model}, {cpus} CPUs, 2 threads; ISA {K.active_isa()}, tile unit {unit}, VNNI {K.vnni_available()}",
                "cells: ms for the 30 layers' 4-bit products + the int8 output matrix = the step's products, "
                f"medians of {args.reps}; the output matrix has no int8-activation path (fp32 in the int8 column; "
                "int8-il: interleaved int8 x int8 on the vector units (VNNI where present; the output matrix on the "
                "tiles from 16 rows without VNNI); int8-amx: the same products (the same bits) on AMX-INT8 tiles; "
                f"the engine's int8 mode takes AMX from {K.amx_min_rows} rows ({K.amx_i8_min_rows} for the output "
                "matrix) where present, else int8-il)",
            ],
            ["rows (requests)"] + [f"{md}" for md in modes] + ["fastest"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
