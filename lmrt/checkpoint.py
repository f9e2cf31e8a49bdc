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
Sources: AutoAWQ "gemm" checkpoints (``load_checkpoint``, see lmrt/quant/awq_format.py)
and Llama GGUF files (``load_gguf``, see lmrt/quant/gguf_format.py). Both conversions
are exact: the core's dequantisation equals the source format's (the bounds are stated
in those modules).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ._bf16 import bf16_bits_to_float32, float32_to_bf16_bits
from .model_config import AwqConfig, ModelSpec, _read_json
from .quant.awq_format import AwqFormatError, awq_to_core, core_to_dense

_SAFETENSORS_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "I32": np.dtype("<i4"), "U8": np.dtype("u1"),
}  # fmt: skip
_FLOAT_DTYPES = ("F32", "F16", "BF16")
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


W4Part = tuple  # (codes uint8 [N, K/2], scales float32 [N, K/g], mins float32 [N, K/g])


def load_checkpoint(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a HF checkpoint dir (config.json + *.safetensors, sharded or not) into the core's layout.

    An AutoAWQ gemm checkpoint (config.json ``quantization_config``) gives ``spec.weight_format ==
    "w4"`` and 4-bit linears (module docstring); ``dtype`` then applies to the dense matrices only.
    """
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUTPUT_DTYPES}, got {dtype!r}")
    path = Path(path)
    spec = ModelSpec.from_pretrained_dir(path)
    awq = AwqConfig.from_hf_config(_read_json(path / "config.json")) if spec.weight_format == "w4" else None
    source = _index_tensors(path)
    return spec, _normalise(spec, source, dtype, awq)


def load_weights(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """``load_gguf`` for a ``*.gguf`` file, else ``load_checkpoint`` (a HF checkpoint dir, dense or AWQ)."""
    path = Path(path)
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        return load_gguf(path, dtype=dtype)
    return load_checkpoint(path, dtype=dtype)


def add_int8_lm_head(tensors: dict[str, np.ndarray]) -> None:
    """Replaces the output matrix by int8 rows with one scale each (``lm_head.q`` [V, H] int8, ``lm_head.scales``
    [V] float32; lmrt/quant/int8_rows.py). A tied model quantizes a copy of the embedding: the lookup stays exact."""
    from .quant.int8_rows import quantize_rows_int8

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


def load_gguf(path: str | Path, dtype: str = "float32") -> tuple[ModelSpec, dict[str, np.ndarray]]:
    """Read a Llama GGUF file into the core's layout (the tokenizer is not read here).

    Q4_0 / Q4_1 linears become 4-bit (group size 32, exact); every other tensor is
    dequantised to float32 (then to ``dtype`` for matrices). llama.cpp's rotary row order
    of q/k is undone on codes, scales and mins alike. Needs the ``gguf`` package.
    """
    if dtype not in _OUTPUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUTPUT_DTYPES}, got {dtype!r}")
    from .quant.gguf_format import GROUP_SIZE

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


def read_gguf(path: str | Path, reader=None, progress=None) -> tuple[dict, dict[str, W4Part | np.ndarray]]:
    """A Llama GGUF file as (HF config dict, tensors by HF name): a Q4_0 / Q4_1 matrix as its exact
    (codes, scales, mins) in the core's layout, anything else dequantised to float32; q/k rows in
    HF's rotary order. Needs the ``gguf`` package. ``reader``: a GGUFReader of ``path`` already open;
    ``progress(tensors)``: wraps the tensor loop (a progress bar)."""
    from .default_model import _hf_config, _hf_tensor_name, _unpermute_rope_rows, open_gguf
    from .quant.gguf_format import import_tensor

    path = Path(path)
    reader = reader or open_gguf(path)
    config = _hf_config(reader)
    spec = ModelSpec.from_hf_config(config)
    parts: dict[str, W4Part | np.ndarray] = {}
    for tensor in (progress or iter)(reader.tensors):
        name = _hf_tensor_name(tensor.name)
        shape = tuple(int(n) for n in reversed(tensor.shape))  # numpy order: [out, in] or [n]
        part = import_tensor(tensor.data, tensor.tensor_type.name, shape)
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = spec.num_heads if name.endswith("q_proj.weight") else spec.num_kv_heads
            part = tuple(_unpermute_rope_rows(a, heads) for a in part) if isinstance(part, tuple) else (
                _unpermute_rope_rows(part, heads)
            )
        parts[name] = part
    return config, parts


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


def _normalise(
    spec: ModelSpec, source: dict[str, _TensorRef], dtype: str, awq: AwqConfig | None = None
) -> dict[str, np.ndarray]:
    def quantized(name: str) -> bool:
        if awq is None or not _is_layer_linear(name):
            return False
        if awq.method == "lmrt":  # stored 4-bit where its codes are
            return f"{name.removesuffix('.weight')}.codes" in source
        return awq.converts(name.removesuffix(".weight"))

    fields = _W4_FIELDS if awq is not None and awq.method == "lmrt" else ("qweight", "qzeros", "scales")
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
            return _lmrt_part(source, name.removesuffix(".weight"), shape, awq.group_size)
        if quantized(name):
            return _awq_part(source, name.removesuffix(".weight"), shape, awq.group_size)
        return _checked(source, name, shape)

    return _assemble(spec, dtype, get, source)


def _assemble(spec: ModelSpec, dtype: str, get, source: dict[str, _TensorRef] | None = None) -> dict[str, np.ndarray]:
    """The core's tensors, from ``get(hf_name, shape)``: a 4-bit part (codes, scales, mins), a float32
    array, or a safetensors _TensorRef (converted here, in bounded chunks when the whole fused
    tensor comes from safetensors)."""
    H, I, V = spec.hidden_size, spec.intermediate_size, spec.vocab_size
    q_rows, kv_rows = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim

    def linear(key: str, names: list[str], rows: list[int], cols: int, w4: bool = True) -> dict[str, np.ndarray]:
        parts = [get(n, (r, cols)) for n, r in zip(names, rows)]
        if w4 and all(isinstance(p, tuple) for p in parts):  # all 4-bit: fuse codes / scales / mins by rows
            return {f"{key}.{field}": np.concatenate([p[j] for p in parts]) for j, field in enumerate(_W4_FIELDS)}
        if all(isinstance(p, _TensorRef) for p in parts):
            return {key: _fuse(source, names, rows, cols, dtype)}
        # Mixed, or not from safetensors: every part to float32 (4-bit dequantised exactly), then fused.
        full = np.concatenate([_float32(p) for p in parts])
        return {key: full if dtype == "float32" else float32_to_bf16_bits(full)}

    def vector(names: list[str], sizes: list[int]) -> np.ndarray:
        parts = [get(n, (size,)) for n, size in zip(names, sizes)]
        if all(isinstance(p, _TensorRef) for p in parts):
            return _fuse(source, names, sizes, None, "float32")
        return np.concatenate([_float32(p) for p in parts])

    out = linear("embed_tokens", ["model.embed_tokens.weight"], [V], H, w4=False)  # [V, H]
    for i in range(spec.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        attn = [p + f"self_attn.{x}_proj" for x in "qkv"]
        out[o + "input_norm"] = vector([p + "input_layernorm.weight"], [H])  # [H]
        out.update(linear(o + "qkv_proj", [n + ".weight" for n in attn], [q_rows, kv_rows, kv_rows], H))  # [(nh+2nkv)hd, H]
        if spec.qkv_bias:
            out[o + "qkv_bias"] = vector([n + ".bias" for n in attn], [q_rows, kv_rows, kv_rows])  # [(nh+2nkv)hd]
        out.update(linear(o + "o_proj", [p + "self_attn.o_proj.weight"], [H], q_rows))  # [H, nh hd]
        out[o + "post_attn_norm"] = vector([p + "post_attention_layernorm.weight"], [H])  # [H]
        out.update(linear(o + "gate_up_proj", [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"], [I, I], H))  # [2I, H]
        out.update(linear(o + "down_proj", [p + "mlp.down_proj.weight"], [H], I))  # [H, I]
    out["norm"] = vector(["model.norm.weight"], [H])  # [H]
    if not spec.tie_word_embeddings:  # a tied checkpoint that also stores lm_head: HF ignores it, so do we
        out.update(linear("lm_head", ["lm_head.weight"], [V], H, w4=False))  # [V, H]
    return out


_W4_FIELDS = ("codes", "scales", "mins")
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


def _checked(source: dict[str, _TensorRef], name: str, shape: tuple[int, ...]) -> _TensorRef:
    ref = source[name]
    if ref.shape != shape:
        raise CheckpointError(f"{ref.file}: tensor {name!r} has shape {list(ref.shape)}, expected {list(shape)} from config.json")
    if ref.dtype not in _FLOAT_DTYPES:
        raise CheckpointError(
            f"{ref.file}: tensor {name!r}: dtype {ref.dtype} is not supported; supported: {', '.join(_FLOAT_DTYPES)}"
        )
    return ref


def _float32(part) -> np.ndarray:
    """A part as a new-or-given float32 array."""
    if isinstance(part, tuple):
        return core_to_dense(*part)
    if isinstance(part, _TensorRef):
        array = part.array()
        return bf16_bits_to_float32(array) if part.dtype == "BF16" else array.astype(np.float32)
    return np.asarray(part, dtype=np.float32)


def _lmrt_part(source: dict[str, _TensorRef], module: str, shape: tuple[int, int], group_size: int) -> W4Part:
    """One linear in lmrt's own 4-bit form (the core's W4Matrix, module docstring) of core shape [N, K]."""
    N, K = shape
    expected = {"codes": ((N, K // 2), "U8"), "scales": ((N, K // group_size), "F32"), "mins": ((N, K // group_size), "F32")}
    part = []
    for x, (want, dtype) in expected.items():
        ref = source[f"{module}.{x}"]
        if K % group_size or ref.shape != want or ref.dtype != dtype:
            raise CheckpointError(
                f"{ref.file}: {module}.{x} is {ref.dtype} {list(ref.shape)}, expected {dtype} {list(want)} for a 4-bit "
                f"linear with {K} inputs, {N} outputs, group_size {group_size}"
            )
        part.append(ref.array())
    return tuple(part)


def save_lmrt_w4(path: str | Path, config: dict, tensors: dict[str, np.ndarray | W4Part]) -> None:
    """Write a checkpoint in lmrt's own 4-bit form: ``tensors`` by HF name, a 4-bit linear ``<module>.weight``
    as its (codes, scales, mins) tuple; ``config`` is the HF config.json, given a quantization_config here."""
    from safetensors.numpy import save_file

    path = Path(path)
    group_sizes = {2 * t[0].shape[1] // t[1].shape[1] for t in tensors.values() if isinstance(t, tuple)}
    if len(group_sizes) != 1:
        raise ValueError(f"one group size expected over the 4-bit tensors, got {sorted(group_sizes)}")
    flat = {}
    for name, t in tensors.items():
        if isinstance(t, tuple):
            module = name.removesuffix(".weight")
            flat.update({f"{module}.{x}": np.ascontiguousarray(a) for x, a in zip(_W4_FIELDS, t)})
        else:
            flat[name] = np.ascontiguousarray(t)
    config = dict(config, quantization_config=dict(quant_method="lmrt", bits=4, group_size=group_sizes.pop()))
    path.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2))


def _awq_part(source: dict[str, _TensorRef], module: str, shape: tuple[int, int], group_size: int) -> W4Part:
    """One AutoAWQ gemm linear ``module`` of core shape [N, K] -> (codes, scales, mins)."""
    N, K = shape
    refs = {x: source[f"{module}.{x}"] for x in ("qweight", "qzeros", "scales")}
    file = refs["qweight"].file
    if K % group_size:
        raise CheckpointError(
            f"{file}: {module} has K={K} inputs, which group_size {group_size} (config.json quantization_config) "
            f"does not divide"
        )
    expected = {"qweight": (K, N // 8), "qzeros": (K // group_size, N // 8), "scales": (K // group_size, N)}
    dtypes = {"qweight": ("I32",), "qzeros": ("I32",), "scales": _FLOAT_DTYPES}
    for x, ref in refs.items():
        if N % 8 or ref.shape != expected[x]:
            raise CheckpointError(
                f"{ref.file}: {module}.{x} has shape {list(ref.shape)}, expected {list(expected[x])} for an AutoAWQ gemm "
                f"linear with {K} inputs, {N} outputs, group_size {group_size}"
            )
        if ref.dtype not in dtypes[x]:
            raise CheckpointError(f"{ref.file}: {module}.{x} is {ref.dtype}, expected {' or '.join(dtypes[x])}")
    scales = refs["scales"]
    scales = scales.array() if scales.dtype != "BF16" else bf16_bits_to_float32(scales.array())
    try:
        return awq_to_core(refs["qweight"].array(), refs["qzeros"].array(), scales, group_size)
    except AwqFormatError as e:
        raise CheckpointError(f"{file}: {module}: {e}") from e


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
