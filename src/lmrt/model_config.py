"""The model's shape and RoPE, read from a Hugging Face ``config.json``.

``ModelSpec`` is what the C++ core needs to build a Llama-family model. RoPE
frequencies are computed here, in NumPy, the way HF transformers computes them
(``transformers/modeling_rope_utils.py``): every step in float32, python-float
scalars rounded to float32, ``a / t`` for a tensor ``t`` as ``reciprocal(t) * a``.
The one step that is not bit-reproducible across machines is ``theta ** x``:
torch's vectorised float32 pow (Sleef) can differ from the correctly rounded
result by 1 ulp; with ``ATEN_CPU_CAPABILITY=default`` torch matches this module
exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .formats import read_json

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
WEIGHT_FORMATS = ("dense", "w4")
W4_GROUP_SIZES = (32, 64, 128)  # what the core's 4-bit kernels take (W4Matrix in csrc/kernels/cpu/ops.h)
SUPPORTED_QUANTIZATION = (
    'AutoAWQ: quant_method "awq", bits 4, version "gemm", zero_point true, group_size 32, 64 or 128; '
    'lmrt\'s own: quant_method "lmrt", bits 4, group_size 32, 64 or 128 (codes / scales / mins per linear)'
)
_DEFAULT_ROPE_THETA = 10000.0


class UnsupportedModelError(ValueError):
    """The checkpoint is a model lmrt cannot run (architecture or feature)."""


@dataclass(frozen=True)
class RopeScaling:
    """A RoPE scaling rule, as in HF ``rope_parameters`` (absent for plain RoPE)."""

    rope_type: str  # "linear" | "llama3" | "yarn"
    factor: float
    low_freq_factor: float | None = None  # llama3
    high_freq_factor: float | None = None  # llama3
    original_max_position_embeddings: int | None = None  # llama3, yarn
    attention_factor: float | None = None  # yarn
    beta_fast: float | None = None  # yarn
    beta_slow: float | None = None  # yarn
    mscale: float | None = None  # yarn
    mscale_all_dim: float | None = None  # yarn
    truncate: bool = True  # yarn

    def __post_init__(self):
        if self.rope_type not in ("linear", "llama3", "yarn"):
            raise UnsupportedModelError(
                f"rope scaling type {self.rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}"
            )
        if not self.factor >= 1.0:
            raise ValueError(f"rope scaling factor must be >= 1, got {self.factor}")
        if self.rope_type == "llama3":
            missing = [
                k
                for k in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
                if getattr(self, k) is None
            ]
            if missing:
                raise ValueError(f"llama3 rope scaling needs {missing} in rope_scaling / rope_parameters")
            if not self.high_freq_factor > self.low_freq_factor:
                raise ValueError(
                    f"llama3 rope scaling needs high_freq_factor > low_freq_factor, "
                    f"got {self.high_freq_factor} <= {self.low_freq_factor}"
                )
        if self.rope_type == "yarn" and self.original_max_position_embeddings is None:
            raise ValueError("yarn rope scaling needs original_max_position_embeddings")


@dataclass(frozen=True)
class ModelSpec:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: RopeScaling | None
    max_position_embeddings: int  # usable context (capped at a Mistral sliding_window)
    tie_word_embeddings: bool
    qkv_bias: bool
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    # How the checkpoint's linears are stored (see lmrt/loader.py for the tensor names):
    #   "dense": every linear is one float matrix;
    #   "w4":    linears are 4-bit in the core's W4Matrix layout (`<name>.codes` / `.scales` / `.mins`),
    #            group_size inputs per (scale, min); a linear the checkpoint keeps unquantised
    #            (AWQ modules_to_not_convert, a GGUF tensor that is not Q4_0/Q4_1) stays dense as `<name>`.
    weight_format: str = "dense"
    group_size: int | None = None  # the w4 group size; None when dense

    def __post_init__(self):
        if self.weight_format not in WEIGHT_FORMATS:
            raise ValueError(f"weight_format must be one of {WEIGHT_FORMATS}, got {self.weight_format!r}")
        if self.weight_format == "w4" and self.group_size not in W4_GROUP_SIZES:
            raise UnsupportedModelError(
                f"4-bit group size {self.group_size!r} is not supported; supported: {', '.join(map(str, W4_GROUP_SIZES))}"
            )
        if self.weight_format == "dense" and self.group_size is not None:
            raise ValueError(f"group_size is for weight_format 'w4' only, got {self.group_size} with 'dense'")
        if self.architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"architecture {self.architecture!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
            "max_position_embeddings",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be > 0, got {self.rope_theta}")
        if not isinstance(self.eos_token_ids, tuple):
            raise TypeError(f"eos_token_ids must be a tuple, got {type(self.eos_token_ids).__name__}")
        for token_id in (*self.eos_token_ids, *(() if self.bos_token_id is None else (self.bos_token_id,))):
            if not 0 <= token_id < self.vocab_size:
                raise ValueError(f"special token id {token_id} is outside the vocabulary [0, {self.vocab_size})")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_hf_config(
        cls, config: Mapping[str, Any], generation_config: Mapping[str, Any] | None = None
    ) -> "ModelSpec":
        """Build from a parsed HF ``config.json`` (and optionally ``generation_config.json``)."""
        architectures = config.get("architectures") or []
        if not architectures:
            raise UnsupportedModelError(
                f"config.json has no 'architectures' field; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        architecture = architectures[0] if len(architectures) == 1 else architectures
        if architecture not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"architecture {architecture!r} in config.json is not supported; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )
        if architecture != "Qwen2ForCausalLM" and config.get("attention_bias"):
            raise UnsupportedModelError(
                "attention_bias=true is not supported: in Llama/Mistral it also puts a bias on o_proj, "
                "and the core has biases on q/k/v only"
            )
        if config.get("mlp_bias"):
            raise UnsupportedModelError("mlp_bias=true is not supported: the core's MLP has no bias")
        if architecture == "Qwen2ForCausalLM" and config.get("use_sliding_window"):
            raise UnsupportedModelError(
                "Qwen2 use_sliding_window=true is not supported: set use_sliding_window to false in config.json "
                "(all released Qwen2/2.5 models run without it)"
            )
        if config.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedModelError("partial_rotary_factor != 1 is not supported")
        activation = config.get("hidden_act", "silu")
        if activation != "silu":
            raise UnsupportedModelError(f"hidden_act {activation!r} is not supported; the core's MLP is SwiGLU (silu)")

        # Full attention equals sliding-window attention up to the window, so a
        # window shorter than the context just shortens the usable context.
        max_positions = config["max_position_embeddings"]
        sliding_window = config.get("sliding_window")
        if architecture == "MistralForCausalLM" and sliding_window:
            max_positions = min(max_positions, sliding_window)
        num_heads = config["num_attention_heads"]
        hidden_size = config["hidden_size"]
        rope_theta, rope_scaling = _read_rope(config)
        awq = AwqConfig.from_hf_config(config)
        return cls(
            architecture=architecture,
            vocab_size=config["vocab_size"],
            hidden_size=hidden_size,
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=num_heads,
            num_kv_heads=config.get("num_key_value_heads") or num_heads,
            head_dim=config.get("head_dim") or hidden_size // num_heads,
            rms_norm_eps=float(config["rms_norm_eps"]),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=max_positions,
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            qkv_bias=architecture == "Qwen2ForCausalLM",
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=_merge_eos(config, generation_config),
            weight_format="dense" if awq is None else "w4",
            group_size=None if awq is None else awq.group_size,
        )

    @classmethod
    def from_pretrained_dir(cls, path: str | Path) -> "ModelSpec":
        """Build from a checkpoint directory holding ``config.json`` (and maybe ``generation_config.json``)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist (expected a dir with config.json)")
        config_path = path / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"{config_path} not found: a HF checkpoint dir needs config.json")
        config = read_json(config_path)
        generation_path = path / "generation_config.json"
        generation_config = read_json(generation_path) if generation_path.is_file() else None
        return cls.from_hf_config(config, generation_config)

    # ------------------------------------------------------------------ RoPE

    def inv_freq(self) -> np.ndarray:
        """RoPE inverse frequencies, float32 ``[head_dim / 2]``, as HF transformers computes them."""
        f32 = np.float32
        dim = self.head_dim
        exponent = np.arange(0, dim, 2, dtype=np.int64).astype(f32) / f32(dim)  # [hd/2]
        inv_freq = _reciprocal(_pow_f32(self.rope_theta, exponent))  # [hd/2]
        scaling = self.rope_scaling
        if scaling is None:
            return inv_freq
        if scaling.rope_type == "linear":
            return inv_freq / f32(scaling.factor)
        if scaling.rope_type == "llama3":
            return _llama3_inv_freq(inv_freq, scaling)
        return _yarn_inv_freq(self.rope_theta, dim, scaling)

    def attention_scaling(self) -> float:
        """Factor HF applies to cos/sin (1.0 except for yarn)."""
        scaling = self.rope_scaling
        if scaling is None or scaling.rope_type != "yarn":
            return 1.0
        if scaling.attention_factor is not None:
            return float(scaling.attention_factor)

        def get_mscale(scale, mscale=1.0):
            return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0

        if scaling.mscale and scaling.mscale_all_dim:
            return float(
                get_mscale(scaling.factor, scaling.mscale) / get_mscale(scaling.factor, scaling.mscale_all_dim)
            )
        return get_mscale(scaling.factor)

    def to_core(self, weight_dtype: str):
        """The C++ core's ModelSpec (csrc/model/model_spec.h); ``weight_dtype`` is how the dense matrices are stored
        ("float32" or "bfloat16")."""
        from lmrt import _core

        c = _core.ModelSpec()
        c.vocab_size, c.hidden_size, c.intermediate_size = self.vocab_size, self.hidden_size, self.intermediate_size
        c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim = (
            self.num_layers,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        )
        c.rms_norm_eps = self.rms_norm_eps
        c.inv_freq = self.inv_freq().tolist()  # float32 [head_dim / 2]
        c.attention_scaling = self.attention_scaling()
        c.tie_word_embeddings, c.qkv_bias = self.tie_word_embeddings, self.qkv_bias
        c.weight_dtype = _core.DType.__members__[weight_dtype]
        return c


