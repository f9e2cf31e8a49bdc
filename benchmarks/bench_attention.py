"""Decode attention alone (lmrt._core.kernels.paged_attention), per KV cache dtype: B sequences of one query row
each after C cached tokens, the default model's heads (9 query heads sharing 3 KV heads, head_dim 64), block size
64, 2 threads; ms per layer (one call), median of --reps timings of --seconds each, and the K/V bytes read per
second. --layers L gives each call its own layer's cache, L of them in turn, as a decode step's 30 layers do (L = 1:
the same cache every call, which stays in the CPU caches while a model's would not). Appends a section to
benchmarks/RESULTS.md (--label names the build, e.g. a commit, for a before/after).

--against PATH (another build's lmrt/_core*.so, e.g. a copy of src at the commit before) loads that build into the
same process and alternates the two on the same caches, round by round, after checking that they give the same
bits: this host's speed drifts by 10-20% between processes (and its memory placement with them), which hides a
change of a few percent when each build runs in a process of its own.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_attention.py [--batch 1,32] [--ctx 400,2000] [--layers 30]
        [--label X] [--against /path/to/other/lmrt/_core.so --rounds 12]
"""

from __future__ import annotations

import argparse
import importlib.util
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
    ap.add_argument("--against", default="", help="another build's _core .so, alternated in this process")
    ap.add_argument("--rounds", type=int, default=12, help="--against: rounds of each build")
    args = ap.parse_args()
    other = load_build(args.against) if args.against else None
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

                if other is not None:
                    ours, theirs = alternate(layers, other, dt == "i8q", args.rounds)
                    rows.append(f"| {dt} | {b} | {ctx} | {ours * 1e3:.3f} | {theirs * 1e3:.3f} | {ours / theirs:.3f} |")
                    print(rows[-1], flush=True)
                    continue

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
                f"head_dim {HD}, block {BS}; {args.layers} layers' caches in turn; "
                + (
                    f"medians of {args.reps}"
                    if other is None
                    else f"against {args.against} in the same process, medians of {args.rounds} alternated rounds"
                ),
            ],
            ["KV", "sequences", "cached tokens", "ms per layer", "K/V GB/s"]
            if other is None
            else ["KV", "sequences", "cached tokens", "ms per layer (this build)", "ms per layer (--against)", "ratio"],
            rows,
        )
    )


def load_build(path):
    """Another build of lmrt._core as a module of its own (its own copy of every symbol: dlopen keeps them apart)."""
    spec = importlib.util.spec_from_file_location("lmrt._core", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alternate(layers, other, int8_q, rounds):
    """Seconds per layer call of this build and of `other`, medians of `rounds` rounds over every layer's cache,
    the two builds taking turns (each round's first build alternating too); their outputs must agree bit for bit."""

    def call(kernels, cache, seqs):
        return kernels.paged_attention(
            [s[0] for s in seqs], cache.k, cache.v, [s[1] for s in seqs], [s[2] for s in seqs], N_HEADS, cache.n_kv,
            cache.hd, cache.bs, HD**-0.5, cache.dtype, 2, int8_q=int8_q, **cache.kwargs(),
        )  # fmt: skip

    for cache, seqs in layers[:2]:
        if not np.array_equal(np.asarray(call(K, cache, seqs)), np.asarray(call(other.kernels, cache, seqs))):
            raise SystemExit("--against: the two builds give different outputs; compare builds of the same kernels")
    reps = max(1, 5 * 32 // len(layers[0][1]) // len(layers))  # ~160 sequence-layers a timing at least
    times = {"ours": [], "theirs": []}
    for r in range(rounds):
        order = (("ours", K), ("theirs", other.kernels))
        for name, kernels in order if r % 2 == 0 else order[::-1]:
            for cache, seqs in layers:  # a warm-up pass
                call(kernels, cache, seqs)
            t0 = time.perf_counter()
            for _ in range(reps):
                for cache, seqs in layers:
                    call(kernels, cache, seqs)
            times[name].append((time.perf_counter() - t0) / (reps * len(layers)))
    return statistics.median(times["ours"]), statistics.median(times["theirs"])


if __name__ == "__main__":
    main()
