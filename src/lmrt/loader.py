"""Load a model into the core's tensor layout: one entry point (``load_weights``) for a HF checkpoint directory
(dense safetensors, AutoAWQ gemm, lmrt's own 4-bit) or a GGUF file, normalised and fused here; the formats
themselves are read by lmrt/formats/.

Load a HF safetensors checkpoint into the core's tensor layout.

Output (row-major, contiguous; the core's contract):

    embed_tokens              [V, H]
    layers.{i}.input_norm     [H]
    layers.{i}.qkv_proj       [(nh + 2 nkv) hd, H]   rows: q, k, v
    layers.{i}.qkv_bias       [(nh + 2 nkv) hd]      only when spec.qkv_bias
    layers.{i}.o_proj         [H, nh hd]
    layers.{i}.post_attn_norm [H]
    layers.{i}.gate_up_proj   [2 I, H]               rows: gate, up
    layers.{i}.down_proj      [H, I]
    norm                      [H]
    lm_head                   [V, H]                 absent when tie_word_embeddings

Norms and biases are float32; matrices float32, or bfloat16 bits in np.uint16.

4-bit checkpoints (``spec.weight_format == "w4"``): each linear above (qkv_proj,
o_proj, gate_up_proj, down_proj) comes instead as the core's ``W4Matrix`` layout,
in the same [N = out, K = in] orientation and with the same row fusion:

    layers.{i}.<linear>.codes   uint8   [N, K / 2]   (csrc/kernels/cpu/ops.h: byte j of
                                                       each run of 32 inputs = input j |
                                                       input j + 16 << 4)
    layers.{i}.<linear>.scales  float32 [N, K / spec.group_size]
    layers.{i}.<linear>.mins    float32 [N, K / spec.group_size]
    w[n, k] = code * scale + min

A linear the checkpoint keeps unquantised (AWQ ``modules_to_not_convert``; a GGUF tensor
that is not Q4_0 / Q4_1; a fused linear whose parts are not all 4-bit) comes dense under
its plain name, as above. embed_tokens, norms, biases and lm_head are always dense.
Sources: AutoAWQ "gemm" checkpoints (``load_checkpoint``, see lmrt/formats/awq.py)
and Llama GGUF files (``load_gguf``, see lmrt/formats/gguf.py). Both conversions
are exact: the core's dequantisation equals the source format's (the bounds are stated
in those modules).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from ._bf16 import bf16_bits_to_float32, float32_to_bf16_bits
from .formats import CheckpointError, W4Part, read_json
from .formats.awq import awq_part, core_to_dense
from .formats.lmrt_w4 import W4_FIELDS, lmrt_part
from .formats.safetensors import FLOAT_DTYPES, TensorRef, index_tensors
from .model_config import AwqConfig, ModelSpec

_OUTPUT_DTYPES = ("float32", "bfloat16")
_CHUNK_ELEMENTS = 1 << 22  # conversion temporaries stay at a few tens of MB


def load_weights(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """``load_gguf`` for a ``*.gguf`` file, else ``load_checkpoint`` (a HF checkpoint dir, dense or AWQ)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        return load_gguf(path, dtype=dtype)
    return load_checkpoint(path, dtype=dtype)


def metadata_dir(path: str | Path) -> Path:
    """Where a model's tokenizer, chat template and generation_config.json are: its own directory, or for a
    GGUF file a directory converted from it once (the default model's GGUF reuses its converted checkpoint)."""
    path = Path(path)
    if path.suffix.lower() != ".gguf" or path.is_dir():
        return path
    from .default_model import default_model_path, is_default_model_gguf
    from .formats.gguf import gguf_tokenizer_dir

    return default_model_path() if is_default_model_gguf(path) else gguf_tokenizer_dir(path)


def load_checkpoint(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a HF checkpoint dir (config.json + *.safetensors, sharded or not) into the core's layout.

    An AutoAWQ gemm checkpoint (config.json ``quantization_config``) gives ``spec.weight_format ==
    "w4"`` and 4-bit linears (module docstring); ``dtype`` then applies to the dense matrices only.
    """
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUTPUT_DTYPES}, got {dtype!r}")
    path = Path(path)
    spec = ModelSpec.from_pretrained_dir(path)
    awq = AwqConfig.from_hf_config(read_json(path / "config.json")) if spec.weight_format == "w4" else None
    source = index_tensors(path)
    return spec, _normalise(spec, source, dtype, awq)


def load_gguf(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a Llama GGUF file into the core's layout (the tokenizer is not read here).

    Q4_0 / Q4_1 linears become 4-bit (group size 32, exact); every other tensor is
    dequantised to float32 (then to ``dtype`` for matrices). llama.cpp's rotary row order
    of q/k is undone on codes, scales and mins alike. Needs the ``gguf`` package.
    """
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUTPUT_DTYPES}, got {dtype!r}")
    from .formats.gguf import GROUP_SIZE, read_gguf

    path = Path(path)
    config, parts = read_gguf(path)
    spec = ModelSpec.from_hf_config(config)

    def get(name: str, shape: tuple[int, ...]) -> W4Part | np.ndarray:
        if name not in parts:
            raise CheckpointError(f"{path}: the GGUF has no tensor for {name}")
        part = parts[name]
        got = (part[0].shape[0], part[0].shape[1] * 2) if isinstance(part, tuple) else part.shape
        if tuple(got) != shape:
            raise CheckpointError(f"{path}: {name} has shape {list(got)}, expected {list(shape)} from the metadata")
        return part

    tensors = _assemble(spec, dtype, get)
    if any(k.endswith(".codes") for k in tensors):
        spec = replace(spec, weight_format="w4", group_size=GROUP_SIZE)
    return spec, tensors