@dataclass(frozen=True)
class AwqConfig:
    """A checkpoint's 4-bit ``quantization_config``: AutoAWQ gemm (``method == "awq"``), or lmrt's own
    scale + min form (``method == "lmrt"``: each 4-bit linear stored as ``<module>.codes`` / ``.scales`` /
    ``.mins`` in the core's layout, lmrt/formats/lmrt_w4.py; how a GGUF's Q4_0 / Q4_1 tensors are kept, since
    their mins are not AWQ's integer zero points)."""

    group_size: int
    modules_to_not_convert: tuple[str, ...] = ()  # substrings of HF module names kept unquantised
    method: str = "awq"

    def converts(self, module_name: str) -> bool:
        """Whether ``module_name`` (e.g. "model.layers.0.mlp.down_proj") is stored 4-bit.

        As AutoAWQ and transformers match it: a module is kept dense when any entry of
        modules_to_not_convert is a substring of its name.
        """
        return not any(key in module_name for key in self.modules_to_not_convert)

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> "AwqConfig | None":
        """None without ``quantization_config``; an error naming what is supported for anything but AWQ gemm 4-bit.

        Missing keys take AutoAWQ's defaults (bits 4, group_size 128, zero_point true, version "gemm");
        AutoAWQ's older spellings ``w_bit`` / ``q_group_size`` are read too.
        """
        qc = config.get("quantization_config")
        if qc is None:
            return None
        if not isinstance(qc, Mapping):
            raise UnsupportedModelError(f"quantization_config must be a JSON object, got {qc!r}")
        method = qc.get("quant_method")
        if not isinstance(method, str) or method.lower() not in ("awq", "lmrt"):
            raise UnsupportedModelError(
                f"quantization_config.quant_method {method!r} is not supported; supported: {SUPPORTED_QUANTIZATION}"
            )
        if method.lower() == "lmrt":
            group_size = qc.get("group_size")
            if qc.get("bits") != 4 or group_size not in W4_GROUP_SIZES or isinstance(group_size, bool):
                raise UnsupportedModelError(
                    f"lmrt quantization_config bits={qc.get('bits')!r} group_size={group_size!r} is not supported; "
                    f"supported: {SUPPORTED_QUANTIZATION}"
                )
            return cls(group_size=int(group_size), method="lmrt")
        bits = qc.get("bits", qc.get("w_bit", 4))
        if bits != 4:
            raise UnsupportedModelError(f"AWQ bits={bits!r} is not supported; supported: {SUPPORTED_QUANTIZATION}")
        version = qc.get("version", "gemm")
        if not isinstance(version, str) or version.lower() != "gemm":
            raise UnsupportedModelError(
                f"AWQ version {version!r} is not supported (its packing differs from gemm's); "
                f"supported: {SUPPORTED_QUANTIZATION}"
            )
        if qc.get("zero_point", True) is not True:
            raise UnsupportedModelError(
                f"AWQ zero_point={qc.get('zero_point')!r} (symmetric, no qzeros) is not supported; "
                f"supported: {SUPPORTED_QUANTIZATION}"
            )
        group_size = qc.get("group_size", qc.get("q_group_size", 128))
        if group_size not in W4_GROUP_SIZES or isinstance(group_size, bool):
            raise UnsupportedModelError(
                f"AWQ group_size={group_size!r} is not supported; supported: {SUPPORTED_QUANTIZATION}"
            )
        skip = qc.get("modules_to_not_convert") or ()
        if isinstance(skip, str) or not all(isinstance(k, str) for k in skip):
            raise ValueError(f"quantization_config.modules_to_not_convert must be a list of names, got {skip!r}")
        return cls(group_size=int(group_size), modules_to_not_convert=tuple(skip))


