"""The one step that turns an EngineConfig (what the user set, "auto" and None included) into concrete values
for this model on this machine, and the C++ engine's typed EngineOptions from them.

Everything the engine runs with is decided here, from three inputs: the config, the model's spec, and a
``Machine`` (what the CPU and the environment say, read once). Nothing below this module (the C++ core
included) has defaults of its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from lmrt import env
from lmrt.config import ConfigError, EngineConfig
from lmrt.model_config import ModelSpec

# The KV cache, when cache_memory_gib is not given, takes what max_batch_size full sessions need, at most
# this fraction of the available RAM.
DEFAULT_CACHE_FRACTION = 0.10
# Rows per forward step when max_num_batched_tokens is not given: big enough that a prompt chunk keeps the
# tile units busy, small enough that decoding requests wait at most one such chunk.
DEFAULT_MAX_NUM_BATCHED_TOKENS = 512
TILE_UNITS = ("amx", "avx512bf16", "model")
# What kv_cache_dtype="auto" is: int8 costs +0.03% perplexity on the default model and no decode speed at batch 1
# (benchmarks/RESULTS.md: kv_quality.py, bench_kv.py), the rule issue 12 set for the default.
DEFAULT_KV_DTYPE = "int8"
# kv_cache_dtype -> the (K, V) element types of the cache (_core.KVDType names; csrc/kernels/cpu/ops.h).
KV_SCHEMES = {
    "float32": ("float32", "float32"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "int8": ("int8", "int8"),
    "int4": ("int4_channel", "int4"),
    "int4-per-token": ("int4", "int4"),
    "k8v4": ("int8", "int4"),
}


@dataclass(frozen=True)
class Machine:
    """What the resolve step reads from the CPU and the environment. ``detect()`` reads them once;
    tests build one by hand."""

    physical_cores: int
    available_ram_bytes: int
    tile_units: tuple[str, ...]  # the bf16 tile units this CPU has, fastest first ("model" is always there)
    env_tile_unit: Optional[str] = None  # LMRT_TILE_UNIT: a unit for bf16 prefill other than the fastest
    env_ops_model: bool = False  # LMRT_OPS_MODEL: the CPU runs the op-set model (device "cuda"'s), for checking it

    @classmethod
    def detect(cls) -> "Machine":
        from lmrt import _core

        k = _core.kernels
        units = tuple(u for u, ok in (("amx", k.amx_available()), ("avx512bf16", k.avx512bf16_available())) if ok)
        return cls(
            physical_cores=k.physical_cores(),
            available_ram_bytes=_available_ram_bytes(),
            tile_units=units + ("model",),
            env_tile_unit=env.tile_unit(),
            env_ops_model=env.ops_model(),
        )


@dataclass(frozen=True)
class Resolved:
    """Every engine setting, concrete."""

    weight_dtype: str  # "float32" | "bfloat16": dense matrices and activations
    kv_dtype: str  # a KV_SCHEMES name
    lm_head_dtype: str  # "dense" | "int8"
    num_threads: int
    session_len: int  # prompt + generated tokens per request at most
    max_batch_size: int
    max_num_batched_tokens: int
    block_size: int
    num_blocks: int  # the KV pool
    kv_bytes_per_token: float  # of a block's K and V, quantization parameters included
    kv_staging_bytes: int  # int4 K's staging slots (inside the cache budget); 0 for other dtypes
    kv_cache_sizing: str  # how num_blocks was chosen, in words
    enable_prefix_caching: bool
    prefill_precision: str  # "fp32" | "bf16"
    tile_unit: Optional[str]  # the unit bf16 prefill runs on; None with fp32 prefill
    linear_precision: str  # "fp32" | "int8": the 4-bit products off the tiles
    device: str = "cpu"  # "cpu" | "cuda"
    ops_model: bool = False  # the op-set model (OpsLlamaModel): device "cuda", or LMRT_OPS_MODEL on the CPU
    step_graphs: bool = False  # the op-set model without enforce_eager: decode steps replayed as recorded graphs

    def engine_options(self):
        """The C++ engine's EngineOptions: typed fields, enums by name."""
        from lmrt import _core

        o = _core.EngineOptions()
        o.num_blocks, o.block_size = self.num_blocks, self.block_size
        k, v = KV_SCHEMES[self.kv_dtype]
        o.k_dtype, o.v_dtype = _core.KVDType.__members__[k], _core.KVDType.__members__[v]
        o.max_batch_size, o.max_num_batched_tokens = self.max_batch_size, self.max_num_batched_tokens
        o.num_threads, o.session_len = self.num_threads, self.session_len
        o.enable_prefix_caching = self.enable_prefix_caching
        o.prefill_precision = _core.PrefillPrecision.__members__[self.prefill_precision]
        o.tile_unit = _core.TileUnit.__members__[self.tile_unit or "model"]
        o.linear_precision = _core.LinearPrecision.__members__[self.linear_precision]
        o.device = _core.Device.__members__[self.device]
        o.ops_model = self.ops_model
        o.step_graphs = self.step_graphs
        return o


