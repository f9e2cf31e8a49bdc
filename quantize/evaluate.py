"""Perplexity with HF transformers, on fp checkpoints and on AutoAWQ gemm checkpoints dequantised to float32.

Windows of 512 tokens, stride 512 (non-overlapping); every token but each window's first is
predicted; perplexity = exp(mean NLL over those tokens). shared/README.md measured 22.05 this way
for the default model in fp32 on GPL-3.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from lmrt.formats.awq import dequantize_awq

DEFAULT_WINDOW = 512


def load_model(model_dir: Path, dtype=torch.float32) -> nn.Module:
    """A HF causal LM in ``dtype``, with sdpa attention (pre_quant relies on its causal mask for mask=None)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").eval()


def load_awq_dequantized(model_dir: Path, dtype=torch.float32) -> nn.Module:
    """An AutoAWQ gemm checkpoint (as ``writer`` makes) as a plain HF model with the dequantised weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = Path(model_dir)
    raw = json.loads((model_dir / "config.json").read_text())
    qconfig = raw.get("quantization_config") or {}
    if qconfig.get("quant_method") != "awq" or qconfig.get("version") != "gemm" or qconfig.get("bits") != 4:
        raise ValueError(f"{model_dir} is not a 4-bit AutoAWQ gemm checkpoint: {qconfig}")
    group_size = qconfig["group_size"]
    config = AutoConfig.from_pretrained(model_dir)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    state = {}
    tensors = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(path))
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name[: -len(".qweight")]
            packed = (tensor, tensors[f"{prefix}.qzeros"], tensors[f"{prefix}.scales"])
            w = dequantize_awq(*(t.numpy() for t in packed), group_size)  # [in, out], AutoAWQ's orientation
            state[f"{prefix}.weight"] = torch.from_numpy(w.T.copy())
        elif not name.endswith((".qzeros", ".scales")):
            state[name] = tensor
    missing, unexpected = model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ValueError(f"{model_dir}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def perplexity(model: nn.Module, ids: torch.Tensor, window: int = DEFAULT_WINDOW, desc: str = "perplexity") -> float:
    """exp(mean NLL) of ``ids`` [T] over non-overlapping windows of ``window`` tokens."""
    total_nll, total_tokens = 0.0, 0
    starts = range(0, len(ids) - 1, window)
    with torch.no_grad():
        for start in tqdm(starts, desc=desc, unit="window", leave=False):
            chunk = ids[start : start + window]
            if len(chunk) < 2:
                continue
            logits = model(chunk[None]).logits[0, :-1].float()
            total_nll += float(torch.nn.functional.cross_entropy(logits, chunk[1:], reduction="sum"))
            total_tokens += len(chunk) - 1
    return math.exp(total_nll / total_tokens)


def text_ids(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer(text, verbose=False)["input_ids"], dtype=torch.int64)
