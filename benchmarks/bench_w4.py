"""lmrt's 4-bit path vs llama.cpp on the default model's Q4_1 GGUF (CPU): decode, prefill, contention, batch.

One run, the same token-id prompts for every system (random ids clear of special tokens, as in
bench_engine.py; llama.cpp gets the very same ids, no BOS added), the same thread count:

  decode     tokens/s at batch 1: 32-token prompt, 128 new tokens, greedy, EOS ignored; only the decode
             part is timed: (tokens - 1) / (t_last_token - t_first_token)
  prefill    512 / time to first token for a 512-token prompt (lmrt: max_num_batched_tokens=512, one chunk;
             llama.cpp: n_batch=512, one llama_decode)
  hog        the decode measurement again while a `python -c "while True: pass"` process keeps one core busy
             (unpinned unless --pin-hog CPU); "kept" = hog decode / quiet decode
  batch16    16 concurrent requests (16 different prompts of 64-128 tokens, 128 new each, greedy, EOS ignored),
             all submitted at once through pipe(list_of_id_lists, GenerationConfig(...)): 16*128 / wall time
             (lmrt-w4 only by default; llama-cpp-python's Llama runs one sequence at a time)

systems: lmrt-w4 (GGUF, 4-bit tensors imported losslessly, int8 lm_head = the default), lmrt-w4-dense-head
(lm_head_dtype="dense": the fp32 tied embedding as output matrix), lmrt-fp32 (default_model_path(), the dense
HF conversion) and llama.cpp (llama-cpp-python, Llama(n_threads=N, n_threads_batch=N, n_ctx=2048, n_batch=512)).

Each number is the median of --reps runs after a warm-up. Beside it: process CPU time / wall time over the timed
runs (~N with N threads = all cores ours) and the cores other processes used meanwhile (from /proc/stat; the
machine is shared). Also measured: DRAM read bandwidth (numpy reductions over 256 MiB, 1 and 2 threads, best of
10) to give each system's bandwidth bound = bandwidth / bytes read per decoded token, and lmrt's linear kernels
alone on a decode step (M=1, synthetic weights of the model's shapes) to split the decode time.

    HF_HUB_OFFLINE=1 PYTHONPATH=. python benchmarks/bench_w4.py [--threads 2] [--reps 5] [--quick] [--no-write]
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
from bench_engine import Workload, lmrt_decode_tps, machine_info  # noqa: E402  (same conventions as the lmrt-vs-HF table)

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
    return dict(tps=statistics.median(s[0] for s in samples), cpu_wall=sum(s[2] for s in samples) / wall,
                others=sum(s[3] for s in samples) / wall, all=[s[0] for s in samples])


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
    def __init__(self, model, threads, dtype="float32", lm_head_dtype="auto"):
        import lmrt

        self.lmrt = lmrt
        cfg = lmrt.EngineConfig(dtype=dtype, num_threads=threads, max_batch_size=16, max_num_batched_tokens=512,
                                session_len=1024, enable_prefix_caching=False, lm_head_dtype=lm_head_dtype)
        self.pipe = lmrt.pipeline(model, cfg)
        self.eng = self.pipe._engine
        info = self.pipe.info()
        # bytes streamed per decoded token: every weight except the embedding table (one row is read),
        # unless the tied embedding itself is the output matrix (dense head)
        spec = self.pipe.spec
        embed = spec.vocab_size * spec.hidden_size * (4 if info["weight_dtype"] == "float32" else 2)
        separate_head = info["lm_head_dtype"] == "int8" or not spec.tie_word_embeddings
        self.bytes_per_token = info["weights_bytes"] - (embed if separate_head else 0)
        self.desc = (f"weight_format={info['weight_format']}, lm_head={info['lm_head_dtype']}, "
                     f"weights {info['weights_bytes'] / 1e6:.1f} MB")

    def _gen(self, n):
        return self.lmrt.GenerationConfig(max_new_tokens=n, min_new_tokens=n, ignore_eos=True)

    def decode(self, prompt, n):
        with Meter() as m:
            tps = lmrt_decode_tps(self.pipe, prompt, self._gen(n), n)
        return sample(tps, m)

    def prefill(self, prompt):
        with Meter() as m:
            rid = self.pipe._submit(prompt, self._gen(1))
            while True:
                c = self.eng.get(rid, -1.0)
                if c["token_ids"]:
                    break
        while c["finish_reason"] is None:
            c = self.eng.get(rid, -1.0)
        assert c["num_cached_tokens"] == 0
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

        self.llm = Llama(model_path=str(gguf), n_threads=threads, n_threads_batch=threads, n_ctx=2048, n_batch=512,
                         verbose=False)
        self.bytes_per_token = None  # filled in by main from the GGUF's tensor sizes
        self.desc = f"llama-cpp-python {llama_cpp.__version__}"

    def _stream(self, prompt):
        """Greedy tokens after `prompt`, forever (generate() never stops at EOS itself; we stop it)."""
        self.llm.reset()  # n_tokens = 0: no prefix reuse, the prompt is evaluated in full
        return self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0,
                                 reset=True)

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
            layers.append((rng.integers(0, 256, size=(n, k // 2), dtype=np.uint8),
                           rng.random((n, k // g), dtype=np.float32) * 0.01,
                           -rng.random((n, k // g), dtype=np.float32) * 0.01, k))
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

    res = (t(run_layers), t(lambda: K.linear_i8(xs[H], q, qs, num_threads=threads)),
           t(lambda: K.linear(xs[H], dense, num_threads=threads)), wbytes)
    del layers, q, dense
    gc.collect()
    return res


# ---------------------------------------------------------------- driver

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="threads for every system (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median is reported)")
    ap.add_argument("--quick", action="store_true", help="smoke mode: 1 rep, 16 new tokens, prefill 128")
    ap.add_argument("--only", default="lmrt-w4,lmrt-w4-dense-head,lmrt-fp32,llama.cpp", help="comma-separated systems")
    ap.add_argument("--batch-systems", default="lmrt-w4", help="systems that also run batch16 (lmrt ones only)")
    ap.add_argument("--hog-systems", default="lmrt-w4,llama.cpp", help="systems that also run decode under a busy core")
    ap.add_argument("--hog-reps", type=int, default=3,
                    help="repetitions of the contended decode (llama.cpp may run at ~3 tok/s there)")
    ap.add_argument("--pin-hog", type=int, default=None, help="pin the busy-loop process to this CPU (default: unpinned)")
    ap.add_argument("--hf-batch", action="store_true", help="also run HF bf16 batch16 once (slow: ~1-2 min)")
    ap.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import lmrt
    from lmrt.default_model import default_model_gguf, default_model_path

    sysinfo = lmrt.system_info()
    threads = args.threads or sysinfo["physical_cores"]
    reps = 1 if args.quick else args.reps
    hog_reps = 1 if args.quick else min(args.hog_reps, reps)
    gguf_path, dense_path = default_model_gguf(), default_model_path()
    vocab = 49152
    kw = dict(decode_new=16, prefill_len=128, batch_new=16) if args.quick else {}
    wl = Workload(vocab, reps, **kw)
    wl_hog = Workload(vocab, reps, seed=1, **kw)  # other prompts for the contended decode
    from lmrt.default_model import gguf_tokenizer_dir
    from lmrt.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(gguf_tokenizer_dir(gguf_path))  # lmrt's ids, fed to every system
    chat_ids = tok.encode(tok.apply_chat_template(CHAT_PROMPT, add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False)

    def log(s):
        print(s, flush=True)

    try:
        import llama_cpp

        llama_version = llama_cpp.__version__
        llama_sysinfo = llama_cpp.llama_print_system_info().decode().strip()
    except Exception as e:  # not installed / failed to build: benchmark lmrt alone and say so
        llama_version, llama_sysinfo = None, f"llama-cpp-python unavailable: {type(e).__name__}: {e}"
        log(llama_sysinfo)

    systems = {
        "lmrt-w4": lambda: LmrtRunner(gguf_path, threads),
        "lmrt-w4-dense-head": lambda: LmrtRunner(gguf_path, threads, lm_head_dtype="dense"),
        "lmrt-fp32": lambda: LmrtRunner(dense_path, threads),
        "llama.cpp": lambda: LlamaCppRunner(gguf_path, threads),
        "llama.cpp-1t": lambda: LlamaCppRunner(gguf_path, 1),  # optional: one thread, for the contention story
    }
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    if llama_version is None and "llama.cpp" in chosen:
        chosen.remove("llama.cpp")
    batch_sys = {s.strip() for s in args.batch_systems.split(",")}
    hog_sys = {s.strip() for s in args.hog_systems.split(",")}

    t_start = time.perf_counter()
    bw = dram_bandwidth(threads)
    log(f"DRAM read bandwidth (best of numpy reductions, 1..{threads} threads): {bw:.1f} GB/s")
    kern = lmrt_kernel_decode_ms(threads, reps=3 if args.quick else 5)
    log(f"lmrt kernels, one decode step: w4 linears {kern[0]:.2f} ms ({kern[3] / 1e6:.1f} MB, "
        f"{kern[3] / kern[0] / 1e6:.1f} GB/s), int8 head {kern[1]:.2f} ms, fp32 head {kern[2]:.2f} ms")

    results, meta, greedy = {}, {}, {}
    for name in chosen:
        log(f"== {name} (threads={threads}, load avg {os.getloadavg()[0]:.2f})")
        t0 = time.perf_counter()
        r = systems[name]()
        if name.startswith("llama.cpp"):
            r.bytes_per_token = gguf_decode_bytes(gguf_path)
        meta[name] = dict(bytes=r.bytes_per_token, desc=r.desc, load_s=time.perf_counter() - t0)
        res = results[name] = {}
        try:
            greedy[name] = r.greedy(chat_ids, 32)
            r.decode(wl.decode[0], 8)
            res["decode"] = summarize([r.decode(p, wl.decode_new) for p in wl.decode[1:reps + 1]])
            log(f"    decode  {res['decode']['tps']:8.1f} tok/s  cpu/wall {res['decode']['cpu_wall']:.2f}  "
                f"others {res['decode']['others']:.2f}  {[round(x) for x in res['decode']['all']]}")
            r.prefill(wl.prefill[0])
            res["prefill"] = summarize([r.prefill(p) for p in wl.prefill[1:reps + 1]])
            log(f"    prefill {res['prefill']['tps']:8.1f} tok/s  cpu/wall {res['prefill']['cpu_wall']:.2f}  "
                f"others {res['prefill']['others']:.2f}  {[round(x) for x in res['prefill']['all']]}")
            if name in hog_sys:
                with Hog(args.pin_hog) as hog:
                    r.decode(wl_hog.decode[0], 8)
                    res["hog"] = summarize([r.decode(p, wl_hog.decode_new) for p in wl_hog.decode[1:hog_reps + 1]])
                res["hog"]["hog_cores"] = hog.cores
                log(f"    hog     {res['hog']['tps']:8.1f} tok/s  cpu/wall {res['hog']['cpu_wall']:.2f}  "
                    f"others {res['hog']['others']:.2f} (hog itself {hog.cores:.2f})  "
                    f"{[round(x) for x in res['hog']['all']]}")
            if name in batch_sys and name.startswith("lmrt"):
                r.batch(wl.batch[0], 4)
                res["batch16"] = summarize([r.batch(p, wl.batch_new) for p in wl.batch[1:reps + 1]])
                log(f"    batch16 {res['batch16']['tps']:8.1f} tok/s  cpu/wall {res['batch16']['cpu_wall']:.2f}  "
                    f"others {res['batch16']['others']:.2f}  {[round(x) for x in res['batch16']['all']]}")
        finally:
            r.close()
            del r
            gc.collect()

    hf = None
    if args.hf_batch:
        from bench_engine import HfRunner

        import torch

        torch.set_num_threads(threads)
        log("== hf-bf16 batch16 (1 rep)")
        h = HfRunner(dense_path, "bfloat16", threads)
        h.batch(wl.batch[0], 2)
        tps, wall, cpu = h.batch(wl.batch[1], wl.batch_new)
        hf = dict(tps=tps, cpu_wall=cpu / wall)
        h.close()
        log(f"    batch16 {tps:8.1f} tok/s  cpu/wall {cpu / wall:.2f}")
    elapsed = time.perf_counter() - t_start

    # ---------------------------------------------------------------- report
    cpu_model, ncpu = machine_info()
    cmd = "HF_HUB_OFFLINE=1 PYTHONPATH=. python " + " ".join(["benchmarks/bench_w4.py"] + (argv or sys.argv[1:]))
    plen = len(wl.prefill[0])

    def cell(name, k):
        x = results.get(name, {}).get(k)
        return f"{x['tps']:.1f} ({x['cpu_wall']:.2f} / {x['others']:.2f})" if x else "—"

    lines = [
        f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} — 4-bit GGUF: lmrt vs llama.cpp "
        f"({gguf_path.name}){' (--quick)' if args.quick else ''}",
        "",
        f"- command: `{cmd}`",
        f"- machine: {cpu_model}, {ncpu} CPUs ({sysinfo['physical_cores']} physical cores), {platform.platform()}; "
        f"shared (load avg at the end {os.getloadavg()[0]:.2f})",
        f"- threads: {threads} for every system; lmrt.system_info(): {sysinfo}",
        f"- llama.cpp: llama-cpp-python {llama_version}; system info: `{llama_sysinfo}`",
        f"- lmrt {sysinfo['version']}, numpy {np.__version__}, python {platform.python_version()}; "
        f"models: {gguf_path} and {dense_path}",
        f"- reps: median of {reps} after a warm-up (contended decode: {hog_reps}); whole run {elapsed:.0f} s; "
        f"hog = `python -c \"while True: pass\"`, {'pinned to CPU %d' % args.pin_hog if args.pin_hog is not None else 'unpinned'}",
        f"- DRAM read bandwidth (numpy reductions over 256 MiB, best of 1 and {threads} threads): {bw:.1f} GB/s",
        "",
        f"Cells: tokens/s (process CPU time / wall time, ~{threads}.00 = all {threads} threads ran / cores used by "
        f"other processes meanwhile, from /proc/stat). bound = DRAM bandwidth / MB read per decoded token.",
        "",
        f"| system | MB/token | decode b=1 ({wl.decode_new} new) | bound (% reached) | prefill {plen} | "
        f"decode, 1 core busy | kept | batch 16 x {wl.batch_new} new |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in chosen:
        r, mb = results[name], meta[name]["bytes"] / 1e6
        bound = bw * 1e3 / mb
        kept = f"{r['hog']['tps'] / r['decode']['tps'] * 100:.0f}%" if "hog" in r else "—"
        lines.append(f"| {name} | {mb:.1f} | {cell(name, 'decode')} | {bound:.0f} ({r['decode']['tps'] / bound * 100:.0f}%) | "
                     f"{cell(name, 'prefill')} | {cell(name, 'hog')} | {kept} | {cell(name, 'batch16')} |")
    if hf:
        lines.append(f"| hf-bf16 (1 rep) | | | | | | | {hf['tps']:.1f} ({hf['cpu_wall']:.2f}) |")
    for ours in ("lmrt-w4", "lmrt-w4-dense-head"):
        if ours in results and "llama.cpp" in results:
            a, b = results[ours], results["llama.cpp"]
            hog = f"{a['hog']['tps'] / b['hog']['tps']:.2f}x" if "hog" in a and "hog" in b else ""
            lines.append(f"| {ours} / llama.cpp | | {a['decode']['tps'] / b['decode']['tps']:.2f}x | | "
                         f"{a['prefill']['tps'] / b['prefill']['tps']:.2f}x | {hog} | | |")
    lines += ["", "Per-rep tokens/s (spread):"]
    for name in chosen:
        lines.append(f"- {name}: " + "; ".join(f"{k} " + ", ".join(f"{x:.0f}" for x in v["all"])
                                               for k, v in results[name].items()))
    hogs = [f"{n} {results[n]['hog']['hog_cores']:.2f}" for n in chosen if "hog" in results[n]]
    if hogs:
        lines.append(f"- cores the hog process itself got during the contended decode: {', '.join(hogs)}")
    lines.append(f"- load time (s): " + ", ".join(f"{n} {meta[n]['load_s']:.1f}" for n in chosen))
    if greedy:
        ref = greedy.get("llama.cpp") or greedy[chosen[0]]

        def agree(t):
            n = 0
            while n < min(len(t), len(ref)) and t[n] == ref[n]:
                n += 1
            return n

        lines.append(f"- greedy check (chat prompt, 32 tokens, leading tokens equal to "
                     f"{'llama.cpp' if 'llama.cpp' in greedy else chosen[0]}'s): "
                     + ", ".join(f"{n} {agree(t)}/32" for n, t in greedy.items()))
    lines.append(f"- lmrt linear kernels alone, one decode step (M=1, {threads} threads, synthetic weights of the "
                 f"model's shapes, 121 Python calls): 30 layers of w4 linears {kern[0]:.2f} ms "
                 f"({kern[3] / 1e6:.1f} MB, {kern[3] / kern[0] / 1e6:.1f} GB/s), int8 lm_head {kern[1]:.2f} ms, "
                 f"fp32 lm_head {kern[2]:.2f} ms")
    lines.append("")
    table = "\n".join(lines)
    print()
    print(table)
    if not args.no_write:
        with RESULTS.open("a") as f:
            f.write("\n" + table + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
