"""Llama-family GGUF files (llama.cpp's format), on their own: the metadata as a HF config, the tensors by
HF name in HF's rotary row order, Q4_0 / Q4_1 matrices imported losslessly onto the core's 4-bit layout
(below), the tokenizer and chat template converted once (with transformers) into a cache directory, and
the sampling settings a GGUF recommends (``general.sampling.*``) as a generation_config.json.

GGUF Q4_0 / Q4_1 tensors onto the core's 4-bit layout, losslessly (NumPy only).

A GGUF matrix of N rows (outputs) and K columns (inputs) is stored row by row in
blocks of 32 inputs:

    Q4_0  18 bytes: d float16, qs[16]          w = (q - 8) * d   -> scale d, min -8 d
    Q4_1  20 bytes: d float16, m float16, qs[16]  w = q * d + m  -> scale d, min m

and byte j of qs holds input j in its low nibble and input j + 16 in its high nibble:
exactly the core's order within a run of 32, so the code bytes are copied as they are,
with group size 32.

Exactness (core_to_dense = code * scale + min in float32, vs gguf.quants.dequantize):
  Q4_0: d, 8 d, q d and (q - 8) d all have at most 15 significant bits, so every one is
        exact in float32 and code * d + (-8 d) == (q - 8) * d exactly (mul-add or FMA).
  Q4_1: q * d is exact, q * d + m is rounded once to float32 (the same operations and
        order as gguf.quants.dequantize, so equal bit for bit); against the exact real
        value the error is at most half an ulp of the result (relative <= 2^-24). A core
        that fuses the multiply-add (FMA) gets the same bound.

Other tensor types (F32, F16, Q8_0, K-quants, ...) are not 4-bit-with-one-(scale, min)-per-32
and are dequantised to float32 by the ``gguf`` package (``import_tensor``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

from .. import env
from ..model_config import ModelSpec
from . import W4Part, write_atomically

GROUP_SIZE = 32  # GGUF Q4_0 / Q4_1 blocks

_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20}

# GGUF tensor name (per layer: after "blk.{i}.") -> HF LlamaForCausalLM name
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
# GGUF general.sampling.* key (llama.cpp's convention) -> generation_config.json key
_GGUF_SAMPLING = {
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "penalty_repeat": "repetition_penalty",
}


class GgufFormatError(ValueError):
    """A GGUF tensor's bytes do not match its type and shape."""


def open_gguf(path: Path):
    """A GGUFReader of ``path``, with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ImportError(f"reading {path.name} needs the gguf package: pip install 'lmrt[convert]'") from None
    try:
        return GGUFReader(path)
    except (ValueError, KeyError, IndexError) as e:
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e


def read_gguf(path: str | Path, reader=None, progress=None) -> tuple[dict, dict[str, W4Part | np.ndarray]]:
    """A Llama GGUF file as (HF config dict, tensors by HF name): a Q4_0 / Q4_1 matrix as its exact
    (codes, scales, mins) in the core's layout, anything else dequantised to float32; q/k rows in
    HF's rotary order. Needs the ``gguf`` package. ``reader``: a GGUFReader of ``path`` already open;
    ``progress(tensors)``: wraps the tensor loop (a progress bar)."""
    path = Path(path)
    reader = reader or open_gguf(path)
    config = hf_config(reader)
    spec = ModelSpec.from_hf_config(config)
    parts: dict[str, W4Part | np.ndarray] = {}
    for tensor in (progress or iter)(reader.tensors):
        name = hf_tensor_name(tensor.name)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: [out, in] or [n]
        part = import_tensor(tensor.data, tensor.tensor_type.name, shape)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = spec.num_heads if name.endswith("q_proj.weight") else spec.num_kv_heads
            part = (
                tuple(unpermute_rope_rows(a, heads) for a in part)
                if isinstance(part, tuple)
                else (unpermute_rope_rows(part, heads))
            )
        parts[name] = part
    return config, parts


def hf_config(reader) -> dict:
    """LlamaConfig fields from the GGUF metadata."""

    def field(key: str, default=None):
        return reader.fields[key].contents() if key in reader.fields else default

    architecture = field("general.architecture")
    if architecture != "llama":
        raise ValueError(f"GGUF architecture {architecture!r} is not supported here; only 'llama' converts")
    if field("llama.rope.scaling.type", "none") != "none" or any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ValueError("GGUF RoPE scaling is not supported by the converter")
    hidden_size = field("llama.embedding_length")
    num_heads = field("llama.attention.head_count")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": field("llama.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": hidden_size,
        "intermediate_size": field("llama.feed_forward_length"),
        "num_hidden_layers": field("llama.block_count"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": field("llama.attention.head_count_kv", num_heads),
        "head_dim": field("llama.rope.dimension_count") or hidden_size // num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": field("llama.context_length"),
        "rms_norm_eps": shortest_float32(field("llama.attention.layer_norm_rms_epsilon")),
        # Both spellings, so that transformers 4.x and 5.x read the same theta.
        "rope_theta": shortest_float32(field("llama.rope.freq_base", 10000.0)),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        "torch_dtype": "float16",
    }
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": config["rope_theta"]}
    for gguf_key, key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("padding_token_id", "pad_token_id"),
    ):
        value = field(f"tokenizer.ggml.{gguf_key}")
        if value is not None:
            config[key] = int(value)
    return config


def generation_config(reader, config: dict) -> dict:
    """generation_config.json for a GGUF: its special token ids, and the sampling settings its
    ``general.sampling.*`` metadata recommends, if any."""
    out = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    sampling = {
        key: reader.fields[f"general.sampling.{g}"].contents()
        for g, key in _GGUF_SAMPLING.items()
        if f"general.sampling.{g}" in reader.fields
    }
    if sampling:
        out.update(do_sample=True, **{k: float(v) if k != "top_k" else int(v) for k, v in sampling.items()})
    return out


def shortest_float32(value: float) -> float:
    """GGUF stores float32: 9.999999747e-06 -> 1e-05, the decimal the model's config.json had."""
    return float(str(np.float32(value)))


