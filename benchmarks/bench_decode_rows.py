"""Decode tokens/s of the default model at 4 bits by rows a step (issue 14): R requests with 1-token prompts decoding
together (128 new tokens, greedy, EOS ignored), so every step but the first is a decode step of R rows, per precision
mode; with --builds, the same runs alternated between builds (NAME=DIR: a directory holding an importable lmrt, such as
a copy of src/ with another commit's _core module), each run a process of its own, round robin, so that this shared
host's drift falls on every build alike. A cell: the median over --rounds processes of each process's median of --reps
batches (the range of the rounds' medians beside it). Appends a section to benchmarks/RESULTS.md.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_decode_rows.py [--rows 4,8,16,32] [--modes int8]
        [--builds before=/tmp/old-src,after=src] [--reps 6] [--rounds 3] [--threads 2] [--no-write]

Modes: int8 (linear_precision="int8"), fp32 (the exact, batch-invariant mode: fp32 products, fp32 prefill), default
(fp32 products, bf16 prefill where the CPU has a bf16 unit: steps of 16+ rows on the tiles).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

NEW = 128
MODES = {
    "int8": dict(linear_precision="int8"),
    "fp32": dict(linear_precision="fp32", prefill_precision="fp32"),
    "default": dict(linear_precision="fp32"),
}


def child(mode: str, rows: int, reps: int, threads: int) -> None:
    """One process: the engine of `mode` for `rows` requests, a warm-up batch, then `reps` timed ones (tokens/s, JSON)."""
    import lmrt
    from lmrt.default_model import default_model_gguf

    cfg = lmrt.EngineConfig(
        num_threads=threads,
        max_batch_size=rows,
        max_num_batched_tokens=512,
        session_len=1024,
        enable_prefix_caching=False,
        **MODES[mode],
    )
    gen = lmrt.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, ignore_eos=True)
    out = []
    with lmrt.pipeline(default_model_gguf(), cfg) as pipe:
        pipe([[100 + i] for i in range(rows)], lmrt.GenerationConfig(max_new_tokens=8, ignore_eos=True))
        for rep in range(reps):
            prompts = [[200 + rep * rows + i] for i in range(rows)]
            t0 = time.perf_counter()
            pipe(prompts, gen)
            out.append(rows * NEW / (time.perf_counter() - t0))
        info = pipe.info()
    print(json.dumps({"tps": out, "isa": info["kernel_isa"], "layout": info["int8_weight_layout"]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="4,8,16,32")
    ap.add_argument("--modes", default="int8")
    ap.add_argument("--builds", default="", help="NAME=DIR,...: lmrt importable from DIR (default: this one)")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "ROWS", "REPS", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], int(a.child[1]), int(a.child[2]), int(a.child[3]))
        return
    rows = [int(r) for r in a.rows.split(",")]
    modes = a.modes.split(",")
    for m in modes:
        if m not in MODES:
            ap.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    builds = dict(b.split("=", 1) for b in a.builds.split(",")) if a.builds else {"this": ""}
    here = Path(__file__).resolve().parent
    medians: dict = {}  # (build, mode, rows) -> [a round's median]
    facts: dict = {}
    t_start = time.time()
    for rnd in range(a.rounds):
        for name, path in builds.items():
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            if path:
                env["PYTHONPATH"] = os.pathsep.join([str(Path(path).resolve()), str(here)])
            for m in modes:
                for r in rows:
                    cmd = [sys.executable, __file__, "--child", m, str(r), str(a.reps), str(a.threads)]
                    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                    if res.returncode != 0:
                        sys.exit(f"{name} {m} {r} rows failed:\n{res.stderr[-2000:]}")
                    got = json.loads(res.stdout.strip().splitlines()[-1])
                    medians.setdefault((name, m, r), []).append(statistics.median(got["tps"]))
                    facts[(name, m)] = f"{got['isa']}, int8 layout {got['layout']}"
                    print(f"round {rnd + 1} {name} {m} {r} rows: {[round(x, 1) for x in got['tps']]}", flush=True)
    header = ["rows a step"] + [f"{m} {n}" for m in modes for n in builds]
    table = []
    for r in rows:
        cells = []
        for m in modes:
            for n in builds:
                v = medians[(n, m, r)]
                cells.append(f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})")
        table.append(f"| {r} | " + " | ".join(cells) + " |")
    import results_log
    from bench_engine import machine_info

    text = results_log.section(
        "Decode tokens/s by rows a step (1-token prompts, 128 new tokens)",
        Path(__file__).name,
        [
            f"{machine_info()[0]}, {os.cpu_count()} CPUs, {a.threads} threads; whole run {time.time() - t_start:.0f} s",
            "builds: " + ", ".join(f"{n} = {p or 'this checkout'}" for n, p in builds.items()),
            "engines: " + "; ".join(f"{m} {n}: {facts[(n, m)]}" for m in modes for n in builds),
            f"cells: median over {a.rounds} processes (alternated) of each one's median of {a.reps} batches of "
            f"rows x {NEW} tokens, tokens/s (the rounds' range)",
        ],
        header,
        table,
    )
    print(text)
    if not a.no_write:
        results_log.append(text)


if __name__ == "__main__":
    main()
