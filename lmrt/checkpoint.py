"""Load a HF safetensors checkpoint into the core's tensor layout.

Safetensors is read here directly (8-byte little-endian header length, JSON
header, raw data) through a read-only memory map, so F32 / F16 / BF16 all load
without torch and a damaged file gives an error that names it. Each output
tensor is allocated once and filled from the mapped source in chunks: peak
memory is the output plus one chunk, whatever the source dtype.

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
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._bf16 import bf16_bits_to_float32, float32_to_bf16_bits
from .model_config import ModelSpec

_SAFETENSORS_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}
_OUTPUT_DTYPES = ("float32", "bfloat16")
_CHUNK_ELEMENTS = 1 << 22  # conversion temporaries stay at a few tens of MB


class CheckpointError(ValueError):
    """A checkpoint file is malformed or does not match its config."""


@dataclass(frozen=True)
class _TensorRef:
    """Where one tensor lives: a file's mapped data, its dtype and shape."""

    file: Path
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    data: np.ndarray  # raw bytes (uint8 view into the file's memory map)

    def array(self) -> np.ndarray:
        """The tensor as stored; BF16 comes back as uint16 bits."""
        if self.dtype not in _SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{self.file}: dtype {self.dtype} is not supported; supported: {', '.join(_SAFETENSORS_DTYPES)}"
            )
        return self.data.view(_SAFETENSORS_DTYPES[self.dtype]).reshape(self.shape)


def load_checkpoint(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a HF checkpoint dir (config.json + *.safetensors, sharded or not) into the core's layout."""
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUTPUT_DTYPES}, got {dtype!r}")
    path = Path(path)
    spec = ModelSpec.from_pretrained_dir(path)
    source = _index_tensors(path)
    return spec, _normalise(spec, source, dtype)


# ---------------------------------------------------------------------- safetensors


def read_safetensors(file: Path) -> dict[str, _TensorRef]:
    """Map one .safetensors file and validate its header; tensors by name."""
    file = Path(file)
    size = file.stat().st_size
    if size < 8:
        raise CheckpointError(f"{file}: truncated ({size} bytes; a safetensors file starts with an 8-byte header length)")
    with open(file, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > size - 8:
            raise CheckpointError(
                f"{file}: header length {header_len} is beyond the file size {size} (truncated or not safetensors)"
            )
        header_bytes = f.read(header_len)
    try:
        header = json.loads(header_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file}: header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{file}: header is not a JSON object")
    header.pop("__metadata__", None)

    data_start = 8 + header_len
    data_size = size - data_start
    mapped = np.memmap(file, dtype=np.uint8, mode="r") if data_size else np.zeros(0, np.uint8)
    tensors = {}
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (TypeError, KeyError, ValueError) as e:
            raise CheckpointError(f"{file}: header entry for {name!r} is malformed ({entry!r})") from e
        if not 0 <= begin <= end <= data_size:
            raise CheckpointError(
                f"{file}: tensor {name!r} has data offsets [{begin}, {end}] outside the data section "
                f"of {data_size} bytes (truncated file?)"
            )
        itemsize = _SAFETENSORS_DTYPES[dtype].itemsize if dtype in _SAFETENSORS_DTYPES else None
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(
                f"{file}: tensor {name!r} of shape {list(shape)} {dtype} needs {math.prod(shape) * itemsize} bytes, "
                f"its offsets span {end - begin}"
            )
        tensors[name] = _TensorRef(file, dtype, shape, mapped[data_start + begin : data_start + end])
    return tensors


def _index_tensors(path: Path) -> dict[str, _TensorRef]:
    """Every tensor of the checkpoint by name, over all shards."""
    index_path = path / "model.safetensors.index.json"
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index_path}: not a valid safetensors index (needs a 'weight_map'): {e}") from e
        files = sorted({path / name for name in weight_map.values()})
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index_path} names shards that are not there: {missing}")
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors files in {path} (expected model.safetensors or shards)")
    tensors: dict[str, _TensorRef] = {}
    for file in files:
        tensors.update(read_safetensors(file))
    return tensors


# ---------------------------------------------------------------------- normalisation


def _normalise(spec: ModelSpec, source: dict[str, _TensorRef], dtype: str) -> dict[str, np.ndarray]:
    H, I, V = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q_rows, kv_rows = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    missing = [name for name in _expected_names(spec) if name not in source]
    if missing:
        shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        hint = " (config.json says tie_word_embeddings=false)" if "lm_head.weight" in missing else ""
        raise CheckpointError(f"checkpoint is missing tensors: {shown}{hint}")

    def matrix(names: list[str], rows: list[int], cols: int) -> np.ndarray:
        return _fuse(source, names, rows, cols, dtype)

    def vector(names: list[str], sizes: list[int]) -> np.ndarray:
        return _fuse(source, names, sizes, None, "float32")

    out = {"embed_tokens": matrix(["model.embed_tokens.weight"], [V], H)}  # [V, H]
    for i in range(spec.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        attn = [p + f"self_attn.{x}_proj" for x in "qkv"]
        out[o + "input_norm"] = vector([p + "input_layernorm.weight"], [H])  # [H]
        out[o + "qkv_proj"] = matrix([n + ".weight" for n in attn], [q_rows, kv_rows, kv_rows], H)  # [(nh+2nkv)hd, H]
        if spec.qkv_bias:
            out[o + "qkv_bias"] = vector([n + ".bias" for n in attn], [q_rows, kv_rows, kv_rows])  # [(nh+2nkv)hd]
        out[o + "o_proj"] = matrix([p + "self_attn.o_proj.weight"], [H], q_rows)  # [H, nh hd]
        out[o + "post_attn_norm"] = vector([p + "post_attention_layernorm.weight"], [H])  # [H]
        out[o + "gate_up_proj"] = matrix([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], [I, I], H)  # [2I, H]
        out[o + "down_proj"] = matrix([p + "mlp.down_proj.weight"], [H], I)  # [H, I]
    out["norm"] = vector(["model.norm.weight"], [H])  # [H]
    if not spec.tie_word_embeddings:  # a tied checkpoint that also stores lm_head: HF ignores it, so do we
        out["lm_head"] = matrix(["lm_head.weight"], [V], H)  # [V, H]
    return out


def _expected_names(spec: ModelSpec) -> list[str]:
    names = ["model.embed_tokens.weight", "model.norm.weight"]
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
        names += [p + f"self_attn.{x}_proj.weight" for x in ("q", "k", "v", "o")]
        names += [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
        if spec.qkv_bias:
            names += [p + f"self_attn.{x}_proj.bias" for x in "qkv"]
    if not spec.tie_word_embeddings:
        names.append("lm_head.weight")
    return names


def _fuse(source: dict[str, _TensorRef], names: list[str], rows: list[int], cols: int | None, dtype: str) -> np.ndarray:
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
