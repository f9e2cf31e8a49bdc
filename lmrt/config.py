"""The user-facing configuration: one validated place for every engine and sampling knob."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple, Union

_DTYPES = ("auto", "float32", "bfloat16")
_KV_DTYPES = ("auto", "float32", "bfloat16")
# TurboMind's quant_policy values and the kv_cache_dtype each one means.
_QUANT_POLICY = {0: "auto", 8: "int8", 4: "int4"}


class ConfigError(ValueError):
    """A configuration value is out of range; the message names the field and what is allowed."""


def _need(ok: bool, msg: str) -> None:
    if not ok:
        raise ConfigError(msg)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs. Every field has a default that suits the machine it runs on.

    dtype: weights as "float32" (matches HF transformers fp32) or "bfloat16" (half the memory);
        "auto" is float32 on the CPU.
    kv_cache_dtype: "auto" follows dtype; "float32" or "bfloat16". (`quant_policy` is accepted as
        an alias: 0 = auto; 8 / 4 select the int8 / int4 KV cache once it lands.)
    max_batch_size: requests decoding together at most.
    cache_memory_gib: memory for the paged KV cache; None = 10% of available RAM, capped at what
        max_batch_size full sessions need.
    block_size: tokens per KV block.
    num_threads: kernel threads; None = physical cores.
    session_len: prompt + generated tokens per request; None = the model's max_position_embeddings.
    enable_prefix_caching: reuse KV blocks of shared prompt prefixes.
    max_num_batched_tokens: rows per forward step (decoding rows + prefill chunks); None = 512.
    lm_head_dtype: "int8" (one scale per vocabulary row) or "dense" (the weight dtype); "auto" is
        int8 for 4-bit models, where the output matrix would otherwise be most of the bytes read per
        token, and dense otherwise.
    prefill_precision: "bf16": batches of 32 rows or more (prompt chunks) run their products and
        their prompt attention on a bf16 tile unit, with activations, weights, K/V and the softmax
        probabilities rounded to bf16 and every sum in fp32 (HF bf16's precision, several times
        fp32's speed); needs AMX-BF16 (Intel Sapphire Rapids or later; AMX tiles) or AVX512-BF16
        (AMD Zen 4 or later, Intel Cooper Lake; VDPBF16PS). Smaller batches (decode) stay exact
        fp32. "fp32": every row exact fp32, so a prompt's logits never depend on the batch or the
        chunks it ran in. "auto" (default): "bf16" where the CPU has either, else "fp32".
        LMRT_TILE_UNIT=amx|avx512bf16|model picks the unit (default: the fastest here).
    """

    dtype: str = "auto"
    kv_cache_dtype: str = "auto"
    quant_policy: Optional[int] = None
    max_batch_size: int = 16
    cache_memory_gib: Optional[float] = None
    block_size: int = 64
    num_threads: Optional[int] = None
    session_len: Optional[int] = None
    enable_prefix_caching: bool = True
    max_num_batched_tokens: Optional[int] = None
    lm_head_dtype: str = "auto"
    prefill_precision: str = "auto"
    backend: str = "cpu"

    def __post_init__(self) -> None:
        _need(self.dtype in _DTYPES, f"dtype={self.dtype!r}: choose one of {_DTYPES}")
        _need(self.backend == "cpu", f"backend={self.backend!r}: this build runs on 'cpu' only")
        if self.quant_policy is not None:
            _need(self.quant_policy in _QUANT_POLICY,
                  f"quant_policy={self.quant_policy!r}: choose one of {sorted(_QUANT_POLICY)}")
            implied = _QUANT_POLICY[self.quant_policy]
            _need(self.kv_cache_dtype in ("auto", implied),
                  f"quant_policy={self.quant_policy} means kv_cache_dtype={implied!r}, "
                  f"but kv_cache_dtype={self.kv_cache_dtype!r} was also given")
            object.__setattr__(self, "kv_cache_dtype", implied)
        _need(self.kv_cache_dtype not in ("int8", "int4"),
              f"kv_cache_dtype={self.kv_cache_dtype!r}: the quantized KV cache is not in this build yet; "
              f"use one of {_KV_DTYPES}")
        _need(self.kv_cache_dtype in _KV_DTYPES, f"kv_cache_dtype={self.kv_cache_dtype!r}: choose one of {_KV_DTYPES}")
        _need(isinstance(self.max_batch_size, int) and self.max_batch_size >= 1, "max_batch_size must be an int >= 1")
        _need(self.cache_memory_gib is None or self.cache_memory_gib > 0, "cache_memory_gib must be > 0")
        _need(isinstance(self.block_size, int) and 1 <= self.block_size <= 1024, "block_size must be an int in [1, 1024]")
        _need(self.num_threads is None or (isinstance(self.num_threads, int) and self.num_threads >= 1),
              "num_threads must be an int >= 1 (or None for the number of physical cores)")
        _need(self.session_len is None or (isinstance(self.session_len, int) and self.session_len >= 2),
              "session_len must be an int >= 2")
        _need(self.lm_head_dtype in ("auto", "dense", "int8"),
              f"lm_head_dtype={self.lm_head_dtype!r}: choose one of ('auto', 'dense', 'int8')")
        _need(self.prefill_precision in ("auto", "fp32", "bf16"),
              f"prefill_precision={self.prefill_precision!r}: choose 'auto', 'fp32' or 'bf16'")
        _need(self.max_num_batched_tokens is None
              or (isinstance(self.max_num_batched_tokens, int) and self.max_num_batched_tokens >= 1),
              "max_num_batched_tokens must be an int >= 1")

    @property
    def weight_dtype(self) -> str:
        return "float32" if self.dtype == "auto" else self.dtype

    @property
    def kv_dtype(self) -> str:
        return self.weight_dtype if self.kv_cache_dtype == "auto" else self.kv_cache_dtype


@dataclass(frozen=True)
class GenerationConfig:
    """How one request samples and when it stops (HF transformers semantics).

    temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and repetition_penalty 1 switch those off.
    seed makes sampling reproducible per request. stop: strings that end the output (not included).
    stop_token_ids: ids that end the output (included in token_ids). ignore_eos: generate past EOS.
    """

    max_new_tokens: int = 512
    min_new_tokens: int = 0
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    seed: Optional[int] = None
    stop: Tuple[str, ...] = field(default_factory=tuple)
    stop_token_ids: Tuple[int, ...] = field(default_factory=tuple)
    ignore_eos: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        _need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 0, "max_new_tokens must be an int >= 0")
        _need(isinstance(self.min_new_tokens, int) and self.min_new_tokens >= 0, "min_new_tokens must be an int >= 0")
        _need(self.min_new_tokens <= self.max_new_tokens, "min_new_tokens must not exceed max_new_tokens")
        _need(self.temperature >= 0 and self.temperature == self.temperature and self.temperature != float("inf"),
              f"temperature={self.temperature!r}: must be a finite number >= 0 (0 = greedy)")
        _need(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k={self.top_k!r}: must be an int >= 0 (0 = off)")
        _need(0 < self.top_p <= 1, f"top_p={self.top_p!r}: must be in (0, 1]")
        _need(0 <= self.min_p <= 1, f"min_p={self.min_p!r}: must be in [0, 1]")
        _need(self.repetition_penalty > 0, f"repetition_penalty={self.repetition_penalty!r}: must be > 0 (1 = off)")
        _need(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**64),
              "seed must be None or an int in [0, 2**64)")
        _need(all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty strings")
        _need(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids must be >= 0")


PromptLike = Union[str, list]
