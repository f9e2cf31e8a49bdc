"""What the granularity of int8 activation scales costs in quality (issue 14): the default model in HF transformers at
fp32, every nn.Linear's input fake-quantized (x -> round(x / d) * d, d = max|x| / 127 over each run of N inputs,
or over the whole row), against the same model unquantized: mean KL divergence of every next-token distribution and
perplexity on /usr/share/common-licenses/GPL-3 (disjoint 512-token windows). The weights stay fp32, so each row
isolates what the activations' scales cost; lmrt's int8 mode is the "run32 | run32" row (linears | output matrix).

A coarser scale would let lmrt's 4-bit x int8 kernel take the activation scale out of its per-run epilogue (one
multiply fewer per run of 32 inputs, per row and 16 outputs); this measures whether the quality allows it. The
"run32 but ..." rows leave one kind of linear input unquantized (or quantized otherwise), to show where int8 mode's
divergence comes from; "asym32" is a scale and an integer zero point per run (codes 0..255), what int8 mode would
have to pay for in its kernel (one more integer product a run) to get closer to the 0.1% a default may cost.
Needs torch and transformers. Appends a section to RESULTS.md.

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/act_scale_quality.py [--windows 8] [--no-write]
"""

from __future__ import annotations

import argparse

import numpy as np
import results_log

# (label, how the linears' inputs are quantized: kind -> mode). Kinds: "qkv" (q/k/v_proj's input, the attention
# norm's output), "o" (o_proj), "gu" (gate/up_proj, the MLP norm's output), "down" (down_proj: silu(gate) * up) and
# "head" (the output matrix). Modes: "runN" a scale per run of N inputs, "asym32" a scale and a zero point per run of
# 32, "row" one scale per row, "row16" one per row at 16 bits (int16, as the AMX host's output matrix takes them),
# None unquantized.
KINDS = ("qkv", "o", "gu", "down", "head")


def _modes(lin, head, **over):
    m = {k: lin for k in KINDS[:-1]} | {"head": head}
    return m | over


ROWS = [
    ("run32 | fp32", _modes("run32", None)),
    ("run32 | run32", _modes("run32", "run32")),
    ("run64 | run32", _modes("run64", "run32")),
    ("row | fp32", _modes("row", None)),
    ("row | run32", _modes("row", "run32")),
    ("run32 | row", _modes("run32", "row")),
    ("run32 | row16", _modes("run32", "row16")),
    *[(f"run32 but {k} fp32 | run32", _modes("run32", "run32", **{k: None})) for k in KINDS[:-1]],
    ("run32 but down row16 | run32", _modes("run32", "run32", down="row16")),
    ("asym32 | run32", _modes("asym32", "run32")),
    ("asym32 | asym32", _modes("asym32", "asym32")),
]


def _kind(name):
    if name == "lm_head":
        return "head"
    for kind, parts in (("qkv", ("q_proj", "k_proj", "v_proj")), ("o", ("o_proj",)), ("gu", ("gate_proj", "up_proj"))):
        if any(p in name for p in parts):
            return kind
    if "down_proj" in name:
        return "down"
    raise ValueError(f"unexpected linear {name}")


def fake_quant(x, mode):
    import torch

    if mode is None:
        return x
    if mode == "asym32":
        xr = x.reshape(*x.shape[:-1], x.shape[-1] // 32, 32)
        lo, hi = xr.amin(-1, keepdim=True), xr.amax(-1, keepdim=True)
        d = (hi - lo) / 255
        d = torch.where(d > 0, d, 1)
        z = torch.round(-lo / d)
        return ((torch.clamp(torch.round(xr / d) + z, 0, 255) - z) * d).reshape(x.shape)
    if mode.startswith("run"):
        n = int(mode[3:])
        xr = x.reshape(*x.shape[:-1], x.shape[-1] // n, n)
        d = xr.abs().amax(-1, keepdim=True) / 127
        return (torch.round(xr / torch.where(d > 0, d, 1)) * d).reshape(x.shape)
    levels = {"row": 127, "row16": 32767}[mode]
    d = x.abs().amax(-1, keepdim=True) / levels
    return torch.round(x / torch.where(d > 0, d, 1)) * d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=8, help="512-token windows of GPL-3")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmrt.default_model import default_model_path

    torch.set_num_threads(2)
    path = default_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = tok.encode(open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read(), add_special_tokens=False)
    wins = [w for w in (ids[i : i + 512] for i in range(0, len(ids), 512)) if len(w) >= 2][: args.windows]

    mode = {k: None for k in KINDS}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            key = _kind(name)
            mod.register_forward_pre_hook(lambda m, a, key=key: (fake_quant(a[0], mode[key]),))

    def logprobs():
        with torch.no_grad():
            return [torch.log_softmax(model(torch.tensor([w])).logits[0].double(), -1) for w in wins]

    def nll(lps):
        return float(
            np.mean([-p[:-1].gather(-1, torch.tensor(w[1:])[:, None]).mean().item() for p, w in zip(lps, wins)])
        )

    ref = logprobs()
    ref_nll = nll(ref)
    rows = [f"| unquantized | — | — | {np.exp(ref_nll):.4f} | +0.00% |"]
    for label, modes in ROWS:
        mode.update(modes)
        lps = logprobs()
        kl = float(np.mean([(r.exp() * (r - p)).sum(-1).mean().item() for r, p in zip(ref, lps)]))
        n = nll(lps)
        rows.append(f"| {label} | {kl:.3e} | {np.exp(n):.4f} | {(np.exp(n - ref_nll) - 1) * 100:+.2f}% |")
        print(rows[-1], flush=True)
    text = results_log.section(
        "int8 activation scales: what each granularity costs (HF fp32 model, fake-quantized linear inputs)",
        "act_scale_quality.py",
        [
            f"model: {path} in transformers {__import__('transformers').__version__} at fp32, torch {torch.__version__}",
            f"{len(wins)} GPL-3 windows of 512 tokens; KL: mean over every position of KL(p_unquantized || p_row)",
        ],
        ["linears' inputs", "output matrix's input", "mean KL", "perplexity", "vs unquantized"],
        rows,
    )
    print(text)
    if not args.no_write:
        results_log.append(text)


if __name__ == "__main__":
    main()
