"""lmrt's 4-bit paths vs llama.cpp (same Q4_1 GGUF) and HF transformers bf16 on the CPU, in one run:
decode, prefill, contention, batch, for the default model (SmolLM2-135M).

The same token-id prompts for every system (random ids clear of special tokens, as in bench_engine.py;
llama.cpp and HF get the very same ids, no BOS added), the same thread count:

  decode     tokens/s at batch 1: 32-token prompt, 128 new tokens, greedy, EOS ignored; only the decode
             part is timed: (tokens - 1) / (t_last_token - t_first_token)
  prefill    512 / time to first token for a 512-token prompt (lmrt: max_num_batched_tokens=512, one chunk;
             llama.cpp: n_batch=512, one llama_decode; HF: generate(max_new_tokens=1))
  hog        the decode measurement again while a `python -c "while True: pass"` process keeps one core busy
             (unpinned unless --pin-hog CPU); "kept" = hog decode / quiet decode
  batch16    16 concurrent requests (16 different prompts of 64-128 tokens, 128 new each, greedy, EOS ignored):
             16*128 / wall time. lmrt: all submitted at once through pipe(list_of_id_lists, GenerationConfig(...));
             HF: model.generate on a left-padded batch of 16 (slow: --hf-batch-reps, default 1 rep).
             llama-cpp-python's Llama runs one sequence at a time, so llama.cpp has no batch16.

systems (--only; all by default):
  lmrt-w4             the GGUF, 4-bit tensors imported losslessly, int8 lm_head (the default; prefill_precision
                      "auto": bf16 on AMX tiles where the CPU has AMX-BF16, exact fp32 elsewhere)
  lmrt-w4-fp32-prefill  the same with prefill_precision="fp32" (exact, batch invariant)
  lmrt-w4-int8        lmrt-w4 with linear_precision="int8": int8 activations into the 4-bit products off the tiles
  lmrt-w4-dense-head  the same with lm_head_dtype="dense": the fp32 tied embedding as output matrix
  lmrt-fp32           default_model_path(), the dense HF conversion of the GGUF
  lmrt-awq-g64        lmrt on its own AutoAWQ g64 checkpoint (--awq-dir, default /tmp/lmrt-awq/awq-g64), made by
                      `HF_HUB_OFFLINE=1 python -m quantize.cli --method awq --group-size 64 --threads 2 --out DIR`
                      (= lmrt-quantize; benchmarks/awq_runs.sh); skipped, with the reason in the table, if missing
  llama.cpp           llama-cpp-python, Llama(n_threads=N, n_threads_batch=N, n_ctx=2048, n_batch=512)
  hf-bf16             HF transformers, the dense default model in bf16 (bench_engine.HfRunner,
                      torch.set_num_threads(N)); runs last, so torch's threads never overlap the others
Contended decode (--hog-systems): lmrt-w4, lmrt-w4-int8, lmrt-awq-g64, llama.cpp. batch16 (--batch-systems):
lmrt-w4, lmrt-w4-int8, lmrt-awq-g64, hf-bf16. Ratio rows: lmrt-w4, lmrt-w4-int8 and lmrt-awq-g64 over llama.cpp
(decode, prefill, hog) and over hf-bf16 (prefill, batch16).

Each number is the median of --reps runs after a warm-up. Every system is loaded first and the batch-1 decode
and prefill reps run round robin (each rep every system in turn, the order rotating a place a rep), so a drift in
this shared machine's speed falls on all of them alike (run one system after the other, a ratio also measured how
the host's speed moved between them: 10-20% on the Zen 4 host); their ratio rows are medians of the per-rep
ratios. The contended decode and batch16 then run system by system. Beside each number: process CPU time / wall
time over the timed runs (~N with N threads = all cores ours) and the cores other processes used meanwhile (from
/proc/stat; the machine is shared). Also measured: DRAM read bandwidth (numpy reductions over 256 MiB, 1 and 2 threads, best of
10) to give each system's bandwidth bound = bandwidth / bytes read per decoded token (HF: its bf16 parameters,
the tied embedding counted once as the output matrix), and lmrt's linear kernels alone on a decode step (M=1,
synthetic weights of the model's shapes) to split the decode time. A greedy check (chat prompt, 32 tokens)
compares every system's tokens with llama.cpp's.

The full run (all rows, appended to benchmarks/RESULTS.md; on a quiet machine):

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_w4.py [--threads 2] [--reps 5] [--awq-dir DIR]

Smoke test: add --quick --no-write (1 rep, 16 new tokens, prefill 128).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import Workload, lmrt_decode_tps, lmrt_first_token, machine_info  # noqa: E402  (same conventions as the lmrt-vs-HF table)

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CLK = os.sysconf("SC_CLK_TCK")
CHAT_PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


# ---------------------------------------------------------------- timing


def _busy_s():
    """Seconds of CPU time used by everything on the machine since boot (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / CLK  # minus idle and iowait


class Meter:
    """Wall time, this process's CPU time and the other processes' CPU time around one region."""

    def __enter__(self):
        self.w0, self.c0, self.b0 = time.perf_counter(), time.process_time(), _busy_s()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0
        self.others = max(0.0, _busy_s() - self.b0 - self.cpu)


def sample(tps, m):
    return tps, m.wall, m.cpu, m.others


def summarize(samples):
    """samples: (tokens/s, wall, cpu, others) per rep -> median tok/s, cpu/wall, cores used by others."""
    wall = sum(s[1] for s in samples)
    return dict(
        tps=statistics.median(s[0] for s in samples),
        cpu_wall=sum(s[2] for s in samples) / wall,
        others=sum(s[3] for s in samples) / wall,
        all=[s[0] for s in samples],
    )


class Hog:
    """A `python -c "while True: pass"` process keeping one core busy (optionally pinned to one CPU)."""

    def __init__(self, pin=None):
        self.pin = pin

    def _cpu(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / CLK  # utime + stime

    def __enter__(self):
        self.p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if self.pin is not None:
            os.sched_setaffinity(self.p.pid, {self.pin})
        time.sleep(0.5)
        self.t0, self.c0 = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.cores = (self._cpu() - self.c0) / (time.perf_counter() - self.t0)
        self.p.kill()
        self.p.wait()


# ---------------------------------------------------------------- systems


class LmrtRunner:
    def __init__(
        self,
        model,
        threads,
        dtype="float32",
        lm_head_dtype="auto",
        prefill_precision="auto",
        linear_precision="fp32",
        max_batch_size=16,
        session_len=1024,
    ):
        import lmrt

        self.lmrt = lmrt
        cfg = lmrt.EngineConfig(
            dtype=dtype,
            num_threads=threads,
            max_batch_size=max_batch_size,
            max_num_batched_tokens=512,
            session_len=session_len,
            enable_prefix_caching=False,
            lm_head_dtype=lm_head_dtype,
            prefill_precision=prefill_precision,
            linear_precision=linear_precision,
        )
        self.pipe = lmrt.pipeline(model, cfg)
        self.eng = self.pipe._engine
        info = self.pipe.info()
        # bytes streamed per decoded token: every weight except the embedding table (one row is read),
        # unless the tied embedding itself is the output matrix (dense head)
        spec = self.pipe.spec
        embed = spec.vocab_size * spec.hidden_size * (4 if info["weight_dtype"] == "float32" else 2)
        separate_head = info["lm_head_dtype"] == "int8" or not spec.tie_word_embeddings
        self.bytes_per_token = info["weights_bytes"] - (embed if separate_head else 0)
        group = f" g{info['group_size']}" if info.get("group_size") else ""
        self.desc = (
            f"weight_format={info['weight_format']}{group}, lm_head={info['lm_head_dtype']}, "
            f"prefill={info['prefill_precision']}, linear={info['linear_precision']}, KV {info['kv_cache_dtype']}, "
            f"weights {info['weights_bytes'] / 1e6:.1f} MB"
        )

    def _gen(self, n):
        return self.lmrt.GenerationConfig(max_new_tokens=n, min_new_tokens=n, ignore_eos=True)

    def decode(self, prompt, n):
        with Meter() as m:
            tps = lmrt_decode_tps(self.pipe, prompt, self._gen(n), n)
        return sample(tps, m)

    def prefill(self, prompt):
        with Meter() as m:
            lmrt_first_token(self.pipe, prompt)
        return sample(len(prompt) / m.wall, m)

    def batch(self, prompts, n):
        with Meter() as m:
            outs = self.pipe(prompts, self.lmrt.GenerationConfig(max_new_tokens=n, min_new_tokens=n, ignore_eos=True))
        total = sum(len(o.token_ids) for o in outs)
        assert total == n * len(prompts), total
        return sample(total / m.wall, m)

    def greedy(self, ids, n):
        return list(self.pipe(ids, self._gen(n)).token_ids)

    def close(self):
        self.pipe.close()


class LlamaCppRunner:
    def __init__(self, gguf, threads):
        import llama_cpp
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512, verbose=False
        )
        self.bytes_per_token = None  # filled in by main from the GGUF's tensor sizes
        self.desc = f"llama-cpp-python {llama_cpp.__version__}"

    def _stream(self, prompt):
        """Greedy tokens after `prompt`, forever (generate() never stops at EOS itself; we stop it)."""
        self.llm.reset()  # n_tokens = 0: no prefix reuse, the prompt is evaluated in full
        return self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)

    def decode(self, prompt, n):
        times, toks = [], []
        with Meter() as m:
            g = self._stream(prompt)
            for t in g:
                times.append(time.perf_counter())
                toks.append(t)
                if len(toks) == n:
                    break
            g.close()
        return sample((n - 1) / (times[-1] - times[0]), m)

    def prefill(self, prompt):
        with Meter() as m:
            g = self._stream(prompt)
            next(g)
        g.close()
        return sample(len(prompt) / m.wall, m)

    def greedy(self, ids, n):
        g = self._stream(ids)
        out = [next(g) for _ in range(n)]
        g.close()
        return out

    def close(self):
        self.llm.close() if hasattr(self.llm, "close") else None
        del self.llm


