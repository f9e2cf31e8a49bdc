"""lmrt's own 4-bit checkpoint form: config.json with ``"quantization_config": {"quant_method": "lmrt", "bits": 4,
"group_size": g}`` and, per 4-bit linear ``<module>``, the core's W4Matrix arrays as they are (``<module>.codes``
uint8 [N, K/2], ``.scales`` and ``.mins`` float32 [N, K/g]; lmrt/formats/__init__.py). The default model's GGUF
tensors are kept this way, losslessly; other tensors are plain safetensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import CheckpointError, W4Part
from .safetensors import TensorRef

W4_FIELDS = ("codes", "scales", "mins")


def lmrt_part(source: dict[str, TensorRef], module: str, shape: tuple[int, int], group_size: int) -> W4Part:
    """One linear in lmrt's own 4-bit form (the core's W4Matrix, module docstring) of core shape [N, K]."""
    N, K = shape
    expected = {
        "codes": ((N, K // 2), "U8"),
        "scales": ((N, K // group_size), "F32"),
        "mins": ((N, K // group_size), "F32"),
    }
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
            flat.update({f"{module}.{x}": np.ascontiguousarray(a) for x, a in zip(W4_FIELDS, t)})
        else:
            flat[name] = np.ascontiguousarray(t)
    config = dict(config, quantization_config=dict(quant_method="lmrt", bits=4, group_size=group_sizes.pop()))
    path.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config, indent=2))
