"""Where a decode step's time goes outside the kernels (issue 14), on the default model at 4 bits: 1 and 32
requests decoding together (32-token prompts, 128 new tokens, EOS ignored, greedy or sampled), read through the
public API (Pipeline.__call__: detokenization and stop-string handling in Python). From the engine's own step
clock (EngineStats: schedule = aborts + scheduling + batch building; forward = the model, its kernels and what
runs between them; postprocess = sampling, stop checks, publishing) and the Python thread's CPU time
(time.thread_time of the thread that reads the outputs). Medians of --reps. Appends a section to
benchmarks/RESULTS.md.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_step_overhead.py [--reps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import results_log

import lmrt

NEW = 128


def run(pipe, n: int, sampled: bool) -> dict:
    rng = np.random.RandomState(n)
    prompts = [rng.randint(1000, 40000, size=32).tolist() for _ in range(n)]
    gen = lmrt.GenerationConfig(
        max_new_tokens=NEW,
        min_new_tokens=NEW,
        ignore_eos=True,
        **({"temperature": 0.7, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1, "seed": 1} if sampled else {}),
    )
    s0 = pipe.stats()
    t0, c0 = time.perf_counter(), time.thread_time()
    pipe(prompts, gen)
    wall, py = time.perf_counter() - t0, time.thread_time() - c0
    s1 = pipe.stats()
    d = {k: s1[k] - s0[k] for k in ("schedule_seconds", "forward_seconds", "postprocess_seconds", "num_steps")}
    step = d["schedule_seconds"] + d["forward_seconds"] + d["postprocess_seconds"]
    return {
        "tok_s": n * NEW / wall,
        "step_ms": 1000 * step / d["num_steps"],
        "schedule": d["schedule_seconds"] / step,
        "forward": d["forward_seconds"] / step,
        "postprocess": d["postprocess_seconds"] / step,
        "busy": step / wall,  # the loop thread's share of the wall time spent in steps
        "python_us_per_token": 1e6 * py / (n * NEW),
        "python_share": py / wall,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    cfg = lmrt.EngineConfig(max_batch_size=32, num_threads=args.threads, enable_prefix_caching=False)
    rows = []
    with lmrt.pipeline(None, cfg) as pipe:
        run(pipe, 2, False)  # warm-up
        for n in (1, 32):
            for sampled in (False, True):
                reps = [run(pipe, n, sampled) for _ in range(args.reps)]
                m = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
                rows.append(
                    f"| {n} | {'sampled' if sampled else 'greedy'} | {m['tok_s']:.1f} | {m['step_ms']:.2f} | "
                    f"{100 * m['schedule']:.2f}% | {100 * m['forward']:.2f}% | {100 * m['postprocess']:.2f}% | "
                    f"{100 * m['busy']:.1f}% | {m['python_us_per_token']:.0f} | {100 * m['python_share']:.1f}% |"
                )
                print(rows[-1], flush=True)
    section = results_log.section(
        "a decode step outside the kernels (default model, 4-bit)",
        "bench_step_overhead.py",
        [
            f"lmrt {lmrt.__version__}, {args.threads} threads; 1 or 32 requests of 32 prompt + {NEW} new tokens (EOS "
            "ignored) through Pipeline.__call__; sampled = temperature 0.7, top-p 0.9, top-k 50, repetition penalty "
            f"1.1; medians of {args.reps}",
            "step shares from the engine's step clock; busy = step time / wall (the rest: the loop thread waiting); "
            "Python = CPU time of the thread reading the outputs (detokenization, stop strings), per token and as a "
            "share of the wall time",
        ],
        [
            "requests",
            "sampling",
            "tok/s",
            "ms per step",
            "schedule + batch",
            "forward",
            "sample + publish",
            "busy",
            "Python µs/token",
            "Python share",
        ],
        rows,
    )
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
