"""Tiny random HF models, saved with save_pretrained, for comparing lmrt against transformers.

Builders are plain functions (import them: ``from conftest import make_tiny_llama``)
so other test files can make the variants they need; each returns the checkpoint dir.
torch and transformers are imported by the builders, not here: the kernel, tokenizer, engine-bookkeeping
and CLI tests run without them.

Tiers: ``pytest`` runs the everyday tier (minutes); ``pytest --slow`` adds the tests marked ``slow``
(the default model against HF transformers and llama.cpp's figures, end to end). CI runs both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


def _torch_and_transformers():
    return pytest.importorskip("torch"), pytest.importorskip("transformers")


LLAMA3_ROPE_SCALING = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}

TINY_SHAPE = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # GQA, 2 query heads per kv head
    max_position_embeddings=256,
    rms_norm_eps=1e-5,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def randomize_(model, seed: int = 0) -> None:
    """Give every parameter a scale that keeps activations O(1) and logits spread (std ~3).

    Linear weights ~ N(0, 1/fan_in); embeddings and lm_head ~ N(0, 9/H); norm weights
    ~ 1 + N(0, 0.1^2); biases ~ N(0, 0.5^2) so that a dropped bias would show.
    """
    torch, _ = _torch_and_transformers()
    generator = torch.Generator().manual_seed(seed)
    hidden_size = model.config.hidden_size
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if "norm" in name:
                value = 1.0 + 0.1 * noise
            elif name.endswith(".bias"):
                value = 0.5 * noise
            elif "embed_tokens" in name or "lm_head" in name:
                value = noise * (3.0 / hidden_size**0.5)
            else:
                value = noise / param.shape[1] ** 0.5
            param.copy_(value.to(param.dtype))


def _save(model, path: Path, dtype, max_shard_size, eos_token_ids_generation) -> Path:
    torch, _ = _torch_and_transformers()
    model = model.to(dtype or torch.float32)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    if eos_token_ids_generation is not None:
        model.generation_config.eos_token_id = list(eos_token_ids_generation)
    model.save_pretrained(path, **kwargs)
    return Path(path)


def make_tiny_llama(
    path: Path,
    tied: bool = True,
    rope_scaling: dict | None = None,
    dtype=None,
    max_shard_size: str | None = None,
    seed: int = 0,
    eos_token_ids_generation: list[int] | None = None,
    **config_overrides,
) -> Path:
    """A 2-layer random LlamaForCausalLM (GQA) saved to ``path``; returns ``path``."""
    torch, transformers = _torch_and_transformers()
    shape = {**TINY_SHAPE, **config_overrides}
    if rope_scaling is not None:
        shape["rope_parameters"] = {"rope_theta": shape.pop("rope_theta", 10000.0), **rope_scaling}
    config = transformers.LlamaConfig(tie_word_embeddings=tied, **shape)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    randomize_(model, seed)
    return _save(model, path, dtype, max_shard_size, eos_token_ids_generation)


def make_tiny_qwen2(
    path: Path,
    tied: bool = False,
    dtype=None,
    max_shard_size: str | None = None,
    seed: int = 0,
    eos_token_ids_generation: list[int] | None = None,
    **config_overrides,
) -> Path:
    """A 2-layer random Qwen2ForCausalLM (q/k/v bias, GQA) saved to ``path``; returns ``path``."""
    torch, transformers = _torch_and_transformers()
    shape = {**TINY_SHAPE, "rope_theta": 1000000.0, **config_overrides}
    rope_theta = shape.pop("rope_theta")
    config = transformers.Qwen2Config(
        tie_word_embeddings=tied, rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, **shape
    )
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(config)
    randomize_(model, seed)
    return _save(model, path, dtype, max_shard_size, eos_token_ids_generation)


@pytest.fixture
def tiny_llama(tmp_path) -> Path:
    """Tied-embedding tiny Llama, float32."""
    return make_tiny_llama(tmp_path / "tiny-llama")


@pytest.fixture
def tiny_qwen2(tmp_path) -> Path:
    """Untied tiny Qwen2 with q/k/v bias, float32."""
    return make_tiny_qwen2(tmp_path / "tiny-qwen2")