def weight_dtype(config: EngineConfig) -> str:
    """The dtype dense weights load in: "auto" is float32 on the CPU, bfloat16 on CUDA. (Weights load before the
    rest resolves.)"""
    if config.dtype != "auto":
        return config.dtype
    return "bfloat16" if config.device == "cuda" else "float32"


def resolve(config: EngineConfig, spec: ModelSpec, machine: Machine) -> Resolved:
    """Every "auto" and None of `config` made concrete for `spec` on `machine`; a ConfigError names what does
    not fit (a session beyond the model, a missing tile unit, a cache too small for one block)."""
    from lmrt import _core

    if config.device == "cuda":
        _check_cuda(config)
    ops_model = config.device == "cuda" or machine.env_ops_model
    if ops_model and config.device == "cpu" and config.linear_precision not in ("auto", "fp32"):
        raise ConfigError(
            "linear_precision", config.linear_precision, "LMRT_OPS_MODEL runs fp32 activations only: use 'fp32'"
        )
    wdtype = weight_dtype(config)
    kv_dtype = DEFAULT_KV_DTYPE if config.kv_cache_dtype == "auto" else config.kv_cache_dtype
    most = spec.max_position_embeddings
    if config.session_len is not None and config.session_len > most:
        raise ConfigError("session_len", config.session_len, f"must be <= the model's max_position_embeddings ({most})")
    session_len = config.session_len or most
    if config.device == "cuda":  # bf16: steps of 16+ rows on the tensor cores
        prefill, unit = ("fp32" if config.prefill_precision == "fp32" else "bf16"), None
    else:
        prefill, unit = _prefill(config, machine)
    k, v = (_core.KVDType.__members__[n] for n in KV_SCHEMES[kv_dtype])
    if "int4" in KV_SCHEMES[kv_dtype][1] and spec.head_dim % 32:
        raise ConfigError(
            "kv_cache_dtype",
            kv_dtype,
            f"4-bit rows need a head size that is a multiple of 32, and this model's is {spec.head_dim}: "
            "use 'int8', 'bfloat16' or 'float32'",
        )
    bytes_per_block = _core.kv_bytes_per_block(
        spec.num_layers, config.block_size, spec.num_kv_heads, spec.head_dim, k, v
    )
    max_tokens = config.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS
    staging = 0
    if k == _core.KVDType.int4_channel:  # int4 K: each block's keys held at 8 bits until it is full
        staging = _core.kv_stage_slots(config.max_batch_size, max_tokens, config.block_size) * (
            _core.kv_bytes_per_stage_slot(spec.num_layers, config.block_size, spec.num_kv_heads, spec.head_dim)
        )
    if config.device == "cuda":  # the pool lives in the GPU's memory
        available, memory = _core.kernels.cuda_memory()[0], "free GPU memory"
    else:
        available, memory = machine.available_ram_bytes, "available RAM"
    num_blocks, sizing = _kv_blocks(config, session_len, bytes_per_block, staging, available, memory)
    linear = "fp32" if config.linear_precision == "auto" else config.linear_precision
    lm_head = config.lm_head_dtype
    if lm_head == "auto":
        lm_head = "int8" if spec.weight_format == "w4" and not ops_model else "dense"
    elif lm_head == "int8" and ops_model:
        raise ConfigError("lm_head_dtype", lm_head, "the op-set model (device 'cuda') takes a dense output matrix")
    if linear == "int8" and spec.weight_format != "w4":
        raise ConfigError(
            "linear_precision",
            linear,
            "int8 activations run against 4-bit weights, and this model's are dense: load a 4-bit checkpoint "
            "(AWQ, or the default model) or use 'fp32'",
        )
    return Resolved(
        weight_dtype=wdtype,
        kv_dtype=kv_dtype,
        lm_head_dtype=lm_head,
        num_threads=config.num_threads or machine.physical_cores,
        session_len=session_len,
        max_batch_size=config.max_batch_size,
        max_num_batched_tokens=max_tokens,
        block_size=config.block_size,
        num_blocks=num_blocks,
        kv_bytes_per_token=bytes_per_block / config.block_size,
        kv_staging_bytes=staging,
        kv_cache_sizing=sizing,
        enable_prefix_caching=config.enable_prefix_caching,
        prefill_precision=prefill,
        tile_unit=unit,
        linear_precision=linear,
        device=config.device,
        ops_model=ops_model,
        step_graphs=ops_model and not config.enforce_eager,
    )