class HfBf16Runner:
    """bench_engine.HfRunner (HF transformers, bf16), each call under this file's Meter (CPU/wall, others)."""

    def __init__(self, model, threads):
        import torch
        import transformers
        from bench_engine import HfRunner

        self.h = HfRunner(model, "bfloat16", threads)  # torch.set_num_threads(threads) inside
        m = self.h.model
        # bytes streamed per decoded token: every parameter (parameters() counts a tied one once); an untied
        # embedding table is read one row per token, so it is left out
        embed = m.get_input_embeddings().weight
        tied = m.get_output_embeddings().weight is embed
        self.bytes_per_token = sum(p.numel() * p.element_size() for p in m.parameters()) - (
            0 if tied else embed.numel() * embed.element_size()
        )
        self.desc = (
            f"transformers {transformers.__version__}, torch {torch.__version__}, {m.dtype}, "
            f"{torch.get_num_threads()} threads, tied head {tied}"
        )

    def _metered(self, fn, *args):
        with Meter() as m:
            tps = fn(*args)[0]
        return sample(tps, m)

    def decode(self, prompt, n):
        return self._metered(self.h.decode, prompt, n)

    def prefill(self, prompt):
        return self._metered(self.h.prefill, prompt)

    def batch(self, prompts, n):
        return self._metered(self.h.batch, prompts, n)

    def greedy(self, ids, n):
        torch = self.h.torch
        x = torch.tensor([ids])
        with torch.inference_mode():
            out = self.h._generate(x, n, torch.ones_like(x))  # min_new_tokens=n: EOS ignored, like the others
        return out[0, len(ids) :].tolist()

    def close(self):
        self.h.close()


