"""How often the default model's chat replies fall into a loop, per sampling setting: the measurement behind the
sampling defaults lmrt writes into its generation_config.json (lmrt/default_model.py, DEFAULT_MODEL_SAMPLING).

A reply "loops" when some run of 8 tokens occurs 3 or more times in it; "cut" when it reaches max_new_tokens.
8 chat prompts x 400 new tokens; every sampled setting runs 3 seeds, greedy once. Appends a section to
benchmarks/RESULTS.md with the command.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/sampling_loops.py
"""

from __future__ import annotations

import argparse
import collections
import platform

import results_log

import lmrt

PROMPTS = [
    "Write a short story about a robot who learns to paint.",
    "Explain how a rainbow forms.",
    "Give me three tips for learning a new language.",
    "What is the capital of Australia, and why was it chosen?",
    "Write a poem about autumn leaves.",
    "How do I make a cup of tea?",
    "Describe the water cycle for a child.",
    "What are the benefits of regular exercise?",
]
SETTINGS = {
    "greedy": dict(temperature=0.0),
    "model card: temperature 0.2, top_p 0.9": dict(temperature=0.2, top_p=0.9),
    "model card + repetition_penalty 1.1 (lmrt's default)": dict(temperature=0.2, top_p=0.9, repetition_penalty=1.1),
    "temperature 0.7, top_p 0.9": dict(temperature=0.7, top_p=0.9),
    "llama.cpp's: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05": dict(
        temperature=0.8, top_k=40, top_p=0.95, min_p=0.05
    ),
}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def loops(ids: list[int], n: int = 8, k: int = 3) -> bool:
    counts = collections.Counter(tuple(ids[i : i + n]) for i in range(len(ids) - n + 1))
    return max(counts.values(), default=0) >= k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    pipe = lmrt.pipeline()
    rows = []
    for name, sampling in SETTINGS.items():
        seeds = [0] if sampling["temperature"] == 0 else list(range(args.seeds))
        num_loops = num_cut = 0
        lengths = []
        for seed in seeds:
            outs = pipe(
                [[{"role": "user", "content": p}] for p in PROMPTS],
                lmrt.GenerationConfig(max_new_tokens=args.max_new_tokens, seed=seed, **sampling),
            )
            for out in outs:
                num_loops += loops(out.token_ids)
                num_cut += out.finish_reason == "length"
                lengths.append(len(out.token_ids))
        runs = len(seeds) * len(PROMPTS)
        rows.append(f"| {name} | {runs} | {num_loops} | {num_cut} | {sorted(lengths)[len(lengths) // 2]} |")
        print(rows[-1], flush=True)
    pipe.close()
    section = results_log.section(
        "default model: how often chat replies loop, per sampling",
        "sampling_loops.py",
        [
            f"machine: {_cpu_name()}; lmrt {lmrt.__version__}; default model at 4 bits",
            f"8 chat prompts x {args.max_new_tokens} new tokens; a reply loops when a run of 8 tokens occurs 3+ times",
        ],
        ["sampling", "replies", "loop", "cut at the limit", "median length"],
        rows,
    )
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