def _check_cuda(config: EngineConfig) -> None:
    """device "cuda": a ConfigError naming what is missing (a CUDA build, a device) or what it cannot run."""
    from lmrt import _core

    ok, why = _core.kernels.cuda_available()
    if not ok:
        raise ConfigError("device", "cuda", f"no CUDA device here ({why}): use 'cpu'")
    if config.linear_precision not in ("auto", "fp32"):
        raise ConfigError(
            "linear_precision", config.linear_precision, "device 'cuda' runs fp32 activations (no int8 yet): use 'fp32'"
        )


def _prefill(config: EngineConfig, machine: Machine) -> tuple[str, Optional[str]]:
    """(prefill precision, tile unit): bf16 on the fastest unit (or LMRT_TILE_UNIT's) where "auto" finds one."""
    if config.prefill_precision == "fp32":
        return "fp32", None
    unit = machine.env_tile_unit
    if unit is not None:
        if unit not in TILE_UNITS:
            raise ConfigError("LMRT_TILE_UNIT", unit, "choose 'amx', 'avx512bf16' or 'model'")
        if unit not in machine.tile_units:
            raise ConfigError(
                "LMRT_TILE_UNIT",
                unit,
                "this CPU (or OS) lacks it; unset LMRT_TILE_UNIT to use the "
                "best unit here, or use prefill_precision='fp32'",
            )
        return "bf16", unit
    hardware = [u for u in machine.tile_units if u != "model"]
    if hardware:
        return "bf16", hardware[0]
    if config.prefill_precision == "bf16":
        raise ConfigError(
            "prefill_precision",
            "bf16",
            "runs prefill on a bf16 tile unit, which this CPU (or OS) lacks: it needs AMX-BF16 (Intel "
            "Sapphire Rapids or later) or AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake); use "
            "prefill_precision='fp32'",
        )
    return "fp32", None


def _kv_blocks(
    config: EngineConfig, session_len: int, bytes_per_block: int, staging: int, available: int, memory: str
) -> tuple[int, str]:
    """cache_memory_gib when given; else what max_batch_size full sessions need, capped at
    DEFAULT_CACHE_FRACTION of `available` bytes (the available RAM, or the GPU's free memory: `memory` names it).
    `staging`: bytes the pool needs besides its blocks (int4 K's staging slots), inside the budget. Returns (blocks,
    how they were chosen)."""
    if config.cache_memory_gib is not None:
        num = (int(config.cache_memory_gib * 2**30) - staging) // bytes_per_block
        if num < 1:
            raise ConfigError(
                "cache_memory_gib",
                config.cache_memory_gib,
                f"holds no KV block: one block of {config.block_size} tokens takes {bytes_per_block} bytes"
                + (f", after {staging} bytes of staging for int4 keys" if staging else ""),
            )
        return num, "set by cache_memory_gib"
    n = config.max_batch_size
    sessions = f"{n} session{'s' if n > 1 else ''} of {session_len:,} tokens"
    needed = -(-session_len // config.block_size) * n
    cap = (int(available * DEFAULT_CACHE_FRACTION) - staging) // bytes_per_block
    if needed <= cap:
        return needed, f"what {sessions} need{'s' if n == 1 else ''}"
    return max(1, cap), (
        f"{sessions} would need {needed * bytes_per_block / 2**30:.1f} GiB; capped at "
        f"{DEFAULT_CACHE_FRACTION:.0%} of the {memory}"
    )


def _available_ram_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
