"""What a KV cache dtype or a linear precision costs in quality, on the default model (issues 12, 14): perplexity on
/usr/share/common-licenses/GPL-3 (disjoint 512-token windows, the same windows in every row, as the
figures in shared/README.md were measured) and the mean KL divergence of each next-token distribution
against the fp32-KV run; plus greedy text on 8 chat prompts x 64 new tokens against fp32 KV, with the
gap between the top two logits where a row first diverges (a near-tie, or not).

Every row runs without bf16 tiles (prefill_precision="fp32"), so only the KV cache dtype and the linear precision
(EngineConfig.linear_precision: exact fp32, or int8 activations into the 4-bit products) differ between rows. A row
is KV[:LINEAR] (LINEAR fp32 when left out); the first row is the reference. Appends a section to RESULTS.md.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/kv_quality.py \
        [--kv float32,bfloat16,int8,int4-per-token,int4,k8v4]   (e.g. --kv float32,float32:int8,int8:int8)
"""

from __future__ import annotations

import argparse

import numpy as np
import results_log

import lmrt

PROMPTS = results_log.CHAT_PROMPTS
MAX_NEW = 64


def windows(tok, window=512):
    text = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False)
    return [w for w in (ids[i : i + window] for i in range(0, len(ids), window)) if len(w) >= 2]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def config(row: str) -> lmrt.EngineConfig:
    kv, _, linear = row.partition(":")
    return lmrt.EngineConfig(
        kv_cache_dtype=kv,
        linear_precision=linear or "fp32",
        prefill_precision="fp32",
        max_num_batched_tokens=512,
        max_batch_size=8,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--kv",
        default="float32,bfloat16,int8,int4-per-token,int4,k8v4",
        help="rows KV[:LINEAR] (KV cache dtype, linear precision), the first is the reference",
    )
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    kinds = args.kv.split(",")
    rows, ref_logp, ref_greedy = [], None, None
    for kv in kinds:
        with lmrt.pipeline(None, config(kv)) as pipe:
            ws = windows(pipe.tokenizer)
            nll, kl, n = 0.0, 0.0, 0
            logps = []
            for i, w in enumerate(ws):
                logp = log_softmax(pipe.get_logits(w)[:-1])  # [len - 1, V]: predicts w[1:]
                nll -= logp[np.arange(len(w) - 1), w[1:]].sum()
                n += len(w) - 1
                if ref_logp is None:
                    logps.append(logp.astype(np.float32))
                else:
                    r = ref_logp[i].astype(np.float64)
                    kl += (np.exp(r) * (r - logp)).sum()
            ppl = float(np.exp(nll / n))
            if ref_logp is None:
                ref_logp = logps
            chats = [[{"role": "user", "content": p}] for p in PROMPTS]
            outs = pipe(chats, lmrt.GenerationConfig(max_new_tokens=MAX_NEW))  # greedy, one batch
            greedy = [o.token_ids for o in outs]
            gaps = []
            if ref_greedy is not None:
                for chat, a, b in zip(chats, greedy, ref_greedy):
                    if a == b:
                        continue
                    j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    with lmrt.pipeline(None, config(kinds[0])) as ref_pipe:  # the reference's logits there
                        logits = ref_pipe.get_logits(ref_pipe.encode_prompt(chat) + b[:j])[-1]
                    top2 = np.sort(logits)[-2:]
                    gaps.append(f"token {j}: top-2 gap {top2[1] - top2[0]:.3g}")
            else:
                ref_greedy = greedy
            same = sum(a == b for a, b in zip(greedy, ref_greedy))
            kv_bytes = pipe.info()["kv_bytes_per_token"]
            row = (
                f"| {kv} | {kv_bytes:.0f} | {ppl:.4f} | {100 * (ppl / rows[0][1] - 1) if rows else 0:+.2f}% | "
                f"{kl / n if kinds[0] != kv else 0:.2e} | {same}/8 | {'; '.join(gaps) or '—'} |"
            )
            rows.append((kv, ppl, row))
            print(row, flush=True)
    section = results_log.section(
        "KV cache dtypes and linear precision: quality on the default model",
        "kv_quality.py",
        [
            f"lmrt {lmrt.__version__}, default model at 4 bits, no bf16 tiles in any row (only the KV cache dtype and "
            "the linear precision, KV:LINEAR, differ; LINEAR fp32 where not shown)",
            f"perplexity: GPL-3 in {len(ws)} disjoint 512-token windows; KL: mean over every predicted position of "
            f"KL(p_{kinds[0]} || p_row); greedy: 8 chat prompts x {MAX_NEW} new tokens, identical to the {kinds[0]} "
            "row's",
        ],
        [
            "KV cache[:linear]",
            "KV bytes/token",
            "perplexity",
            "vs first row",
            "mean KL",
            "greedy equal",
            "first divergence (the reference's top-2 logit gap there)",
        ],
        [r[2] for r in rows],
    )
    if not args.no_write:
        results_log.append(section)


if __name__ == "__main__":
    main()
