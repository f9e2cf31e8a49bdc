"""lmrt: a quantization-first LLM inference runtime."""
__version__ = "0.1.0"
