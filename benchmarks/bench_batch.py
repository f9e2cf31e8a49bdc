"""Many requests at once (issue 14): total tokens/s with 16 and 32 concurrent requests x 128 new tokens, lmrt
(exact fp32 products, and int8 activations) beside HF transformers bf16's batched generate, in one run.

The default model (the GGUF's 4-bit tensors for lmrt, the dense conversion in bf16 for HF), the same token ids for
every system (random ids clear of special tokens, prompts of 64-128 tokens, a fresh set per rep), greedy, EOS
ignored, 2 threads; per batch size every system is loaded and warmed up first, then each rep runs them in turn (round
robin). lmrt: every request submitted at once (max_batch_size = the batch), so prompts are prefilled in chunks beside
the decoding ones; HF: model.generate on the left-padded batch. total = batch * 128 / wall time from
submit to the last token. Medians of --reps (HF: of --hf-reps, slow), CPU/wall and the cores other processes used
beside each cell.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_batch.py [--batches 16,32] [--reps 3] [--hf-reps 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_log  # noqa: E402
from bench_engine import Workload, machine_info  # noqa: E402
from bench_w4 import HfBf16Runner, LmrtRunner, summarize  # noqa: E402

NEW = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="16,32")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--hf-reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from lmrt.default_model import default_model_gguf, default_model_path

    batches = [int(b) for b in args.batches.split(",")]
    t0 = time.time()
    work = {b: Workload(49152, max(args.reps, args.hf_reps), batch=b, seed=b) for b in batches}
    systems = {
        "lmrt-w4": lambda b: LmrtRunner(default_model_gguf(), args.threads, max_batch_size=b),
        "lmrt-w4-int8": lambda b: LmrtRunner(
            default_model_gguf(), args.threads, linear_precision="int8", max_batch_size=b
        ),
        "hf-bf16": lambda b: HfBf16Runner(default_model_path(), args.threads),
    }
    results, descs = {}, {}
    for b in batches:
        # Every system is loaded and warmed up first, then each rep runs them all in turn (round robin, the order
        # rotating a place each rep), so a drift in this shared machine's speed falls on every system alike: run one
        # after the other, a ratio also measured how the host's speed moved between them.
        runners = {}
        for name, make in systems.items():
            runners[name] = make(b)
            descs[name] = runners[name].desc
            runners[name].batch(work[b].batch[0], 8)  # warm-up
        names = list(systems)
        samples = {name: [] for name in names}
        for rep in range(max(args.reps, args.hf_reps)):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                if rep < (args.hf_reps if name == "hf-bf16" else args.reps):
                    samples[name].append(runners[name].batch(work[b].batch[1 + rep], NEW))
        for name in names:
            results[name, b] = x = summarize(samples[name])
            print(f"{name} x{b}: {x['tps']:.1f} tok/s {[round(v) for v in x['all']]}", flush=True)
            runners[name].close()
    model, cpus = machine_info()
    rows = []
    for name in systems:
        cells = [
            f"{results[name, b]['tps']:.1f} ({results[name, b]['cpu_wall']:.2f} / {results[name, b]['others']:.2f})"
            for b in batches
        ]
        rows.append(f"| {name} | {' | '.join(cells)} |")
    for name in ("lmrt-w4", "lmrt-w4-int8"):
        ratios = [f"{results[name, b]['tps'] / results['hf-bf16', b]['tps']:.2f}x" for b in batches]
        rows.append(f"| {name} / hf-bf16 | {' | '.join(ratios)} |")
    section = results_log.section(
        "Many requests at once: 16 and 32 concurrent x 128 new tokens, lmrt vs HF bf16 batched generate",
        "bench_batch.py",
        [
            f"{model}, {cpus} CPUs, {args.threads} threads; whole run {time.time() - t0:.0f} s",
            "; ".join(f"{k}: {v}" for k, v in descs.items()),
            f"prompts of 64-128 random token ids, {NEW} new each, greedy, EOS ignored; systems loaded first, reps "
            f"round robin; total = requests x {NEW} / wall from submit to the last token; medians of {args.reps} (hf-bf16: {args.hf_reps}); cells: tokens/s "
            "(process CPU / wall / cores other processes used meanwhile)",
        ],
        ["system", *[f"{b} requests" for b in batches]],
        rows,
        extra=[
            f"- per-rep tokens/s: {name} x{b}: {[round(v, 1) for v in results[name, b]['all']]}"
            for name in systems
            for b in batches
        ],
    )
    print(section)
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