# ---------------------------------------------------------------- side measurements


def dram_bandwidth(threads, reps=10):
    """Best read bandwidth (GB/s) over 256 MiB with numpy max / bitwise-or reductions in 1..threads threads."""
    a = np.ones(64 * 2**20, dtype=np.float32)
    fns = [lambda x: x.max(), lambda x: np.bitwise_or.reduce(x.view(np.uint64))]
    best = 0.0
    for f in fns:
        for nt in sorted({1, threads}):
            parts = np.array_split(a, nt)
            for _ in range(reps):
                ths = [threading.Thread(target=f, args=(p,)) for p in parts]
                t = time.perf_counter()
                [h.start() for h in ths]
                [h.join() for h in ths]
                best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def gguf_decode_bytes(path):
    """Bytes llama.cpp streams per decoded token: every tensor but token_embd, plus token_embd as the tied output."""
    import gguf

    r = gguf.GGUFReader(str(path))
    return sum(int(t.n_bytes) for t in r.tensors)


def lmrt_kernel_decode_ms(threads, reps=5):
    """lmrt's linear kernels alone for one decode step (M=1) at SmolLM2-135M shapes, synthetic weights,
    every layer its own arrays (so they stream from DRAM as in the engine): (w4 layers ms, int8 head ms,
    fp32 dense head ms, w4 layer bytes)."""
    from lmrt._core import kernels as K

    rng = np.random.default_rng(0)
    H, I, V, L, g = 576, 1536, 49152, 30, 32
    shapes = [(H + 2 * 192, H), (H, H), (2 * I, H), (H, I)]  # (N, K): qkv, o, gate_up, down
    layers = []
    for _ in range(L):
        for n, k in shapes:
            layers.append(
                (
                    rng.integers(0, 256, size=(n, k // 2), dtype=np.uint8),
                    rng.random((n, k // g), dtype=np.float32) * 0.01,
                    -rng.random((n, k // g), dtype=np.float32) * 0.01,
                    k,
                )
            )
    wbytes = sum(c.nbytes + s.nbytes + mn.nbytes for c, s, mn, _ in layers)
    q = rng.integers(-127, 128, size=(V, H), dtype=np.int8)
    qs = rng.random(V, dtype=np.float32) * 0.01
    dense = rng.random((V, H), dtype=np.float32)
    xs = {k: rng.random((1, k), dtype=np.float32) for k in (H, I)}

    def run_layers():
        for c, s, mn, k in layers:
            K.linear_w4(xs[k], c, s, mn, g, num_threads=threads)

    def t(fn):
        fn()
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e3

    res = (
        t(run_layers),
        t(lambda: K.linear_i8(xs[H], q, qs, num_threads=threads)),
        t(lambda: K.linear(xs[H], dense, num_threads=threads)),
        wbytes,
    )
    layers.clear()  # the weights go before the next measurement
    q = dense = None
    gc.collect()
    return res


# ---------------------------------------------------------------- driver

DEFAULT_AWQ_DIR = Path("/tmp/lmrt-awq/awq-g64")
RATIOS = [  # (ours, theirs, measurements compared)
    ("lmrt-w4", "llama.cpp", ("decode", "prefill", "hog")),
    ("lmrt-w4-int8", "llama.cpp", ("decode", "prefill", "hog")),
    ("lmrt-w4-dense-head", "llama.cpp", ("decode", "prefill", "hog")),
    ("lmrt-awq-g64", "llama.cpp", ("decode", "prefill", "hog")),
    ("lmrt-w4", "hf-bf16", ("prefill", "batch16")),
    ("lmrt-w4-int8", "hf-bf16", ("prefill", "batch16")),
    ("lmrt-w4-fp32-prefill", "hf-bf16", ("prefill",)),
    ("lmrt-awq-g64", "hf-bf16", ("prefill", "batch16")),
]


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="threads for every system (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median is reported)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: 1 rep, 16 new tokens, prefill 128")
    ap.add_argument(
        "--only",
        default="lmrt-w4,lmrt-w4-int8,lmrt-w4-dense-head,lmrt-fp32,lmrt-awq-g64,llama.cpp,hf-bf16",
        help="comma-separated systems (also: llama.cpp-1t, llama.cpp on one thread)",
    )
    ap.add_argument(
        "--awq-dir",
        type=Path,
        default=DEFAULT_AWQ_DIR,
        help="lmrt-awq-g64's AutoAWQ checkpoint (made by lmrt-quantize --method awq --group-size 64)",
    )
    ap.add_argument(
        "--batch-systems",
        default="lmrt-w4,lmrt-w4-int8,lmrt-awq-g64,hf-bf16",
        help="systems that also run batch16 (not llama.cpp: one sequence at a time)",
    )
    ap.add_argument(
        "--hog-systems",
        default="lmrt-w4,lmrt-w4-int8,lmrt-awq-g64,llama.cpp",
        help="systems that also run decode under a busy core",
    )
    ap.add_argument(
        "--hog-reps",
        type=int,
        default=3,
        help="repetitions of the contended decode (llama.cpp may run at ~3 tok/s there)",
    )
    ap.add_argument(
        "--hf-batch-reps", type=int, default=1, help="repetitions of hf-bf16's batch16 (slow: ~1-2 min each)"
    )
    ap.add_argument(
        "--pin-hog", type=int, default=None, help="pin the busy-loop process to this CPU (default: unpinned)"
    )
    ap.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return ap.parse_args(argv)


def make_systems(args, threads, gguf_path, dense_path, llama_ok):
    """name -> (factory, why it is skipped or None)."""
    awq = args.awq_dir
    awq_missing = None
    if not (awq / "config.json").exists():
        cmd = f"HF_HUB_OFFLINE=1 python -m quantize.cli --method awq --group-size 64 --threads 2 --out {awq}"
        print(
            f"lmrt-awq-g64: no AutoAWQ checkpoint in {awq}; skipping it. Make it (from the repo root; ~30 "
            f"min on 2 cores) with:\n    {cmd}\n(= lmrt-quantize --method awq --group-size 64 --out {awq}; "
            f"benchmarks/awq_runs.sh makes it with the other AWQ runs)",
            flush=True,
        )
        awq_missing = f"no checkpoint in {awq}; make it with `{cmd}`"
    no_llama = None if llama_ok else "llama-cpp-python unavailable"
    return {
        "lmrt-w4": (lambda: LmrtRunner(gguf_path, threads), None),
        "lmrt-w4-dense-head": (lambda: LmrtRunner(gguf_path, threads, lm_head_dtype="dense"), None),
        # The default resolves to bf16 prefill on AMX hosts; this one pins the exact fp32 path.
        "lmrt-w4-fp32-prefill": (lambda: LmrtRunner(gguf_path, threads, prefill_precision="fp32"), None),
        "lmrt-w4-int8": (lambda: LmrtRunner(gguf_path, threads, linear_precision="int8"), None),
        "lmrt-fp32": (lambda: LmrtRunner(dense_path, threads), None),
        "lmrt-awq-g64": (lambda: LmrtRunner(awq, threads), awq_missing),
        "llama.cpp": (lambda: LlamaCppRunner(gguf_path, threads), no_llama),
        "llama.cpp-1t": (lambda: LlamaCppRunner(gguf_path, 1), no_llama),  # optional: for the contention story
        "hf-bf16": (lambda: HfBf16Runner(dense_path, threads), None),
    }


def round_robin(runners, wl, reps):
    """Batch-1 decode and prefill samples of every runner, {measurement: {name: [sample per rep]}}: all warmed up,
    then each rep runs every system on the same prompt in turn, the order rotating a place each rep."""
    names = list(runners)
    out = {"decode": {name: [] for name in names}, "prefill": {name: [] for name in names}}
    for r in runners.values():
        r.decode(wl.decode[0], 8)
        r.prefill(wl.prefill[0])
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            out["decode"][name].append(runners[name].decode(wl.decode[1 + rep], wl.decode_new))
        for name in order:
            out["prefill"][name].append(runners[name].prefill(wl.prefill[1 + rep]))
    return out


def measure(r, wl, wl_hog, plan, log):
    """decode and prefill, then hog / batch16 if plan asks: {measurement: summary}."""
    res = {}

    def record(k, samples, note=""):
        x = res[k] = summarize(samples)
        log(
            f"    {k:7s} {x['tps']:8.1f} tok/s  cpu/wall {x['cpu_wall']:.2f}  others {x['others']:.2f}{note}  "
            f"{[round(v) for v in x['all']]}"
        )

    record("decode", plan["decode"])  # both measured round robin beside the other systems (round_robin)
    record("prefill", plan["prefill"])
    if plan["hog_reps"]:
        with Hog(plan["pin_hog"]) as hog:
            r.decode(wl_hog.decode[0], 8)
            samples = [r.decode(p, wl_hog.decode_new) for p in wl_hog.decode[1 : plan["hog_reps"] + 1]]
        record("hog", samples, f" (hog itself {hog.cores:.2f})")
        res["hog"]["hog_cores"] = hog.cores
    if plan["batch_reps"]:
        r.batch(wl.batch[0], 4)  # short warm-up: the batch's shapes, few steps
        record("batch16", [r.batch(p, wl.batch_new) for p in wl.batch[1 : plan["batch_reps"] + 1]])
    return res


def main(argv=None):
    args = parse_args(argv)

    import lmrt
    from lmrt.default_model import default_model_gguf, default_model_path
    from lmrt.loader import metadata_dir
    from lmrt.tokenizer import Tokenizer

    sysinfo = lmrt.system_info()
    threads = args.threads or sysinfo["physical_cores"]
    reps = 1 if args.quick else args.reps
    hog_reps = 1 if args.quick else min(args.hog_reps, reps)
    hf_batch_reps = 1 if args.quick else min(args.hf_batch_reps, reps)
    gguf_path, dense_path = default_model_gguf(), default_model_path()
    kw = dict(decode_new=16, prefill_len=128, batch_new=16) if args.quick else {}
    wl = Workload(49152, reps, **kw)
    wl_hog = Workload(49152, reps, seed=1, **kw)  # other prompts for the contended decode
    tok = Tokenizer.from_pretrained(metadata_dir(gguf_path))  # lmrt's ids, fed to every system
    chat_ids = tok.encode(
        tok.apply_chat_template(CHAT_PROMPT, add_generation_prompt=True, tokenize=False), add_special_tokens=False
    )

    def log(s):
        print(s, flush=True)

    try:
        import llama_cpp

        llama_version = llama_cpp.__version__
        llama_sysinfo = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as e:  # not installed / failed to build: benchmark the others and say so
        llama_version, llama_sysinfo = None, f"llama-cpp-python unavailable: {type(e).__name__}: {e}"
        log(llama_sysinfo)

    systems = make_systems(args, threads, gguf_path, dense_path, llama_version is not None)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    batch_sys = {s.strip() for s in args.batch_systems.split(",")}
    hog_sys = {s.strip() for s in args.hog_systems.split(",")}

    t_start = time.perf_counter()
    bw = dram_bandwidth(threads)
    log(f"DRAM read bandwidth (best of numpy reductions, 1..{threads} threads): {bw:.1f} GB/s")
    kern = lmrt_kernel_decode_ms(threads, reps=3 if args.quick else 5)
    log(
        f"lmrt kernels, one decode step: w4 linears {kern[0]:.2f} ms ({kern[3] / 1e6:.1f} MB, "
        f"{kern[3] / kern[0] / 1e6:.1f} GB/s), int8 head {kern[1]:.2f} ms, fp32 head {kern[2]:.2f} ms"
    )

    results, meta, greedy, skipped, runners = {}, {}, {}, {}, {}
    try:
        for name in chosen:  # every system loaded first, for the round robin
            factory, why = systems[name]
            if why:
                skipped[name] = why
                log(f"== {name}: skipped ({why})")
                continue
            t0 = time.perf_counter()
            r = runners[name] = factory()
            if name.startswith("llama.cpp"):
                r.bytes_per_token = gguf_decode_bytes(gguf_path)
            meta[name] = dict(bytes=r.bytes_per_token, desc=r.desc, load_s=time.perf_counter() - t0)
            greedy[name] = r.greedy(chat_ids, 32)
        log(f"== decode and prefill, round robin: {', '.join(runners)} (load avg {os.getloadavg()[0]:.2f})")
        rr = round_robin(runners, wl, reps)
        for name, r in list(runners.items()):
            log(f"== {name} (threads={threads}, load avg {os.getloadavg()[0]:.2f})")
            plan = dict(reps=reps, pin_hog=args.pin_hog, hog_reps=hog_reps if name in hog_sys else 0, batch_reps=0)
            plan.update(decode=rr["decode"][name], prefill=rr["prefill"][name])
            if name in batch_sys and hasattr(r, "batch"):  # llama.cpp has none
                plan["batch_reps"] = hf_batch_reps if name.startswith("hf") else reps
            results[name] = measure(r, wl, wl_hog, plan, log)
            runners.pop(name).close()
            del r
            gc.collect()
    finally:
        for r in runners.values():
            r.close()
    elapsed = time.perf_counter() - t_start

    env = dict(
        args=args,
        argv=argv,
        threads=threads,
        reps=reps,
        hog_reps=hog_reps,
        hf_batch_reps=hf_batch_reps,
        sysinfo=sysinfo,
        llama_version=llama_version,
        llama_sysinfo=llama_sysinfo,
        bw=bw,
        kern=kern,
        elapsed=elapsed,
        gguf_path=gguf_path,
        dense_path=dense_path,
        wl=wl,
    )
    table = report(chosen, results, meta, greedy, skipped, env)
    print()
    print(table)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + table + "\n")
        print(f"appended to {RESULTS}")


def cell(x, reps, show_reps=False):
    """tokens/s (cpu/wall / others), and the rep count if it is not the usual one (or show_reps)."""
    if not x:
        return "—"
    n = len(x["all"])
    note = f", {n} rep{'s' if n > 1 else ''}" if show_reps or n != reps else ""
    return f"{x['tps']:.1f} ({x['cpu_wall']:.2f} / {x['others']:.2f}){note}"


def ratio(a, b, per_rep):
    """a's tokens/s over b's: the median of the per-rep ratios where their reps ran side by side (per_rep: the
    round robin's decode and prefill), else the ratio of the medians."""
    if per_rep and len(a["all"]) == len(b["all"]):
        return statistics.median(x / y for x, y in zip(a["all"], b["all"]))
    return a["tps"] / b["tps"]


def table_rows(chosen, results, meta, skipped, e):
    """The system rows, then the ratio rows."""
    rows = []
    for name in chosen:
        if name in skipped:
            rows.append(f"| {name} | skipped: {skipped[name]} | | | | | | |")
            continue
        r, mb = results[name], meta[name]["bytes"] / 1e6
        bound = e["bw"] * 1e3 / mb
        kept = f"{r['hog']['tps'] / r['decode']['tps'] * 100:.0f}%" if "hog" in r else "—"
        c = lambda k: cell(r.get(k), e["hog_reps"] if k == "hog" else e["reps"], k == "batch16" and name == "hf-bf16")
        rows.append(
            f"| {name} | {mb:.1f} | {c('decode')} | {bound:.0f} ({r['decode']['tps'] / bound * 100:.0f}%) | "
            f"{c('prefill')} | {c('hog')} | {kept} | {c('batch16')} |"
        )
    for ours, theirs, keys in RATIOS:
        if ours not in results or theirs not in results:
            continue
        a, b = results[ours], results[theirs]
        q = {k: f"{ratio(a[k], b[k], k in ('decode', 'prefill')):.2f}x" for k in keys if k in a and k in b}
        if q:
            cols = [f"{ours} / {theirs}", "", q.get("decode"), "", q.get("prefill"), q.get("hog"), "", q.get("batch16")]
            rows.append("|" + "|".join(f" {c} " if c else " " for c in cols) + "|")
    return rows


def report(chosen, results, meta, greedy, skipped, e):
    args, threads, sysinfo, wl, kern = e["args"], e["threads"], e["sysinfo"], e["wl"], e["kern"]
    cpu_model, ncpu = machine_info()
    cmd = "HF_HUB_OFFLINE=1 PYTHONPATH=src:. python " + " ".join(
        ["benchmarks/bench_w4.py"] + (e["argv"] or sys.argv[1:])
    )
    ran = [n for n in chosen if n in results]
    lines = [
        f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} — 4-bit: lmrt vs llama.cpp "
        f"({e['gguf_path'].name}) and HF bf16{' (--quick)' if args.quick else ''}",
        "",
        f"- command: `{cmd}`",
        f"- machine: {cpu_model}, {ncpu} CPUs ({sysinfo['physical_cores']} physical cores), {platform.platform()}; "
        f"shared (load avg at the end {os.getloadavg()[0]:.2f})",
        f"- threads: {threads} for every system; lmrt.system_info(): {sysinfo}",
        f"- llama.cpp: llama-cpp-python {e['llama_version']}; system info: `{e['llama_sysinfo']}`",
        f"- lmrt {sysinfo['version']}, numpy {np.__version__}, python {platform.python_version()}; "
        f"models: {e['gguf_path']}, {e['dense_path']} (lmrt-fp32, hf-bf16), {args.awq_dir} (lmrt-awq-g64)",
        "- systems: " + "; ".join(f"{n}: {meta[n]['desc']}" for n in ran),
        f"- reps: median of {e['reps']} after a warm-up (contended decode: {e['hog_reps']}; hf-bf16 batch16: "
        f"{e['hf_batch_reps']}); the decode and prefill reps round robin over every system (their ratio rows: "
        f"medians of the per-rep ratios), the rest system by system; whole run {e['elapsed']:.0f} s; "
        f'hog = `python -c "while True: pass"`, '
        f"{'pinned to CPU %d' % args.pin_hog if args.pin_hog is not None else 'unpinned'}",
        f"- DRAM read bandwidth (numpy reductions over 256 MiB, best of 1 and {threads} threads): {e['bw']:.1f} GB/s",
        "",
        f"Cells: tokens/s (process CPU time / wall time, ~{threads}.00 = all {threads} threads ran / cores used by "
        f"other processes meanwhile, from /proc/stat), and the rep count where it is not the row's usual one. "
        f"bound = DRAM bandwidth / MB read per decoded token.",
        "",
        f"| system | MB/token | decode b=1 ({wl.decode_new} new) | bound (% reached) | prefill {len(wl.prefill[0])} | "
        f"decode, 1 core busy | kept | batch 16 x {wl.batch_new} new |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += table_rows(chosen, results, meta, skipped, e)
    lines += ["", "Per-rep tokens/s (spread):"]
    for name in ran:
        lines.append(
            f"- {name}: "
            + "; ".join(f"{k} " + ", ".join(f"{x:.0f}" for x in v["all"]) for k, v in results[name].items())
        )
    hogs = [f"{n} {results[n]['hog']['hog_cores']:.2f}" for n in ran if "hog" in results[n]]
    if hogs:
        lines.append(f"- cores the hog process itself got during the contended decode: {', '.join(hogs)}")
    lines.append("- load time (s): " + ", ".join(f"{n} {meta[n]['load_s']:.1f}" for n in ran))
    if greedy:
        ref_name = "llama.cpp" if "llama.cpp" in greedy else ran[0]
        ref = greedy[ref_name]

        def agree(t):
            n = 0
            while n < min(len(t), len(ref)) and t[n] == ref[n]:
                n += 1
            return n

        lines.append(
            f"- greedy check (chat prompt, 32 tokens, leading tokens equal to {ref_name}'s): "
            + ", ".join(f"{n} {agree(t)}/32" for n, t in greedy.items())
        )
    lines.append(
        f"- lmrt linear kernels alone, one decode step (M=1, {threads} threads, synthetic weights of the "
        f"model's shapes, 121 Python calls): 30 layers of w4 linears {kern[0]:.2f} ms "
        f"({kern[3] / 1e6:.1f} MB, {kern[3] / kern[0] / 1e6:.1f} GB/s), int8 lm_head {kern[1]:.2f} ms, "
        f"fp32 lm_head {kern[2]:.2f} ms"
    )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