def add_int8_lm_head(tensors: dict[str, np.ndarray]) -> None:
    """Replaces the output matrix by int8 rows with one scale each (``lm_head.q`` [V, H] int8, ``lm_head.scales``
    [V] float32; lmrt/formats/int8_rows.py). A tied model quantizes a copy of the embedding: the lookup stays exact."""
    from .formats.int8_rows import quantize_rows_int8

    dense = tensors.pop("lm_head", None)
    if dense is None:
        dense = tensors["embed_tokens"]
    if dense.dtype == np.uint16:
        dense = bf16_bits_to_float32(dense)
    tensors["lm_head.q"], tensors["lm_head.scales"] = quantize_rows_int8(dense)


def num_parameters(tensors: dict[str, np.ndarray]) -> int:
    """Weights counted as parameters: a 4-bit linear counts its codes (two per byte), not its scales and mins."""
    total = 0
    for name, array in tensors.items():
        if name.endswith(".codes"):
            total += 2 * array.size
        elif not name.endswith((".scales", ".mins")):
            total += array.size
    return total


def _normalise(
    spec: ModelSpec, source: dict[str, TensorRef], dtype: str, awq: AwqConfig | None = None
) -> dict[str, np.ndarray]:
    def quantized(name: str) -> bool:
        if awq is None or not _is_layer_linear(name):
            return False
        if awq.method == "lmrt":  # stored 4-bit where its codes are
            return f"{name.removesuffix('.weight')}.codes" in source
        return awq.converts(name.removesuffix(".weight"))

    fields = W4_FIELDS if awq is not None and awq.method == "lmrt" else ("qweight", "qzeros", "scales")
    missing = [name for name in _expected_names(spec, quantized, fields) if name not in source]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        hint = " (config.json says tie_word_embeddings=false)" if "lm_head.weight" in missing else ""
        if awq is not None and any(n.endswith((".qweight", ".qzeros", ".scales")) for n in missing):
            hint += (
                f" (config.json's quantization_config is AutoAWQ gemm with group_size {awq.group_size}: every layer "
                f"linear not matched by modules_to_not_convert={list(awq.modules_to_not_convert)} needs qweight, "
                f"qzeros and scales)"
            )
        raise CheckpointError(f"checkpoint is missing tensors: {shown}{hint}")

    def get(name: str, shape: tuple[int, ...]):
        if quantized(name) and awq.method == "lmrt":
            return lmrt_part(source, name.removesuffix(".weight"), shape, awq.group_size)
        if quantized(name):
            return awq_part(source, name.removesuffix(".weight"), shape, awq.group_size)
        return _checked(source, name, shape)

    return _assemble(spec, dtype, get, source)


def _assemble(spec: ModelSpec, dtype: str, get, source: dict[str, TensorRef] | None = None) -> dict[str, np.ndarray]:
    """The core's tensors, from ``get(hf_name, shape)``: a 4-bit part (codes, scales, mins), a float32
    array, or a safetensors TensorRef (converted here, in bounded chunks when the whole fused
    tensor comes from safetensors)."""
    H, I, V = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q_rows, kv_rows = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim

    def linear(key: str, names: list[str], rows: list[int], cols: int, w4: bool = True) -> dict[str, np.ndarray]:
        parts = [get(n, (r, cols)) for n, r in zip(names, rows)]
        if w4 and all(isinstance(p, tuple) for p in parts):  # all 4-bit: fuse codes / scales / mins by rows
            return {f"{key}.{field}": np.concatenate([p[j] for p in parts]) for j, field in enumerate(W4_FIELDS)}
        if all(isinstance(p, TensorRef) for p in parts):
            return {key: _fuse(source, names, rows, cols, dtype)}
        # Mixed, or not from safetensors: every part to float32 (4-bit dequantised exactly), then fused.
        full = np.concatenate([_float32(p) for p in parts])
        return {key: full if dtype == "float32" else float32_to_bf16_bits(full)}

    def vector(names: list[str], sizes: list[int]) -> np.ndarray:
        parts = [get(n, (size,)) for n, size in zip(names, sizes)]
        if all(isinstance(p, TensorRef) for p in parts):
            return _fuse(source, names, sizes, None, "float32")
        return np.concatenate([_float32(p) for p in parts])

    out = linear("embed_tokens", ["model.embed_tokens.weight"], [V], H, w4=False)  # [V, H]
    for i in range(spec.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        attn = [p + f"self_attn.{x}_proj" for x in "qkv"]
        out[o + "input_norm"] = vector([p + "input_layernorm.weight"], [H])  # [H]
        out.update(
            linear(o + "qkv_proj", [n + ".weight" for n in attn], [q_rows, kv_rows, kv_rows], H)
        )  # [(nh+2nkv)hd, H]
        if spec.qkv_bias:
            out[o + "qkv_bias"] = vector([n + ".bias" for n in attn], [q_rows, kv_rows, kv_rows])  # [(nh+2nkv)hd]
        out.update(linear(o + "o_proj", [p + "self_attn.o_proj.weight"], [H], q_rows))  # [H, nh hd]
        out[o + "post_attn_norm"] = vector([p + "post_attention_layernorm.weight"], [H])  # [H]
        out.update(
            linear(o + "gate_up_proj", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], [I, I], H)
        )  # [2I, H]
        out.update(linear(o + "down_proj", [p + "mlp.down_proj.weight"], [H], I))  # [H, I]
    out["norm"] = vector(["model.norm.weight"], [H])  # [H]
    if not spec.tie_word_embeddings:  # a tied checkpoint that also stores lm_head: HF ignores it, so do we
        out.update(linear("lm_head", ["lm_head.weight"], [V], H, w4=False))  # [V, H]
    return out


