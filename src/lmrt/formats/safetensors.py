"""HF safetensors files, read directly (8-byte little-endian header length, JSON header, raw data) through a
read-only memory map, so F32 / F16 / BF16 / I32 / U8 all load without torch and a damaged file gives an error
that names it."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import CheckpointError

SAFETENSORS_DTYPES = {
    "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"), "I32": np.dtype("<i4"), "U8": np.dtype("u1"),
}  # fmt: skip


FLOAT_DTYPES = ("F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives: a file's mapped data, its dtype and shape."""

    file: Path
    dtype: str  # safetensors dtype name
    shape: tuple[int, ...]
    data: np.ndarray  # raw bytes (uint8 view into the file's memory map)

    def array(self) -> np.ndarray:
        """The tensor as stored; BF16 comes back as uint16 bits."""
        if self.dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(
                f"{self.file}: dtype {self.dtype} is not supported; supported: {', '.join(SAFETENSORS_DTYPES)}"
            )
        return self.data.view(SAFETENSORS_DTYPES[self.dtype]).reshape(self.shape)


def read_safetensors(file: Path) -> dict[str, TensorRef]:
    """Map one .safetensors file and validate its header; tensors by name."""
    file = Path(file)
    size = file.stat().st_size
    if size < 8:
        raise CheckpointError(
            f"{file}: truncated ({size} bytes; a safetensors file starts with an 8-byte header length)"
        )
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
        itemsize = SAFETENSORS_DTYPES[dtype].itemsize if dtype in SAFETENSORS_DTYPES else None
        if itemsize is not None and end - begin != math.prod(shape) * itemsize:
            raise CheckpointError(
                f"{file}: tensor {name!r} of shape {list(shape)} {dtype} needs {math.prod(shape) * itemsize} bytes, "
                f"its offsets span {end - begin}"
            )
        tensors[name] = TensorRef(file, dtype, shape, mapped[data_start + begin : data_start + end])
    return tensors


def index_tensors(path: Path) -> dict[str, TensorRef]:
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
    tensors: dict[str, TensorRef] = {}
    for file in files:
        tensors.update(read_safetensors(file))
    return tensors
