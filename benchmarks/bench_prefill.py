"""Prefill (and decode) of lmrt vs HF transformers on a model of the default model's shapes, random weights.

For machines without the default model (the lent GPU host's many-core CPU, where HF bf16 runs on AMX
through oneDNN): SmolLM2-135M's config (30 layers, 576 hidden, 1536 intermediate, 9/3 heads, 49152
vocab, tied) is instantiated by transformers with random weights (std 0.02), saved in fp32, and
round-to-nearest quantised at group 64 into lmrt's own 4-bit form (speed does not depend on the values).
Same random token ids for every system, same threads; medians of --reps after a warm-up; CPU/wall beside.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_prefill.py [--threads N] [--reps 5] [--len 512]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_engine import HfRunner, LmrtRunner, machine_info  # noqa: E402

SMOLLM2_135M = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
    tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
)  # fmt: skip


def rtn_w4(w: np.ndarray, g: int):
    """Round-to-nearest 4-bit with a float min per group: [N, K] -> the core's (codes, scales, mins)."""
    from lmrt.formats.awq import pack_core_codes

    N, K = w.shape
    groups = w.reshape(N, K // g, g)
    lo, hi = groups.min(axis=2), groups.max(axis=2)
    scales = np.maximum((hi - lo) / 15, 1e-8).astype(np.float32)
    q = np.clip(np.round((groups - lo[..., None]) / scales[..., None]), 0, 15).astype(np.uint8).reshape(N, K)
    return pack_core_codes(q), scales, lo.astype(np.float32)


def make_models(out: Path, g: int = 64) -> tuple[Path, Path]:
    import torch
    import transformers
    from safetensors.numpy import load_file

    from lmrt.formats.lmrt_w4 import save_lmrt_w4

    dense, w4 = out / "dense", out / "w4"
    if not (dense / "config.json").is_file():
        torch.manual_seed(0)
        config = transformers.LlamaConfig(**SMOLLM2_135M)
        model = transformers.LlamaForCausalLM(config)
        model.save_pretrained(dense, safe_serialization=True)
    if not (w4 / "config.json").is_file():
        tensors = {k: v.astype(np.float32) for k, v in load_file(dense / "model.safetensors").items()}
        linears = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        parts = {k: rtn_w4(v, g) if k.removesuffix(".weight").endswith(linears) else v for k, v in tensors.items()}
        save_lmrt_w4(w4, json.loads((dense / "config.json").read_text()), parts)
    return dense, w4


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="threads for every system (default: physical cores)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--len", type=int, default=512, help="prompt tokens")
    ap.add_argument("--decode", type=int, default=64, help="new tokens for the batch-1 decode figure (0: none)")
    ap.add_argument("--out", default="/tmp/lmrt-synth-135m", help="where the random models are written (reused)")
    ap.add_argument(
        "--only",
        default="lmrt-w4,lmrt-w4-bf16,lmrt-fp32,hf-bf16,hf-fp32",
        help="systems; the -bf16 one (prefill_precision='bf16') runs only where the CPU has a bf16 "
        "tile unit (AMX-BF16 or AVX512-BF16)",
    )
    args = ap.parse_args(argv)

    import lmrt

    threads = args.threads or lmrt.system_info()["physical_cores"]
    dense, w4 = make_models(Path(args.out))
    rng = np.random.RandomState(0)
    prompts = [rng.randint(100, 49000, size=args.len).tolist() for _ in range(args.reps + 1)]
    systems = {
        "lmrt-w4": lambda: LmrtRunner(w4, "float32", threads),  # exact fp32 prefill (LmrtRunner's default)
        "lmrt-w4-bf16": lambda: LmrtRunner(w4, "float32", threads, prefill_precision="bf16"),
        "lmrt-fp32": lambda: LmrtRunner(dense, "float32", threads),
        "hf-bf16": lambda: HfRunner(dense, "bfloat16", threads),
        "hf-fp32": lambda: HfRunner(dense, "float32", threads),
    }
    import torch

    torch.set_flush_denormal(True)  # random weights: spare HF any denormal slow path (lmrt's kernels need none)
    rows = {}
    for name in [s for s in args.only.split(",") if s]:
        if name.endswith("-bf16") and name.startswith("lmrt") and not lmrt.system_info()["tile_unit"]:
            print(f"{name:10s} skipped: this CPU has no bf16 tile unit (AMX-BF16 or AVX512-BF16)", flush=True)
            continue
        r = systems[name]()
        r.prefill(prompts[0])
        got = [r.prefill(p) for p in prompts[1:]]
        res = dict(prefill=statistics.median(x[0] for x in got), pcw=sum(x[2] for x in got) / sum(x[1] for x in got))
        if args.decode:
            r.decode(prompts[0][:32], 8)
            got = [r.decode(p[:32], args.decode) for p in prompts[1:4]]
            res.update(decode=statistics.median(x[0] for x in got), dcw=sum(x[2] for x in got) / sum(x[1] for x in got))
        rows[name] = res
        print(
            f"{name:10s} prefill {res['prefill']:8.1f} tok/s (cpu/wall {res['pcw']:.2f})"
            + (f"  decode {res['decode']:7.1f} tok/s (cpu/wall {res['dcw']:.2f})" if args.decode else ""),
            flush=True,
        )
        r.close()
    cpu_model, ncpu = machine_info()
    print(f"\n{cpu_model}, {ncpu} CPUs, {threads} threads, {platform.platform()}; lmrt {lmrt.system_info()}")
    print(
        f"command: HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/bench_prefill.py {' '.join(argv or sys.argv[1:])}"
    )
    print(f"\n| system | prefill {args.len} tok/s (cpu/wall) | decode b=1 tok/s (cpu/wall) |\n|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['prefill']:.1f} ({r['pcw']:.2f}) | "
            + (f"{r['decode']:.1f} ({r['dcw']:.2f}) |" if args.decode else "— |")
        )
    for ours in ("lmrt-w4", "lmrt-w4-bf16", "lmrt-fp32"):
        if ours in rows and "hf-bf16" in rows:
            print(
                f"| {ours} / hf-bf16 | {rows[ours]['prefill'] / rows['hf-bf16']['prefill']:.2f}x | "
                + (f"{rows[ours]['decode'] / rows['hf-bf16']['decode']:.2f}x |" if args.decode else "|")
            )


if __name__ == "__main__":
    main()