_LAYER_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                  "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def _is_layer_linear(name: str) -> bool:
    return name.startswith("model.layers.") and name.removesuffix(".weight").endswith(_LAYER_LINEARS)


def _expected_names(spec: ModelSpec, quantized=lambda name: False, fields=("qweight", "qzeros", "scales")) -> list[str]:
    def weight(name: str) -> list[str]:
        module = name.removesuffix(".weight")
        return [f"{module}.{x}" for x in fields] if quantized(name) else [name]

    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        for x in ("q", "k", "v", "o"):
            names += weight(p + f"self_attn.{x}_proj.weight")
        for x in ("gate", "up", "down"):
            names += weight(p + f"mlp.{x}_proj.weight")
        if spec.qkv_bias:
            names += [p + f"self_attn.{x}_proj.bias" for x in "qkv"]
    if not spec.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def _checked(source: dict[str, TensorRef], name: str, shape: tuple[int, ...]) -> TensorRef:
    ref = source[name]
    if ref.shape != shape:
        raise CheckpointError(
            f"{ref.file}: tensor {name!r} has shape {list(ref.shape)}, expected {list(shape)} from config.json"
        )
    if ref.dtype not in FLOAT_DTYPES:
        raise CheckpointError(
            f"{ref.file}: tensor {name!r}: dtype {ref.dtype} is not supported; supported: {', '.join(FLOAT_DTYPES)}"
        )
    return ref


def _float32(part) -> np.ndarray:
    """A part as a new-or-given float32 array."""
    if isinstance(part, tuple):
        return core_to_dense(*part)
    if isinstance(part, TensorRef):
        array = part.array()
        return bf16_bits_to_float32(array) if part.dtype == "BF16" else array.astype(np.float32)
    return np.asarray(part, dtype=np.float32)


def _fuse(source: dict[str, TensorRef], names: list[str], rows: list[int], cols: int | None, dtype: str) -> np.ndarray:
    """Concatenate tensors along rows into one new array; ``cols=None`` for 1-D tensors."""
    shape = (sum(rows),) if cols is None else (sum(rows), cols)
    out = np.empty(shape, dtype=np.uint16 if dtype == "bfloat16" else np.float32)
    start = 0
    for name, num_rows in zip(names, rows):
        ref = source[name]
        expected = (num_rows,) if cols is None else (num_rows, cols)
        if ref.shape != expected:
            raise CheckpointError(
                f"{ref.file}: tensor {name!r} has shape {list(ref.shape)}, expected {list(expected)} from config.json"
            )
        _convert_into(out[start : start + num_rows], ref.array(), ref.dtype, dtype)
        start += num_rows
    return out


def _convert_into(dst: np.ndarray, src: np.ndarray, src_dtype: str, dst_dtype: str) -> None:
    """dst[...] = src converted, a chunk of rows at a time (bounded temporaries)."""
    row_elements = max(1, math.prod(src.shape[1:]))
    step = max(1, _CHUNK_ELEMENTS // row_elements)
    for begin in range(0, src.shape[0], step):
        chunk = src[begin : begin + step]
        if dst_dtype == "bfloat16" and src_dtype == "BF16":
            converted = chunk  # bits copied exactly
        elif src_dtype == "BF16":
            converted = bf16_bits_to_float32(chunk)
        elif dst_dtype == "bfloat16":
            converted = float32_to_bf16_bits(chunk.astype(np.float32))
        else:
            converted = chunk  # F32 or F16; np.copyto widens F16 exactly
        np.copyto(dst[begin : begin + step], converted, casting="same_kind" if converted.dtype != dst.dtype else "no")
