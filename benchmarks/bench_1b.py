"""lmrt vs llama.cpp at Llama-3.2-1B's shapes (issue 14's scale point): where decode is memory-bound.

A random-weight model of Llama-3.2-1B's shapes (hidden 2048, intermediate 8192, 16 layers, 32 heads, 8 KV heads,
head size 64, vocab 128256, tied embedding) is written once as a GGUF with the `gguf` package: every projection
Q4_1, the embedding (also the output matrix) Q8_0, as SmolLM2's GGUF is; its tokenizer is SmolLM2's with the vocab
padded by unused tokens (the benchmark feeds token ids, so no text is tokenized). llama.cpp and lmrt read that same
file, so they stream the same 4-bit codes (lmrt: its own layout of them, with fp32 scales and mins, and an int8
output matrix).

Measured, side by side in one run, 2 threads by default, the same random token ids for every system:
  decode    tokens/s at batch 1 after a context of 32, 512, 2,048 and 4,096 tokens: --new tokens, greedy, EOS
            ignored; only decode is timed, (tokens - 1) / (t_last - t_first); the prompt's prefill is not
  bound     DRAM read bandwidth (measured in the same run) / bytes read per decoded token (the weights, not the KV)
  batch16   16 requests of 64-token prompts, --new tokens each: total generated tokens / wall time from submit to
            the last token (lmrt: submitted at once; HF: generate on the batch of 16; llama-cpp-python's Llama runs one
            sequence at a time, so llama.cpp has no batch16)

systems: lmrt-w4 (linear_precision fp32, the default), lmrt-w4-int8 (int8 activations), llama.cpp
(llama-cpp-python, flash attention off, n_ctx 4,096 + --new), hf-bf16 (HF transformers bf16 on the GGUF's weights
dequantized into a HF checkpoint, made once beside the GGUF; decode after 32 tokens and batch16 only). Medians of --reps (the 2,048 and 4,096 contexts: of
--long-reps, since each rep prefills the whole context first).

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_1b.py [--gguf PATH] [--threads 2] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results_log  # noqa: E402
from bench_engine import machine_info  # noqa: E402
from bench_w4 import LmrtRunner, Meter, dram_bandwidth, gguf_decode_bytes, sample, summarize  # noqa: E402

SHAPE = dict(hidden=2048, intermediate=8192, layers=16, heads=32, kv_heads=8, head_dim=64, vocab=128256)
DEFAULT_GGUF = Path("/tmp/lmrt-1b/llama-3.2-1b-shaped-random.Q4_1.gguf")
CONTEXTS = (32, 512, 2048, 4096)


def make_gguf(path: Path, seed: int = 0) -> None:
    """The random-weight 1B-shaped Llama GGUF (see the module docstring); ~0.9 GB, a minute or two."""
    import gguf
    from gguf.quants import quantize

    from lmrt.default_model import default_model_gguf

    src = gguf.GGUFReader(str(default_model_gguf()))
    s, rng = SHAPE, np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("llama-3.2-1b-shaped-random")
    w.add_context_length(8192)
    w.add_embedding_length(s["hidden"])
    w.add_block_count(s["layers"])
    w.add_feed_forward_length(s["intermediate"])
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(s["head_dim"])
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(s["vocab"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)
    # SmolLM2's tokenizer, padded with unused tokens to the vocab size
    tokens = [
        bytes(src.fields["tokenizer.ggml.tokens"].parts[i]).decode() for i in src.fields["tokenizer.ggml.tokens"].data
    ]
    types = [
        int(src.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in src.fields["tokenizer.ggml.token_type"].data
    ]
    merges = [
        bytes(src.fields["tokenizer.ggml.merges"].parts[i]).decode() for i in src.fields["tokenizer.ggml.merges"].data
    ]
    pad = s["vocab"] - len(tokens)
    tokens += [f"<|unused_{i}|>" for i in range(pad)]
    types += [int(gguf.TokenType.UNUSED)] * pad
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)

    def add(name, shape, qtype, scale=0.02):  # scale None: ones (the norms)
        if scale is None:
            data = np.ones(shape, np.float32)
        else:
            data = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float32)
        if qtype == gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, data)
        else:
            w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)

    H, I, D = s["hidden"], s["intermediate"], s["head_dim"]
    Q4, Q8, F32 = gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F32
    add("token_embd.weight", (s["vocab"], H), Q8)
    add("output_norm.weight", (H,), F32, None)
    for i in range(s["layers"]):
        print(f"  layer {i + 1}/{s['layers']}", end="\r", flush=True)
        add(f"blk.{i}.attn_norm.weight", (H,), F32, None)
        add(f"blk.{i}.ffn_norm.weight", (H,), F32, None)
        add(f"blk.{i}.attn_q.weight", (s["heads"] * D, H), Q4)
        add(f"blk.{i}.attn_k.weight", (s["kv_heads"] * D, H), Q4)
        add(f"blk.{i}.attn_v.weight", (s["kv_heads"] * D, H), Q4)
        add(f"blk.{i}.attn_output.weight", (H, s["heads"] * D), Q4)
        add(f"blk.{i}.ffn_gate.weight", (I, H), Q4)
        add(f"blk.{i}.ffn_up.weight", (I, H), Q4)
        add(f"blk.{i}.ffn_down.weight", (H, I), Q4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.rename(path)


class HfBf16:
    def __init__(self, gguf_path, threads):
        from bench_w4 import HfBf16Runner

        from lmrt.formats.gguf import convert_gguf_to_hf

        hf_dir = gguf_path.with_suffix(".hf")
        if not (hf_dir / "config.json").exists():
            print(f"writing {hf_dir} (the GGUF dequantized, fp16) ...", flush=True)
            convert_gguf_to_hf(gguf_path, hf_dir)
        self.r = HfBf16Runner(hf_dir, threads)
        self.bytes_per_token, self.desc = self.r.bytes_per_token, self.r.desc

    def decode(self, prompt, n):
        return self.r.decode(prompt, n)

    def batch(self, prompts, n):
        return self.r.batch(prompts, n)

    def close(self):
        self.r.close()


class LlamaCpp:
    def __init__(self, gguf_path, threads, n_ctx):
        import llama_cpp

        self.llm = llama_cpp.Llama(
            model_path=str(gguf_path),
            n_threads=threads,
            n_threads_batch=threads,
            n_ctx=n_ctx,
            n_batch=512,
            verbose=False,
        )
        self.bytes_per_token = gguf_decode_bytes(gguf_path)
        self.desc = f"llama-cpp-python {llama_cpp.__version__}, n_ctx {n_ctx}"

    def decode(self, prompt, n):
        times = []
        with Meter() as m:
            self.llm.reset()
            g = self.llm.generate(list(prompt), temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True)
            for _ in g:
                times.append(time.perf_counter())
                if len(times) == n:
                    break
            g.close()
        return sample((n - 1) / (times[-1] - times[0]), m)

    def close(self):
        del self.llm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, default=DEFAULT_GGUF, help="made here if missing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--long-reps", type=int, default=1, help="reps at the 2,048- and 4,096-token contexts")
    ap.add_argument("--new", type=int, default=32, help="new tokens per decode measurement")
    ap.add_argument("--only", default="lmrt-w4,lmrt-w4-int8,llama.cpp,hf-bf16")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not args.gguf.exists():
        print(f"writing {args.gguf} (random weights, Llama-3.2-1B's shapes) ...", flush=True)
        make_gguf(args.gguf)
    t0 = time.time()
    bw = dram_bandwidth(args.threads)
    print(f"DRAM read bandwidth: {bw:.1f} GB/s", flush=True)
    rng = np.random.default_rng(1)
    prompts = {c: rng.integers(300, 49000, c).tolist() for c in CONTEXTS}
    batch_prompts = [rng.integers(300, 49000, 64).tolist() for _ in range(16)]
    factories = {
        "lmrt-w4": lambda: LmrtRunner(args.gguf, args.threads, session_len=8192),
        "lmrt-w4-int8": lambda: LmrtRunner(args.gguf, args.threads, linear_precision="int8", session_len=8192),
        "llama.cpp": lambda: LlamaCpp(args.gguf, args.threads, max(CONTEXTS) + args.new + 8),
        "hf-bf16": lambda: HfBf16(args.gguf, args.threads),
    }
    chosen = [s for s in args.only.split(",") if s]
    results, descs, per_token = {}, {}, {}
    for name in chosen:
        r = factories[name]()
        descs[name], per_token[name] = r.desc, r.bytes_per_token
        res = results[name] = {}
        for c in CONTEXTS if name != "hf-bf16" else CONTEXTS[:1]:
            reps = args.long_reps if c >= 2048 else args.reps
            r.decode(prompts[c][:32], 4)  # warm-up
            res[c] = summarize([r.decode(prompts[c], args.new) for _ in range(reps)])
            print(
                f"{name} decode after {c}: {res[c]['tps']:.2f} tok/s {[round(x, 2) for x in res[c]['all']]}", flush=True
            )
        if hasattr(r, "batch"):
            r.batch(batch_prompts[:2], 4)
            res["batch16"] = summarize([r.batch(batch_prompts, args.new) for _ in range(args.reps)])
            print(f"{name} batch16: {res['batch16']['tps']:.1f} tok/s", flush=True)
        r.close()
    bw = max(bw, dram_bandwidth(args.threads))  # the machine is shared: the better of two measurements
    print(f"DRAM read bandwidth (best of the start and the end): {bw:.1f} GB/s", flush=True)
    model, cpus = machine_info()
    rows = []
    for name in chosen:
        res = results[name]
        bound = bw * 1e9 / per_token[name]
        cells = [
            f"{res[c]['tps']:.2f} ({res[c]['cpu_wall']:.2f} / {res[c]['others']:.2f})" if c in res else "—"
            for c in CONTEXTS
        ]
        b16 = f"{res['batch16']['tps']:.1f}" if "batch16" in res else "—"
        rows.append(
            f"| {name} | {per_token[name] / 1e6:.0f} | {' | '.join(cells)} | {bound:.1f} ({100 * res[32]['tps'] / bound:.0f}%) | {b16} |"
        )
    for peer in ("llama.cpp", "hf-bf16"):
        if peer not in results:
            continue
        ref = results[peer]
        for name in chosen:
            if name.startswith("lmrt"):
                ratio = " | ".join(
                    f"{results[name][c]['tps'] / ref[c]['tps']:.2f}x" if c in ref else "" for c in CONTEXTS
                )
                b16 = f"{results[name]['batch16']['tps'] / ref['batch16']['tps']:.2f}x" if "batch16" in ref else ""
                rows.append(f"| {name} / {peer} | | {ratio} | | {b16} |")
    section = results_log.section(
        "Llama-3.2-1B-shaped model (random weights, Q4_1 GGUF): lmrt vs llama.cpp, decode by context, bound, batch 16",
        "bench_1b.py",
        [
            f"{model}, {cpus} CPUs, {args.threads} threads, {platform.python_version()}; whole run {time.time() - t0:.0f} s",
            f"GGUF {args.gguf.name} ({args.gguf.stat().st_size / 1e6:.0f} MB): {SHAPE}",
            "; ".join(f"{k}: {v}" for k, v in descs.items()),
            f"DRAM read bandwidth (numpy reductions over 256 MiB, 1 and {args.threads} threads, the best at the start "
            f"and at the end of the run): {bw:.1f} GB/s; bound = that / MB read per decoded token",
            f"decode: {args.new} new tokens after the context, medians of {args.reps} (2,048 and 4,096: of "
            f"{args.long_reps}); cells: tokens/s (process CPU / wall / cores other processes used meanwhile); batch16: 16 x 64-token prompts, {args.new} new "
            f"each, submitted at once, generated tokens / wall, median of {args.reps}",
        ],
        ["system", "MB/token", *[f"decode after {c:,}" for c in CONTEXTS], "bound at 32 (% reached)", "batch 16"],
        rows,
        extra=[
            f"- per-rep tokens/s: {name} "
            + "; ".join(f"{c}: {[round(x, 2) for x in v['all']]}" for c, v in results[name].items())
            for name in chosen
        ],
    )
    print(section)
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
