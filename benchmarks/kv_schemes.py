"""Which KV quantization scheme to build, chosen by measurement before building it: HF transformers fp32 on the
default model (its dense form) with K (after RoPE) and V fake-quantized per token and KV head by each candidate
scheme, the rest exact. Perplexity on GPL-3 (disjoint 512-token windows), mean KL against the unquantized run,
and greedy text on the 8 chat prompts of kv_quality.py against the unquantized run.

Schemes (b bits; a row = one token of one KV head):
  none          no quantization (the reference)
  tm<b>         TurboMind's: scale = (max - min) / (2^b - 1), zero = min (float), code = round((x - min) / scale)
  zp<b>         lmrt's cache format: the range widened to include 0, scale rounded up to fp16, an integer zero point
  zp<b>-rot     the same after a fixed orthonormal Hadamard rotation of each K row (q rotated alike, so q.k is
                unchanged): outlier channels are spread over the row before it is quantized (K only)
  k8v4          K as zp8, V as zp4
  k8v4-rot      K as zp8-rot, V as zp4
  sg<b>         llama.cpp's q4_0 / q8_0: symmetric, one fp16 scale per 32 dims (int4: 36 bytes a row at head_dim 64)
  kc4           KIVI's split: K per channel over each 64-token block (the partial last block kept exact), V per
                token (zp4); 35 bytes a row at head_dim 64 with 3 bytes of parameters per channel per block
  *-rotkv       V rotated too (the attention output rotated back)
  *-sm          K divided per channel by a static factor before it is quantized (q multiplied alike, so q.k is
                unchanged; QServe's SmoothAttention at alpha 1): the factor is the channel's largest |K| after RoPE
                on a calibration text (Apache-2.0's first 1,024 tokens, never GPL-3), per layer and KV head
  *-smpair      the same with one factor per RoPE pair (the larger of the two), which would let the factors fold
                into the q/k projections and hold at any position (a rotation moves magnitude within a pair)

    HF_HUB_OFFLINE=1 PYTHONPATH=src:. python benchmarks/kv_schemes.py [--schemes none,tm8,zp8,...] [--windows 15]
"""

from __future__ import annotations

import argparse
import math

import results_log
import torch
import transformers
from transformers.models.llama import modeling_llama

from lmrt.default_model import default_model_path
from lmrt.tokenizer import Tokenizer

PROMPTS = results_log.CHAT_PROMPTS


