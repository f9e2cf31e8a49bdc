"""Speed per KV cache dtype, side by side in one run (issue 12), on the default model, the same token ids in
every row, medians of --reps after a warm-up. Appends a section to benchmarks/RESULTS.md.

1. Decode at batch 1: 64 tokens after a 32-token prompt and after a 2,000-token one (where reading the cache
   dominates), lmrt per KV dtype, and llama.cpp (llama-cpp-python, flash attention on) on the same GGUF with
   an f16 cache and with a q8_0 cache (type_k = type_v = q8_0) as the peer rows.
2. Throughput under a small KV budget: 32 concurrent requests of 512 prompt + 128 new tokens (distinct prompts,
   prefix caching off) in --budget-gib of KV cache, max_batch_size 32: total tokens/s (prompt + generated) and
   generated tokens/s per dtype. A smaller cache dtype fits more requests at once.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_kv.py [--reps 5] [--threads 2] [--budget-gib 0.12]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import results_log

import lmrt
from lmrt.default_model import default_model_gguf

KV = ("float32", "bfloat16", "int8", "int4")
BUDGET_KV = ("bfloat16", "int8", "int4")
NEW = 64
N_REQ, PROMPT, GEN = 32, 512, 128


def lmrt_decode_tps(pipe, ids) -> float:
    stamps = []
    gen = lmrt.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, ignore_eos=True)
    for r in pipe.stream(ids, gen):
        stamps += [time.perf_counter()] * len(r.token_ids)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def llama_decode_tps(llm, ids) -> float:
    llm.reset()
    stamps = []
    g = llm.generate(list(ids), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)
    for _ in g:
        stamps.append(time.perf_counter())
        if len(stamps) == NEW:
            break
    g.close()
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def budget_run(pipe, prompts) -> tuple[float, float, int]:
    """(total tokens/s, generated tokens/s, most requests running at once) for all prompts submitted at once."""
    gen = lmrt.GenerationConfig(max_new_tokens=GEN, min_new_tokens=GEN, ignore_eos=True)
    most, done = 0, threading.Event()

    def watch():
        nonlocal most
        while not done.is_set():
            most = max(most, pipe.stats()["num_running"])
            time.sleep(0.02)

    w = threading.Thread(target=watch)
    w.start()
    t0 = time.perf_counter()
    outs = pipe(prompts, gen)
    wall = time.perf_counter() - t0
    done.set()
    w.join()
    generated = sum(len(o.token_ids) for o in outs)
    return (generated + sum(map(len, prompts))) / wall, generated / wall, most


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--budget-reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-gib", type=float, default=0.12)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    short = [1000 + i for i in range(32)]
    long = [1000 + (i * 7919) % 40000 for i in range(2000)]
    import llama_cpp

    # Every system is loaded first and each rep runs them all in turn (round robin), so a drift in the machine's
    # speed (a shared VM) falls on every row alike.
    systems = {}
    for kv in KV:
        cfg = lmrt.EngineConfig(
            kv_cache_dtype=kv, max_batch_size=1, num_threads=args.threads, enable_prefix_caching=False
        )
        pipe = lmrt.pipeline(None, cfg)
        systems[f"lmrt {kv}"] = (lambda ids, pipe=pipe: lmrt_decode_tps(pipe, ids), pipe.close)
    for name, type_kv in (("f16", 1), ("q8_0", llama_cpp.GGML_TYPE_Q8_0)):
        llm = llama_cpp.Llama(
            model_path=str(default_model_gguf()),
            n_threads=args.threads,
            n_threads_batch=args.threads,
            n_ctx=2048 + 128,
            n_batch=512,
            flash_attn=True,
            type_k=type_kv,
            type_v=type_kv,
            verbose=False,
        )
        systems[f"llama.cpp {name} KV"] = (lambda ids, llm=llm: llama_decode_tps(llm, ids), llm.close)
    reps = {name: ([], []) for name in systems}
    for run, _ in systems.values():
        run(short)  # warm-up
    for rep in range(args.reps):
        for name, (run, _) in systems.items():
            reps[name][0].append(run(short))
            reps[name][1].append(run(long))
        print(f"rep {rep + 1}: " + ", ".join(f"{n} {a[-1]:.0f}/{b[-1]:.0f}" for n, (a, b) in reps.items()), flush=True)
    for _, close in systems.values():
        close()
    rows = [(n, statistics.median(a), statistics.median(b), a, b) for n, (a, b) in reps.items()]

    prompts = [[1000 + (r * 104729 + i * 7919) % 40000 for i in range(PROMPT)] for r in range(N_REQ)]
    pipes = {}
    for kv in BUDGET_KV:
        cfg = lmrt.EngineConfig(
            kv_cache_dtype=kv,
            max_batch_size=N_REQ,
            num_threads=args.threads,
            enable_prefix_caching=False,
            cache_memory_gib=args.budget_gib,
        )
        pipes[kv] = lmrt.pipeline(None, cfg)
        budget_run(pipes[kv], prompts[:4])  # warm-up
    runs = {kv: [] for kv in BUDGET_KV}
    for rep in range(args.budget_reps):
        for kv, pipe in pipes.items():
            runs[kv].append(budget_run(pipe, prompts))
        print(f"budget rep {rep + 1}: " + ", ".join(f"{kv} {r[-1][0]:.0f}" for kv, r in runs.items()), flush=True)
    budget = []  # (kv, capacity tokens, median total, median generated, most running, reps, preemptions)
    for kv, pipe in pipes.items():
        rs = runs[kv]
        budget.append(
            (
                kv,
                pipe.info()["kv_capacity_tokens"],
                statistics.median(r[0] for r in rs),
                statistics.median(r[1] for r in rs),
                max(r[2] for r in rs),
                rs,
                pipe.stats()["num_preemptions"],
            )
        )
        pipe.close()

    base = {r[0]: r for r in rows}["lmrt bfloat16"]
    lines = [f"| {n} | {a:.1f} | {b:.1f} | {a / base[1]:.2f}x | {b / base[2]:.2f}x |" for n, a, b, _, _ in rows]
    spreads = [
        f"- {n}: after 32: {', '.join(f'{x:.0f}' for x in ra)}; after 2,000: {', '.join(f'{x:.0f}' for x in rb)}"
        for n, _, _, ra, rb in rows
    ]
    bb = budget[0]
    budget_lines = [
        f"| {kv} | {cap:,} | {most} | {pre} | {total:.1f} | {genr:.1f} | {total / bb[2]:.2f}x |"
        for kv, cap, total, genr, most, _, pre in budget
    ]
    budget_spreads = [
        f"- {kv}: total tok/s {', '.join(f'{r[0]:.0f}' for r in runs)}" for kv, _, _, _, _, runs, _ in budget
    ]
    section = results_log.section(
        "KV cache dtypes: decode at batch 1, and throughput under a small KV budget (default model)",
        "bench_kv.py",
        [
            f"lmrt {lmrt.__version__}, llama-cpp-python {llama_cpp.__version__} (flash attention on, same GGUF), "
            f"{args.threads} threads, {NEW} new tokens after the prompt, medians of {args.reps}; every system loaded "
            "first, each rep runs them in turn (round robin)",
            f"budget: {N_REQ} requests of {PROMPT} prompt + {GEN} new tokens submitted at once into "
            f"{args.budget_gib} GiB of KV cache, max_batch_size {N_REQ}, prefix caching off, medians of "
            f"{args.budget_reps} (round robin); total = (prompt + generated tokens) / wall",
        ],
        ["system, KV cache", "decode after 32 tokens", "decode after 2,000 tokens", "vs lmrt bf16 (32)", "(2,000)"],
        lines,
        [
            "Per-rep tokens/s:",
            *spreads,
            "",
            "| KV cache | capacity (tokens) | most running at once | preemptions (all reps) | total tok/s | "
            "generated tok/s | vs bf16 |",
            "|---|---|---|---|---|---|---|",
            *budget_lines,
            "",
            *budget_spreads,
            "",
        ],
    )
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
