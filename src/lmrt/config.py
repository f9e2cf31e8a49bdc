"""The user-facing configuration: one validated place for every engine and sampling knob."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Optional, Tuple, Union

_DTYPES = ("auto", "float32", "bfloat16")
_KV_DTYPES = ("auto", "float32", "bfloat16", "int8", "int4", "int4-per-token", "k8v4")
# TurboMind's quant_policy values and the kv_cache_dtype each one means.
_QUANT_POLICY = {0: "auto", 8: "int8", 4: "int4"}


class ConfigError(ValueError):
    """A configuration value is out of range. ``field`` names the setting, ``value`` is what was given and
    ``requirement`` says what is allowed ("must be >= 1"), so a front end can name its own flag for it."""

    def __init__(self, field: str, value: Any, requirement: str):
        self.field, self.value, self.requirement = field, value, requirement
        super().__init__(f"{field}={value!r}: {requirement}")


def _need(ok: bool, obj: Any, name: str, requirement: str) -> None:
    if not ok:
        raise ConfigError(name, getattr(obj, name), requirement)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine runs. Every field has a default that suits the machine it runs on.

    dtype: weights as "float32" (matches HF transformers fp32) or "bfloat16" (half the memory);
        "auto" is float32 on the CPU.
    kv_cache_dtype: "auto" (default) is "int8", which measured +0.08% perplexity on the default model and
        decodes at batch 1 as fast as fp32 or bf16 KV or faster (benchmarks/RESULTS.md); "float32" (exact:
        what HF transformers fp32 computes) or "bfloat16"; or quantized as K and V are written, dequantised
        inside attention (README, "The KV cache"):
        "int8": K and V at 8 bits, one fp16 scale and zero point per token and KV head (TurboMind's
            quant_policy=8; half of bf16's bytes), K after an orthonormal Hadamard rotation of each head
            (q rotated alike, so q.k is unchanged; the rotation spreads outlier key channels);
        "int4": KIVI's split: K at 4 bits with one scale and zero point per channel over each block
            (a block's keys are held at 8 bits until it is full), V at 4 bits per token and KV head
            (about 3.6x bf16's tokens);
        "int4-per-token": K and V at 4 bits per token and KV head (TurboMind's quant_policy=4; costs far
            more quality on small models);
        "k8v4": K at 8 bits (rotated as int8's) and V at 4, per token (2.6x bf16's tokens).
        `quant_policy` is accepted as an alias: 0 = auto, 8 = int8, 4 = int4.
    max_batch_size: requests decoding together at most.
    cache_memory_gib: memory for the paged KV cache; None = what max_batch_size full sessions need,
        capped at 10% of the available RAM, or of the GPU's free memory with device "cuda"
        (``Pipeline.info()["kv_cache_sizing"]`` says which applied).
    block_size: tokens per KV block.
    num_threads: kernel threads; None = physical cores.
    session_len: prompt + generated tokens per request; None = the model's max_position_embeddings
        (also the most it may be).
    enable_prefix_caching: reuse KV blocks of shared prompt prefixes.
    max_num_batched_tokens: rows per forward step (decoding rows + prefill chunks); None = 512.
    lm_head_dtype: "int8" (one scale per vocabulary row) or "dense" (the weight dtype); "auto" is
        int8 for 4-bit models, where the output matrix would otherwise be most of the bytes read per
        token, and dense otherwise.
    prefill_precision: "bf16": steps of 16 rows or more (prompt chunks, and decode steps of 16+
        requests) run their products, and the attention of prompt chunks of 32+ tokens, on a bf16 tile
        unit, with activations, weights, K/V and the softmax probabilities rounded to bf16 and every
        sum in fp32 (HF bf16's precision, several times fp32's speed); needs AMX-BF16 (Intel Sapphire
        Rapids or later; AMX tiles) or AVX512-BF16 (AMD Zen 4 or later, Intel Cooper Lake; VDPBF16PS).
        Smaller steps (decode of up to 15 requests) stay exact fp32. "fp32": every row exact fp32, so a prompt's logits never depend on the batch or the
        chunks it ran in. "auto" (default): "bf16" where the CPU has either, else "fp32".
        LMRT_TILE_UNIT=amx|avx512bf16|model picks the unit (default: the fastest here).
    linear_precision: the 4-bit products that do not run on bf16 tiles (decode, and every prompt chunk
        where prefill is fp32). "fp32": exact, so a request's tokens never depend on the batch around
        it. "int8": each product's input is quantized to int8 per run of 32 inputs (one fp32 scale a
        run, as llama.cpp's Q8 activations) and multiplied by int8 dot products (AVX512-VNNI where the
        CPU has it, else AVX-512/AVX2 byte multiplies): faster, and still the same for a request
        whatever batch it is in, at the quality cost benchmarks/RESULTS.md measures. Where the AVX-512 path
        is active (and the tile unit is not AMX), the layers' 4-bit weights are rearranged at load for
        products over many rows, their scales and minimums held as IEEE halves (exact for GGUF and AWQ
        scales; an AWQ minimum rounds to the nearest half), and every 4-bit product of every step runs this
        way, prompt chunks and decode steps of 16+ requests included (info()["int8_weight_layout"] ==
        "interleaved"); with VNNI the int8 output matrix takes int8 activations too, and where K is cached as
        int8 the decode attention scores take each head's q as int8 (one scale a head) with integer dot
        products. Dense matrices are not changed by it. "auto" (default): "fp32".
    device: "cpu" (default) or "cuda": the model's weights, KV cache and ops on the first NVIDIA GPU, in fp32
        activations (dense weights "auto" -> bfloat16 there; the output matrix dense; prefill_precision "auto" ->
        "bf16": steps of 16+ rows take their products on the tensor cores, x and W rounded to bf16, fp32 sums;
        "fp32" keeps every step exact; linear_precision "fp32"; every KV dtype, "int4"'s staged per-channel keys
        included). Decode steps run as CUDA graphs recorded once per row count (one launch a step).
    enforce_eager: device "cuda": launch every op of every step instead of replaying the decode steps' graphs
        (vLLM's name; for debugging a kernel). No effect on the CPU's own model (under LMRT_OPS_MODEL the CPU op
        set records its steps' op calls the same way, which is how the tests check the graph path anywhere). A build
        without nvcc, or a machine without a GPU, refuses it by name. Being built (issue 15): its kernels are
        first versions; every sampled token is drawn on the GPU (only token ids cross to the host).
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
    linear_precision: str = "auto"
    device: str = "cpu"
    enforce_eager: bool = False

    def __post_init__(self) -> None:
        _need(self.dtype in _DTYPES, self, "dtype", f"choose one of {_DTYPES}")
        _need(isinstance(self.enforce_eager, bool), self, "enforce_eager", "must be True or False")
        _need(self.device in ("cpu", "cuda"), self, "device", "choose 'cpu' or 'cuda'")
        if self.quant_policy is not None:
            _need(self.quant_policy in _QUANT_POLICY, self, "quant_policy", f"choose one of {sorted(_QUANT_POLICY)}")
            implied = _QUANT_POLICY[self.quant_policy]
            _need(
                self.kv_cache_dtype in ("auto", implied),
                self,
                "kv_cache_dtype",
                f"quant_policy={self.quant_policy} means kv_cache_dtype={implied!r}; give one of the two",
            )
            object.__setattr__(self, "kv_cache_dtype", implied)
        _need(self.kv_cache_dtype in _KV_DTYPES, self, "kv_cache_dtype", f"choose one of {_KV_DTYPES}")
        _need(
            _is_int(self.max_batch_size) and self.max_batch_size >= 1, self, "max_batch_size", "must be an integer >= 1"
        )
        _need(
            self.cache_memory_gib is None or (_is_number(self.cache_memory_gib) and self.cache_memory_gib > 0),
            self,
            "cache_memory_gib",
            "must be a number > 0 (GiB)",
        )
        _need(
            _is_int(self.block_size) and 1 <= self.block_size <= 1024,
            self,
            "block_size",
            "must be an integer in [1, 1024]",
        )
        _need(
            self.num_threads is None or (_is_int(self.num_threads) and self.num_threads >= 1),
            self,
            "num_threads",
            "must be an integer >= 1",
        )
        _need(
            self.session_len is None or (_is_int(self.session_len) and self.session_len >= 2),
            self,
            "session_len",
            "must be an integer >= 2",
        )
        _need(
            self.lm_head_dtype in ("auto", "dense", "int8"),
            self,
            "lm_head_dtype",
            "choose one of ('auto', 'dense', 'int8')",
        )
        _need(
            self.prefill_precision in ("auto", "fp32", "bf16"),
            self,
            "prefill_precision",
            "choose 'auto', 'fp32' or 'bf16'",
        )
        _need(
            self.linear_precision in ("auto", "fp32", "int8"),
            self,
            "linear_precision",
            "choose 'auto', 'fp32' or 'int8'",
        )
        _need(
            self.max_num_batched_tokens is None
            or (_is_int(self.max_num_batched_tokens) and self.max_num_batched_tokens >= 1),
            self,
            "max_num_batched_tokens",
            "must be an integer >= 1",
        )


@dataclass(frozen=True)
class GenerationConfig:
    """How one request samples and when it stops (HF transformers semantics).

    temperature 0 is greedy; top_k 0, top_p 1, min_p 0 and repetition_penalty 1 switch those off.
    seed makes sampling reproducible per request. stop: strings that end the output (not included).
    stop_token_ids: ids that end the output (included in token_ids). ignore_eos: generate past EOS.

    These defaults are lmrt's own (greedy). A checkpoint's recommended sampling, from its
    ``generation_config.json``, is ``Pipeline.generation_defaults``: a request that passes no config
    gets those, and ``pipe.generation_config(**changes)`` starts from them. A config passed
    explicitly is used as given (as vLLM's SamplingParams are).
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
        _need(
            _is_int(self.max_new_tokens) and self.max_new_tokens >= 0, self, "max_new_tokens", "must be an integer >= 0"
        )
        _need(
            _is_int(self.min_new_tokens) and self.min_new_tokens >= 0, self, "min_new_tokens", "must be an integer >= 0"
        )
        _need(
            self.min_new_tokens <= self.max_new_tokens,
            self,
            "min_new_tokens",
            f"must not exceed max_new_tokens ({self.max_new_tokens})",
        )
        _need(
            _is_number(self.temperature) and self.temperature >= 0,
            self,
            "temperature",
            "must be a finite number >= 0 (0 = greedy)",
        )
        _need(_is_int(self.top_k) and self.top_k >= 0, self, "top_k", "must be an integer >= 0 (0 = off)")
        _need(_is_number(self.top_p) and 0 < self.top_p <= 1, self, "top_p", "must be in (0, 1] (1 = off)")
        _need(_is_number(self.min_p) and 0 <= self.min_p <= 1, self, "min_p", "must be in [0, 1] (0 = off)")
        _need(
            _is_number(self.repetition_penalty) and self.repetition_penalty > 0,
            self,
            "repetition_penalty",
            "must be a number > 0 (1 = off)",
        )
        _need(
            self.seed is None or (_is_int(self.seed) and 0 <= self.seed < 2**64),
            self,
            "seed",
            "must be an integer in [0, 2**64)",
        )
        _need(all(isinstance(s, str) and s for s in self.stop), self, "stop", "must be non-empty strings")
        _need(all(t >= 0 for t in self.stop_token_ids), self, "stop_token_ids", "must be token ids >= 0")

    @classmethod
    def from_checkpoint(cls, generation_config: Optional[Mapping[str, Any]]) -> "GenerationConfig":
        """lmrt's defaults, overridden by the sampling settings a checkpoint's ``generation_config.json``
        states, as vLLM reads them: only the keys present count (no HF class defaults such as top_k=50),
        except that an explicit ``"do_sample": false`` means greedy, as in HF transformers.
        A value out of range is a ConfigError naming generation_config.json."""
        g = dict(generation_config or {})
        changes = {name: g[key] for key, name in _CHECKPOINT_SAMPLING_KEYS.items() if g.get(key) is not None}
        if g.get("do_sample") is False:
            changes.pop("temperature", None)
        try:
            return cls(**changes)
        except ConfigError as e:
            raise ConfigError(f"generation_config.json {e.field}", e.value, e.requirement) from None

    def describe(self) -> str:
        """'greedy', or the sampling settings that are on: 'temperature 0.2, top_p 0.9, repetition_penalty 1.1'."""
        defaults = {f.name: f.default for f in fields(self)}
        if self.temperature == 0:  # top_k / top_p / min_p cannot change an argmax
            on = [n for n in ("repetition_penalty",) if getattr(self, n) != defaults[n]]
            return "greedy" + "".join(f", {n} {getattr(self, n)}" for n in on)
        return ", ".join(f"{n} {getattr(self, n)}" for n in _SAMPLING_FIELDS if getattr(self, n) != defaults[n])


# generation_config.json key -> GenerationConfig field
_CHECKPOINT_SAMPLING_KEYS = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repetition_penalty": "repetition_penalty",
    "max_new_tokens": "max_new_tokens",
}
_SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


PromptLike = Union[str, list]