def hadamard(n: int) -> torch.Tensor:
    h = torch.ones(1, 1)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def fake_quant(x: torch.Tensor, bits: int, kind: str) -> torch.Tensor:
    """x [..., hd] quantized per row (sg: per group of 32 dims) and dequantised."""
    qmax = 2**bits - 1
    if kind == "sg":  # llama.cpp's q4_0 / q8_0: symmetric, one fp16 scale per 32 dims
        g = x.reshape(*x.shape[:-1], -1, 32)
        idx = g.abs().argmax(-1, keepdim=True)
        signed_max = torch.gather(g, -1, idx)
        half = 2 ** (bits - 1)
        d = (signed_max / -half).to(torch.float16).to(torch.float32)
        d = torch.where(d != 0, d, torch.ones_like(d))
        q = (torch.round(g / d) + half).clamp(0, qmax)
        return ((q - half) * d).reshape(x.shape)
    if kind == "kc":  # KIVI: keys per channel over each block of 64 tokens; the last, partial block unquantized
        t = x.shape[-2]
        full = t // 64 * 64
        if full == 0:
            return x
        blocks = x[..., :full, :].reshape(*x.shape[:-2], full // 64, 64, x.shape[-1])  # [..., nb, 64 tokens, hd]
        mn = blocks.amin(-2, keepdim=True).clamp(max=0)
        mx = blocks.amax(-2, keepdim=True).clamp(min=0)
        s = ((mx - mn) / qmax).to(torch.float16).to(torch.float32)
        s = torch.where(s > 0, s, torch.ones_like(s))
        z = torch.round(-mn / s).clamp(0, qmax)
        q = (torch.round(blocks / s) + z).clamp(0, qmax).sub(z) * s
        return torch.cat([q.reshape(*x.shape[:-2], full, x.shape[-1]), x[..., full:, :]], -2)
    if kind == "tm":
        mn, mx = x.amin(-1, keepdim=True), x.amax(-1, keepdim=True)
        s = ((mx - mn) / qmax).clamp(min=1e-12)
        return torch.round((x - mn) / s).clamp(0, qmax) * s + mn
    mn = x.amin(-1, keepdim=True).clamp(max=0)
    mx = x.amax(-1, keepdim=True).clamp(min=0)
    s = ((mx - mn) / qmax).to(torch.float16).to(torch.float32)  # nearest; the cache rounds up (not material here)
    s = torch.where(s > 0, s, torch.ones_like(s))
    z = torch.round(-mn / s).clamp(0, qmax)
    return (torch.round(x / s) + z).clamp(0, qmax).sub(z) * s


def scheme_parts(name: str):
    """(K bits, K kind, K rotated, V bits, V kind, V rotated), or None for no quantization; a -sm/-smpair suffix
    is read by install()."""
    if name == "none":
        return None
    name = name.removesuffix("-smpair").removesuffix("-sm")
    rot_v = name.endswith("-rotkv")
    rot = rot_v or name.endswith("-rot")
    base = name.removesuffix("-rotkv").removesuffix("-rot")
    if base == "k8v4":
        return 8, "zp", rot, 4, "zp", rot_v
    if base == "kc4":  # K per channel (KIVI), V per token
        return 4, "kc", rot, 4, "zp", rot_v
    kind, bits = base[:2], int(base[2:])
    return bits, kind, rot, bits, kind, rot_v


LAYER = [0]  # the layer whose attention runs now (set by a pre-hook on each self_attn)


def k_channel_max(model, tok, hd: int) -> torch.Tensor:
    """[layers, kv heads, hd]: the largest |K| after RoPE per channel on the calibration text."""
    cfg = model.config
    kmax = torch.zeros(cfg.num_hidden_layers, cfg.num_key_value_heads, hd)
    original = modeling_llama.apply_rotary_pos_emb

    def record(q, k, cos, sin, *args, **kwargs):
        q, k = original(q, k, cos, sin, *args, **kwargs)
        kmax[LAYER[0]] = torch.maximum(kmax[LAYER[0]], k.abs().amax(dim=(0, 2)))
        return q, k

    modeling_llama.apply_rotary_pos_emb = record
    text = open("/usr/share/common-licenses/Apache-2.0", encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False)[:1024]
    with torch.no_grad():
        for i in range(0, len(ids), 512):
            model(torch.tensor([ids[i : i + 512]]))
    modeling_llama.apply_rotary_pos_emb = original
    return kmax.clamp(min=1e-6)


def install(model, name: str, hd: int, kmax: torch.Tensor | None = None):
    """Fake-quantizes K after RoPE (patching apply_rotary_pos_emb) and V (a hook on v_proj)."""
    parts = scheme_parts(name)
    smooth = None
    if name.endswith("-smpair"):
        half = torch.maximum(kmax[..., : hd // 2], kmax[..., hd // 2 :])
        smooth = torch.cat([half, half], -1)
    elif name.endswith("-sm"):
        smooth = kmax
    original = (
        modeling_llama.apply_rotary_pos_emb.__wrapped__
        if hasattr(modeling_llama.apply_rotary_pos_emb, "__wrapped__")
        else modeling_llama.apply_rotary_pos_emb
    )
    handles = []
    if parts is None:
        modeling_llama.apply_rotary_pos_emb = original
        return handles
    kb, kk, rot, vb, vk, rot_v = parts
    H = hadamard(hd)

    def apply(q, k, cos, sin, *args, **kwargs):
        q, k = original(q, k, cos, sin, *args, **kwargs)
        if smooth is not None:  # q.k unchanged: quantize k / s, and use (k / s) * s
            s = smooth[LAYER[0]][None, :, None, :]
            return q, fake_quant(k / s, kb, kk) * s
        if rot:
            q, k = q @ H, k @ H  # orthonormal: q.k unchanged
        return q, fake_quant(k, kb, kk)

    apply.__wrapped__ = original
    modeling_llama.apply_rotary_pos_emb = apply

    def hook(module, inputs, out):
        shape = out.shape
        v = out.view(*shape[:-1], -1, hd)
        if rot_v:  # rotate, quantize, rotate back: what a kernel rotating V rows and its output computes
            return (fake_quant(v @ H, vb, vk) @ H.T).reshape(shape)
        return fake_quant(v, vb, vk).view(shape)

    for layer in model.model.layers:
        handles.append(layer.self_attn.v_proj.register_forward_hook(hook))
    return handles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--schemes", default="none,tm8,zp8,zp8-rot,tm4,zp4,zp4-rot,k8v4,k8v4-rot")
    ap.add_argument("--windows", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(2)
    path = default_model_path()
    tok = Tokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    hd = model.config.hidden_size // model.config.num_attention_heads
    for i, layer in enumerate(model.model.layers):
        layer.self_attn.register_forward_pre_hook(lambda module, inputs, i=i: LAYER.__setitem__(0, i))
    kmax = k_channel_max(model, tok, hd) if "-sm" in args.schemes else None
    text = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False)
    windows = [ids[i : i + 512] for i in range(0, len(ids), 512)][: args.windows]
    chats = [
        tok.encode(
            tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True),
            add_special_tokens=False,
        )
        for p in PROMPTS
    ]
    ref_logp, ref_greedy, ref_ppl = None, None, None
    print("| scheme | perplexity | vs none | mean KL | greedy equal (of 8) |")
    print("|---|---|---|---|---|")
    for name in args.schemes.split(","):
        handles = install(model, name, hd, kmax)
        nll, n, kl, logps = 0.0, 0, 0.0, []
        with torch.no_grad():
            for i, w in enumerate(windows):
                logp = torch.log_softmax(model(torch.tensor([w])).logits[0, :-1].double(), -1)
                nll -= logp[torch.arange(len(w) - 1), torch.tensor(w[1:])].sum().item()
                n += len(w) - 1
                if ref_logp is None:
                    logps.append(logp)
                else:
                    kl += (ref_logp[i].exp() * (ref_logp[i] - logp)).sum().item()
            greedy = [
                model.generate(torch.tensor([c]), max_new_tokens=64, do_sample=False, repetition_penalty=1.0)[
                    0, len(c) :
                ].tolist()
                for c in chats
            ]
        for h in handles:
            h.remove()
        ppl = math.exp(nll / n)
        if ref_logp is None:
            ref_logp, ref_greedy, ref_ppl = logps, greedy, ppl
        same = sum(a == b for a, b in zip(greedy, ref_greedy))
        print(f"| {name} | {ppl:.4f} | {100 * (ppl / ref_ppl - 1):+.2f}% | {kl / n:.2e} | {same} |", flush=True)
    install(model, "none", hd)


if __name__ == "__main__":
    main()