# ---------------------------------------------------------------------- helpers


def _read_rope(config: Mapping[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, scaling) with HF's precedence: ``rope_scaling`` over ``rope_parameters``; theta from the
    rope dict, else top-level ``rope_theta``, else 10000."""
    params = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
    rope_theta = float(params.get("rope_theta") or config.get("rope_theta") or _DEFAULT_ROPE_THETA)
    rope_type = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", 1.0) != 1.0:
        raise UnsupportedModelError("partial_rotary_factor != 1 is not supported")
    if rope_type == "default":
        return rope_theta, None
    if rope_type == "dynamic":
        raise UnsupportedModelError(
            "rope scaling 'dynamic' (NTK, frequencies change with sequence length) is not supported; "
            f"supported: {SUPPORTED_ROPE_TYPES}"
        )
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"rope scaling type {rope_type!r} is not supported; supported: {SUPPORTED_ROPE_TYPES}"
        )
    max_positions = config["max_position_embeddings"]
    factor = params.get("factor")
    original_max = params.get("original_max_position_embeddings")
    if rope_type in ("llama3", "yarn") and original_max is None:
        original_max = config.get("original_max_position_embeddings", max_positions)
    if factor is None and rope_type == "yarn":
        factor = max_positions / original_max
    if factor is None:
        raise ValueError(f"rope scaling {rope_type!r} needs a 'factor'")
    return rope_theta, RopeScaling(
        rope_type=rope_type,
        factor=float(factor),
        low_freq_factor=params.get("low_freq_factor"),
        high_freq_factor=params.get("high_freq_factor"),
        original_max_position_embeddings=original_max,
        attention_factor=params.get("attention_factor"),
        beta_fast=params.get("beta_fast"),
        beta_slow=params.get("beta_slow"),
        mscale=params.get("mscale"),
        mscale_all_dim=params.get("mscale_all_dim"),
        truncate=params.get("truncate", True),
    )


def _merge_eos(config: Mapping[str, Any], generation_config: Mapping[str, Any] | None) -> tuple[int, ...]:
    """config's eos ids, then generation_config's, in order, without repeats."""
    ids: list[int] = []
    for source in (config, generation_config or {}):
        value = source.get("eos_token_id")
        for token_id in [] if value is None else [value] if isinstance(value, int) else value:
            if token_id not in ids:
                ids.append(int(token_id))
    return tuple(ids)


def _pow_f32(base: float, exponent: np.ndarray) -> np.ndarray:
    """float32(base) ** exponent, correctly rounded to float32 (via float64, independent of numpy's SIMD)."""
    return np.power(np.float64(np.float32(base)), exponent.astype(np.float64)).astype(np.float32)


def _reciprocal(x: np.ndarray) -> np.ndarray:
    return np.float32(1.0) / x


def _llama3_inv_freq(inv_freq: np.ndarray, s: RopeScaling) -> np.ndarray:
    f32 = np.float32
    factor = f32(s.factor)
    low_freq_wavelen = f32(s.original_max_position_embeddings / s.low_freq_factor)
    high_freq_wavelen = f32(s.original_max_position_embeddings / s.high_freq_factor)
    wavelen = _reciprocal(inv_freq) * f32(2 * math.pi)  # [hd/2]
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)  # [hd/2]
    smooth = (_reciprocal(wavelen) * f32(s.original_max_position_embeddings) - f32(s.low_freq_factor)) / f32(
        s.high_freq_factor - s.low_freq_factor
    )  # [hd/2]
    smoothed = (f32(1.0) - smooth) * scaled / factor + smooth * scaled  # [hd/2]
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def _yarn_inv_freq(rope_theta: float, dim: int, s: RopeScaling) -> np.ndarray:
    f32 = np.float32
    pos_freqs = _pow_f32(rope_theta, np.arange(0, dim, 2).astype(f32) / f32(dim))  # [hd/2]
    extrapolation = _reciprocal(pos_freqs)
    interpolation = _reciprocal(f32(s.factor) * pos_freqs)
    beta_fast = s.beta_fast or 32
    beta_slow = s.beta_slow or 1

    def correction_dim(num_rotations):
        return (dim * math.log(s.original_max_position_embeddings / (num_rotations * 2 * math.pi))) / (
            2 * math.log(rope_theta)
        )

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as HF: avoid dividing by zero
    ramp = np.clip((np.arange(dim // 2, dtype=f32) - f32(low)) / f32(high - low), f32(0), f32(1))  # [hd/2]
    extrapolation_factor = f32(1.0) - ramp
    return (interpolation * (f32(1.0) - extrapolation_factor) + extrapolation * extrapolation_factor).astype(f32)
