"""lmrt: a quantization-first LLM inference runtime."""

from lmrt.config import ConfigError, EngineConfig, GenerationConfig

__version__ = "0.1.0"

__all__ = [
    "pipeline",
    "Pipeline",
    "Response",
    "EngineConfig",
    "GenerationConfig",
    "ConfigError",
    "RequestError",
    "PromptTooLongError",
    "system_info",
]


def __getattr__(name):
    # The compiled core is imported on first use, so `import lmrt` stays cheap and
    # configs can be built (and validated) without it.
    if name in ("pipeline", "Pipeline", "Response", "RequestError", "PromptTooLongError"):
        from lmrt import api as _p

        return getattr(_p, name)
    raise AttributeError(f"module 'lmrt' has no attribute {name!r}")


def system_info() -> dict:
    """Which CPU kernel path is in use, what this CPU supports, and the thread count."""
    from lmrt import _core

    k = _core.kernels
    return {
        "kernel_isa": k.active_isa(),
        "best_isa": k.best_isa(),
        "supported_isas": [n for n in ("scalar", "avx2", "avx512") if k.isa_supported(n)],
        "physical_cores": k.physical_cores(),
        "amx_bf16": k.amx_available(),
        "avx512_bf16": k.avx512bf16_available(),
        "tile_unit": k.best_tile_unit(),  # prefill_precision="bf16" needs one: "amx", "avx512bf16" or None
        "version": __version__,
    }