def hf_tensor_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    prefix, _, rest = gguf_name.partition(".")
    layer, _, suffix = rest.partition(".")
    if prefix == "blk" and layer.isdigit() and suffix in _LAYER_TENSORS:
        return f"model.layers.{layer}.{_LAYER_TENSORS[suffix]}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no place in a LlamaForCausalLM")


def unpermute_rope_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (rotary pairs interleaved per head) back to HF's (halves).

    w [num_heads * head_dim, H] -> [num_heads, head_dim/2, 2, H] -> swap the middle axes -> back.
    """
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, half, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def q4_0_to_core(blocks: np.ndarray, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_0 bytes of a [num_rows, num_cols] matrix -> (codes uint8 [N, K/2], scales f32 [N, K/32], mins f32)."""
    data = _blocks(blocks, "Q4_0", num_rows, num_cols)  # [N, K/32, 18]
    d = np.ascontiguousarray(data[:, :, 0:2]).view(np.float16)[:, :, 0].astype(np.float32)
    codes = np.ascontiguousarray(data[:, :, 2:]).reshape(num_rows, num_cols // 2)
    mins = d * np.float32(-8.0) + np.float32(0.0)  # exact; +0.0 turns -0.0 into 0.0
    return codes, d, mins


def q4_1_to_core(blocks: np.ndarray, num_rows: int, num_cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_1 bytes of a [num_rows, num_cols] matrix -> (codes uint8 [N, K/2], scales f32 [N, K/32], mins f32)."""
    data = _blocks(blocks, "Q4_1", num_rows, num_cols)  # [N, K/32, 20]
    d = np.ascontiguousarray(data[:, :, 0:2]).view(np.float16)[:, :, 0].astype(np.float32)
    m = np.ascontiguousarray(data[:, :, 2:4]).view(np.float16)[:, :, 0].astype(np.float32)
    codes = np.ascontiguousarray(data[:, :, 4:]).reshape(num_rows, num_cols // 2)
    return codes, d, m


def import_tensor(data: np.ndarray, type_name: str, shape: tuple[int, ...]):
    """One GGUF tensor (``ReaderTensor.data``, its type's name, its numpy shape: [rows, cols] or [n]).

    Returns the core's (codes, scales, mins) for a Q4_0 / Q4_1 matrix, else a float32 array
    of ``shape`` (F32 and F16 widened exactly, other types via ``gguf.quants.dequantize``).
    """
    shape = tuple(int(n) for n in shape)
    if type_name in _BLOCK_BYTES and len(shape) == 2:
        convert = q4_0_to_core if type_name == "Q4_0" else q4_1_to_core
        return convert(data, *shape)
    if type_name in ("F32", "F16"):
        out = np.asarray(data).astype(np.float32, copy=False)
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        try:
            qtype = GGMLQuantizationType[type_name]
        except KeyError as e:
            raise GgufFormatError(f"GGUF tensor type {type_name} is not known to the gguf package") from e
        out = dequantize(data, qtype).astype(np.float32, copy=False)
    if out.size != int(np.prod(shape)):
        raise GgufFormatError(
            f"{type_name} tensor has {out.size} values, its shape {list(shape)} needs {int(np.prod(shape))}"
        )
    return np.ascontiguousarray(out.reshape(shape))


def _blocks(blocks: np.ndarray, type_name: str, num_rows: int, num_cols: int) -> np.ndarray:
    block_bytes = _BLOCK_BYTES[type_name]
    if num_cols % GROUP_SIZE:
        raise GgufFormatError(f"{type_name} rows of {num_cols} values are not whole blocks of {GROUP_SIZE}")
    blocks = np.asarray(blocks)
    expected = num_rows * (num_cols // GROUP_SIZE) * block_bytes
    if blocks.dtype != np.uint8 or blocks.size != expected:
        raise GgufFormatError(
            f"{type_name} [{num_rows}, {num_cols}] needs {expected} bytes (uint8), got {blocks.size} of {blocks.dtype}"
        )
    return blocks.reshape(num_rows, num_cols // GROUP_SIZE, block_bytes)


def gguf_tokenizer_dir(gguf_path: Path) -> Path:
    """An HF tokenizer directory (with generation_config.json) for a GGUF file, converted once into the
    cache: the GGUF needs nothing but itself (and transformers, once, for the tokenizer)."""
    gguf_path = Path(gguf_path).resolve()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    stat = gguf_path.stat()
    target = env.cache_dir() / "gguf-tokenizers" / f"{gguf_path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (target / "tokenizer.json").exists() or not (target / "generation_config.json").exists():
        from ..progress import Steps

        print(f"lmrt: converting the tokenizer of {gguf_path.name} (once) into {target}", file=sys.stderr, flush=True)
        steps = Steps(2)
        with steps.step(f"reading {gguf_path.name}"):
            reader = open_gguf(gguf_path)
            config = hf_config(reader)

        def write(tmp: Path) -> None:
            with steps.step("tokenizer and chat template"):
                convert_tokenizer(gguf_path, tmp, int(config.get("max_position_embeddings") or 4096))
            (tmp / "generation_config.json").write_text(json.dumps(generation_config(reader, config), indent=2) + "\n")

        shutil.rmtree(target, ignore_errors=True)  # an incomplete one from an earlier lmrt
        write_atomically(target, write, done="tokenizer.json")
    return target


def convert_tokenizer(gguf_path: Path, out: Path, model_max_length: int) -> None:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError(
            f"converting the tokenizer of {gguf_path.name} (once) needs transformers: pip install 'lmrt[convert]'"
        ) from None
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(out)


def convert_gguf_to_hf(gguf_path: Path, target: Path) -> None:
    """Write a Llama GGUF as a HF float16 checkpoint dir, atomically (temp dir, then rename)."""
    reader = open_gguf(gguf_path)

    def write(tmp: Path) -> None:
        config = convert_weights_and_config(reader, gguf_path, tmp)
        convert_tokenizer(gguf_path, tmp, model_max_length=config["max_position_embeddings"])

    write_atomically(target, write)


def convert_weights_and_config(reader, gguf_path: Path, out: Path, progress=None) -> dict:
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    config = hf_config(reader)
    num_heads, num_kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    tensors = {}
    for tensor in (progress or iter)(reader.tensors):
        name = hf_tensor_name(tensor.name)
        weights = dequantize(tensor.data, tensor.tensor_type)  # float32 [out, in] or [n]
        expected_shape = tuple(int(n) for n in reversed(tensor.shape))
        if weights.shape != expected_shape:
            raise ValueError(f"{gguf_path}: {tensor.name} dequantized to {weights.shape}, expected {expected_shape}")
        if name.endswith("q_proj.weight"):
            weights = unpermute_rope_rows(weights, num_heads)
        elif name.endswith("k_proj.weight"):
            weights = unpermute_rope_rows(weights, num_kv_heads)
        tensors[name] = np.ascontiguousarray(weights.astype(np.float16))
        if not np.isfinite(tensors[name]).all():
            raise ValueError(f"{gguf_path}: {tensor.name} does not fit in float16")
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(generation_config(reader, config), indent=2) + "\n")
    return config
