"""The on-disk formats lmrt reads and writes, one module each, NumPy only (no torch):

    safetensors.py  HF safetensors files, memory-mapped and validated
    awq.py          AutoAWQ "gemm" 4-bit packing and its exact map onto the core's 4-bit layout
    gguf.py         llama.cpp GGUF files: metadata, Q4_0 / Q4_1 tensors imported losslessly, tokenizer conversion
    lmrt_w4.py      lmrt's own 4-bit checkpoint form (the core's layout, written as it is)
    int8_rows.py    int8 rows with one scale each (the output matrix of 4-bit models)

lmrt/loader.py turns any of them into the core's fused layout. The core's 4-bit layout (``W4Matrix`` in
csrc/kernels/cpu/ops.h), for a linear with N outputs and K inputs and group size g (32, 64 or 128) along K:

    codes  uint8   [N, K / 2]  in each run of 32 inputs of a row, byte j holds input j
                               (low nibble) and input j + 16 (high nibble)
    scales float32 [N, K / g]
    mins   float32 [N, K / g]
    w[n, k] = code[n, k] * scales[n, k / g] + mins[n, k / g]

This module holds what they share: the error type, JSON reads, atomic directory writes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

W4Part = tuple  # (codes uint8 [N, K/2], scales float32 [N, K/g], mins float32 [N, K/g])


class CheckpointError(ValueError):
    """A checkpoint file is malformed or does not match its config."""


def read_json(path: Path, default: Any = None) -> Any:
    """The parsed file; ``default`` when it is absent and a default is given. Invalid JSON is a ValueError
    naming the file."""
    path = Path(path)
    if default is not None and not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e


def write_atomically(target: Path, write, done: str = "config.json") -> None:
    """write(tmp) fills a temp dir beside target, which is then renamed to target (readable as the umask allows).
    ``done``: the file whose presence marks a finished target (a concurrent writer may have got there first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        make_readable(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / done).is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_readable(path: Path) -> None:
    """mkdtemp makes the dir 0700; give the finished checkpoint the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for file in path.iterdir():
        file.chmod(0o666 & ~umask)
