"""lmrt's batch-1 decode on the default model's 4-bit GGUF, quiet and beside a busy core, for 1 and 2 threads.

Modes (arguments): "2" = 2 threads quiet, "2h" = 2 threads while a `python -c "while True: pass"` process keeps
one core busy, "1" / "1h" the same with 1 thread. Each prints the median tok/s of REPS runs (32-token prompt,
NEW new tokens, greedy, EOS ignored; decode part only, as bench_engine.lmrt_decode_tps), the process CPU/wall,
and the thread pool's contention counters (Engine.stats(): pool_late_workers, pool_narrow_jobs).

To compare two builds in the same conditions (the A/B in RESULTS.md), build the other commit in a worktree
(`git worktree add /tmp/old <rev> && (cd /tmp/old && bash scripts/dev_build.sh)`) and alternate:

    for t in . /tmp/old; do (cd $t && HF_HUB_OFFLINE=1 PYTHONPATH=src:. REPS=5 python <this repo>/benchmarks/bench_contention.py 2 2h 1); done
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
from bench_engine import lmrt_decode_tps  # noqa: E402

import lmrt  # noqa: E402
from lmrt.default_model import default_model_gguf  # noqa: E402

REPS = int(os.environ.get("REPS", 5))
NEW = int(os.environ.get("NEW", 128))


def run(threads: int, hog: bool, prompts):
    cfg = lmrt.EngineConfig(
        num_threads=threads,
        max_batch_size=16,
        max_num_batched_tokens=512,
        session_len=1024,
        enable_prefix_caching=False,
    )
    pipe = lmrt.pipeline(default_model_gguf(), cfg)
    lmrt_decode_tps(pipe, prompts[0], lmrt.GenerationConfig(max_new_tokens=8, min_new_tokens=8, ignore_eos=True), 8)
    gen = lmrt.GenerationConfig(max_new_tokens=NEW, min_new_tokens=NEW, ignore_eos=True)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if hog else None
    try:
        if busy:
            time.sleep(0.5)
        w0, c0 = time.perf_counter(), time.process_time()
        tps = [lmrt_decode_tps(pipe, prompts[i + 1], gen, NEW) for i in range(REPS)]
        cpu_wall = (time.process_time() - c0) / (time.perf_counter() - w0)
    finally:
        if busy:
            busy.kill()
            busy.wait()
    stats = pipe.stats()
    pipe.close()
    return tps, cpu_wall, stats.get("pool_late_workers"), stats.get("pool_narrow_jobs")


def main(modes):
    rng = np.random.RandomState(0)
    prompts = [rng.randint(100, 49000, size=32).tolist() for _ in range(REPS + 1)]
    for mode in modes or ["2", "2h", "1", "1h"]:
        tps, cpu_wall, late, narrow = run(int(mode[0]), mode.endswith("h"), prompts)
        print(
            f"threads={mode[0]} busy core={mode.endswith('h')}: {statistics.median(tps):6.1f} tok/s  "
            f"cpu/wall {cpu_wall:.2f}  reps {[round(x) for x in tps]}  late workers {late}  narrow jobs {narrow}",
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
