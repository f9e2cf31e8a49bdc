"""Every environment variable lmrt reads, in one place. (LMRT_ISA=scalar|avx2|avx512, which forces a kernel
path, is read by the C++ core itself when it loads: csrc/kernels/cpu/isa.cpp.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def tile_unit() -> Optional[str]:
    """LMRT_TILE_UNIT=amx|avx512bf16|model: the unit bf16 prefill runs on, instead of the fastest one here
    (lmrt/resolve.py checks it)."""
    return os.environ.get("LMRT_TILE_UNIT") or None


def ops_model() -> bool:
    """LMRT_OPS_MODEL=1: on the CPU, run the model that device "cuda" runs (OpsLlamaModel: the same forward over the
    backend's op set) instead of the CPU's own, to check it against that one (exact fp32 only; slower)."""
    return os.environ.get("LMRT_OPS_MODEL", "") not in ("", "0")


def cache_dir() -> Path:
    """LMRT_CACHE: where the default model and converted GGUF tokenizers are kept (default ~/.cache/lmrt)."""
    return Path(os.environ.get("LMRT_CACHE") or Path.home() / ".cache" / "lmrt")


def api_key() -> Optional[str]:
    """LMRT_API_KEY: the key `lmrt serve` requires as 'Authorization: Bearer KEY' when --api-key is not given."""
    return os.environ.get("LMRT_API_KEY") or None
