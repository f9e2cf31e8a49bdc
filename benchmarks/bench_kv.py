"""Decode speed per KV cache dtype, side by side in one run (issue 12): lmrt at batch 1 on the default model,
decoding 64 tokens after a 32-token prompt and after a 2,000-token one (where reading the cache dominates),
the same token ids for every row, medians of --reps after a warm-up. Appends a section to benchmarks/RESULTS.md.

(The issue's other rows, 32 concurrent requests under a small KV budget and llama.cpp with a q8_0 cache as the
peer, are not here yet.)

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_kv.py [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import results_log

import lmrt

KV = ("float32", "bfloat16", "int8")
NEW = 64


def decode_tps(pipe, ids) -> float:
    stamps = []
    gen = lmrt.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, ignore_eos=True)
    for r in pipe.stream(ids, gen):
        stamps += [time.perf_counter()] * len(r.token_ids)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    short = [1000 + i for i in range(32)]
    long = [1000 + (i * 7919) % 40000 for i in range(2000)]
    rows = []
    for kv in KV:
        cfg = lmrt.EngineConfig(
            kv_cache_dtype=kv, max_batch_size=1, num_threads=args.threads, enable_prefix_caching=False
        )
        with lmrt.pipeline(None, cfg) as pipe:
            decode_tps(pipe, short)  # warm-up
            a = [decode_tps(pipe, short) for _ in range(args.reps)]
            b = [decode_tps(pipe, long) for _ in range(args.reps)]
            threads = pipe.info()["num_threads"]
        rows.append((kv, statistics.median(a), statistics.median(b), a, b))
        print(f"{kv}: {statistics.median(a):.1f} / {statistics.median(b):.1f} tok/s", flush=True)
    base = {r[0]: r for r in rows}
    lines = [
        f"| {kv} | {a:.1f} | {b:.1f} | {a / base['bfloat16'][1]:.2f}x | {b / base['bfloat16'][2]:.2f}x |"
        for kv, a, b, _, _ in rows
    ]
    spreads = [
        f"- {kv}: short {', '.join(f'{x:.0f}' for x in ra)}; 2,000 {', '.join(f'{x:.0f}' for x in rb)}"
        for kv, _, _, ra, rb in rows
    ]
    section = results_log.section(
        "decode speed per KV cache dtype (default model, batch 1)",
        "bench_kv.py",
        [f"lmrt {lmrt.__version__}, {threads} threads, {NEW} new tokens after the prompt, medians of {args.reps}"],
        ["KV cache", "decode after 32 tokens", "decode after 2,000 tokens", "vs bf16 (32)", "vs bf16 (2,000)"],
        lines,
        ["Per-rep tokens/s:", *spreads, ""],
    )
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
