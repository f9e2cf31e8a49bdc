"""The resolve step (lmrt/resolve.py) on hand-made machines, and the typed boundary it hands the core: every
"auto" and None becomes a concrete value here, and the C++ side takes typed fields and enums by name only."""

from __future__ import annotations

import dataclasses

import pytest

from lmrt import _core
from lmrt.config import ConfigError, EngineConfig
from lmrt.model_config import ModelSpec
from lmrt.resolve import DEFAULT_CACHE_FRACTION, DEFAULT_MAX_NUM_BATCHED_TOKENS, Machine, resolve

GIB = 2**30
SPEC = ModelSpec(
    architecture="LlamaForCausalLM",
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_layers=30,
    num_heads=9,
    num_kv_heads=3,
    head_dim=64,
    rms_norm_eps=1e-5,
    rope_theta=1e5,
    rope_scaling=None,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    qkv_bias=False,
    bos_token_id=1,
    eos_token_ids=(2,),
    weight_format="w4",
    group_size=32,
)
# The default model's K and V: 30 layers x 3 heads x 64 x 2 x 4 bytes (float32) per token.
F32_BYTES_PER_TOKEN = 30 * 3 * 64 * 2 * 4
ZEN4 = Machine(physical_cores=2, available_ram_bytes=24 * GIB, tile_units=("avx512bf16", "model"))
AVX2 = Machine(physical_cores=8, available_ram_bytes=4 * GIB, tile_units=("model",))


def test_auto_becomes_concrete():
    r = resolve(EngineConfig(), SPEC, ZEN4)
    assert (r.weight_dtype, r.kv_dtype, r.lm_head_dtype) == (
        "float32",
        "int8",
        "int8",
    )  # kv "auto" is int8 (DEFAULT_KV_DTYPE)
    assert (r.num_threads, r.session_len, r.max_num_batched_tokens) == (2, 8192, DEFAULT_MAX_NUM_BATCHED_TOKENS)
    assert (r.prefill_precision, r.tile_unit) == ("bf16", "avx512bf16")
    r = resolve(
        EngineConfig(dtype="bfloat16", lm_head_dtype="dense", num_threads=3),
        dataclasses.replace(SPEC, weight_format="dense", group_size=None),
        AVX2,
    )
    assert (r.weight_dtype, r.kv_dtype, r.lm_head_dtype, r.num_threads) == ("bfloat16", "int8", "dense", 3)
    assert (r.prefill_precision, r.tile_unit) == ("fp32", None)  # no hardware unit: the exact prefill


def test_kv_cache_sized_by_the_sessions_then_capped_by_ram():
    one = resolve(EngineConfig(max_batch_size=1), SPEC, ZEN4)
    assert one.num_blocks * one.block_size == 8192 and one.kv_cache_sizing == "what 1 session of 8,192 tokens needs"
    capped = resolve(EngineConfig(max_batch_size=16, kv_cache_dtype="float32"), SPEC, AVX2)
    cap_blocks = int(4 * GIB * DEFAULT_CACHE_FRACTION) // (64 * F32_BYTES_PER_TOKEN)
    assert capped.num_blocks == cap_blocks < 16 * 8192 // 64
    assert capped.kv_cache_sizing.endswith("capped at 10% of the available RAM")
    given = resolve(EngineConfig(cache_memory_gib=0.5, kv_cache_dtype="float32"), SPEC, AVX2)
    assert given.num_blocks == int(0.5 * GIB) // (64 * F32_BYTES_PER_TOKEN)
    with pytest.raises(ConfigError, match="holds no KV block"):
        resolve(EngineConfig(cache_memory_gib=1e-6), SPEC, AVX2)


def test_refusals_name_the_setting():
    with pytest.raises(ConfigError) as e:
        resolve(EngineConfig(session_len=9000), SPEC, ZEN4)
    assert e.value.field == "session_len" and "8192" in e.value.requirement
    with pytest.raises(ConfigError, match="AMX-BF16.*prefill_precision='fp32'"):
        resolve(EngineConfig(prefill_precision="bf16"), SPEC, AVX2)
    with pytest.raises(ConfigError, match="unset LMRT_TILE_UNIT"):
        resolve(EngineConfig(), SPEC, dataclasses.replace(AVX2, env_tile_unit="amx"))
    with pytest.raises(ConfigError, match="choose 'amx', 'avx512bf16' or 'model'"):
        resolve(EngineConfig(), SPEC, dataclasses.replace(AVX2, env_tile_unit="fast"))
    # LMRT_TILE_UNIT=model runs bf16 prefill on the software model anywhere (tests).
    r = resolve(EngineConfig(), SPEC, dataclasses.replace(AVX2, env_tile_unit="model"))
    assert (r.prefill_precision, r.tile_unit) == ("bf16", "model")


def test_engine_options_are_typed():
    r = resolve(EngineConfig(kv_cache_dtype="bfloat16", max_batch_size=3), SPEC, ZEN4)
    o = r.engine_options()
    assert (o.k_dtype, o.v_dtype, o.prefill_precision, o.tile_unit) == (
        _core.KVDType.bfloat16,
        _core.KVDType.bfloat16,
        _core.PrefillPrecision.bf16,
        _core.TileUnit.avx512bf16,
    )
    assert (o.num_blocks, o.block_size, o.max_batch_size, o.session_len) == (r.num_blocks, 64, 3, 8192)
    with pytest.raises(TypeError):  # an enum takes its own values, never a string that could fall through
        o.k_dtype = "int8"
    with pytest.raises(AttributeError):  # a misspelt field is an error, not a new key
        o.num_block = 3
    with pytest.raises(KeyError):
        _core.KVDType.__members__["fp8"]


def test_the_engine_refuses_options_it_was_not_given():
    """The core has no defaults: an EngineOptions left as constructed is refused, naming the field."""
    with pytest.raises(ValueError, match="EngineOptions: num_blocks must be >= 1"):
        _core.Engine(SPEC.to_core("float32"), {}, _core.EngineOptions())


@pytest.mark.skipif(_core.kernels.cuda_available()[0], reason="a CUDA device is here: the refusal cannot be shown")
def test_the_engine_refuses_a_cuda_backend_it_cannot_run(tmp_path):
    """The core's own refusal (make_backend), below the config's: device cuda names what is missing."""
    from conftest import make_tiny_llama

    from lmrt.loader import load_weights

    spec, weights = load_weights(make_tiny_llama(tmp_path / "tiny"))
    o = resolve(EngineConfig(max_batch_size=1, cache_memory_gib=0.01), spec, ZEN4).engine_options()
    o.device = _core.Device.cuda
    with pytest.raises(ValueError, match="device 'cuda'.*use device 'cpu'"):
        _core.Engine(spec.to_core("float32"), weights, o)


def test_kv_cache_capacity_per_dtype():
    """Under the same cache_memory_gib (1 GiB, the default model's shape and engine defaults), int8 holds >= 1.9x
    and int4 >= 3.5x the tokens of bf16 (issue 12). At head_dim 64 a bf16 row is 128 bytes; an int8 row 64 codes +
    3 bytes of scale and zero point; an int4 row 32 codes + 3 bytes (V) or + 3 bytes per channel per 64-token block
    (K), and int4 K's staging slots (8-bit rows of the blocks being filled) come out of the same budget."""
    blocks = {
        dt: resolve(EngineConfig(cache_memory_gib=1.0, kv_cache_dtype=dt), SPEC, ZEN4).num_blocks
        for dt in ("float32", "bfloat16", "int8", "int4", "int4-per-token", "k8v4")
    }
    assert blocks["float32"] * 2 <= blocks["bfloat16"] + 1
    assert blocks["int8"] >= 1.9 * blocks["bfloat16"], blocks
    assert blocks["int4"] >= 3.5 * blocks["bfloat16"], blocks
    assert blocks["int4-per-token"] >= 3.5 * blocks["bfloat16"], blocks
    KV = _core.KVDType
    assert _core.kv_bytes_per_block(30, 64, 3, 64, KV.int8, KV.int8) == 30 * 64 * 3 * 2 * (64 + 3)
    assert _core.kv_bytes_per_block(30, 64, 3, 64, KV.int4_channel, KV.int4) == 30 * 3 * (64 * 32 + 64 * 3 + 64 * 35)
    slots = _core.kv_stage_slots(16, 512, 64)
    assert slots == 2 * 16 + 8 + 1
    staging = slots * _core.kv_bytes_per_stage_slot(30, 64, 3, 64)
    assert blocks["int4"] == (2**30 - staging) // _core.kv_bytes_per_block(30, 64, 3, 64, KV.int4_channel, KV.int4)


def test_int4_kv_needs_a_head_size_multiple_of_32():
    odd = dataclasses.replace(SPEC, head_dim=48)
    with pytest.raises(ConfigError, match="multiple of 32"):
        resolve(EngineConfig(kv_cache_dtype="int4"), odd, ZEN4)
    assert resolve(EngineConfig(kv_cache_dtype="int8"), odd, ZEN4).kv_dtype == "int8"


def test_linear_precision_resolves_and_refuses_dense_models():
    assert resolve(EngineConfig(), SPEC, ZEN4).linear_precision == "fp32"  # "auto": exact
    r = resolve(EngineConfig(linear_precision="int8"), SPEC, ZEN4)
    assert r.linear_precision == "int8" and r.engine_options().linear_precision == _core.LinearPrecision.int8
    with pytest.raises(ConfigError, match="4-bit weights, and this model's are dense.*'fp32'"):
        resolve(
            EngineConfig(linear_precision="int8"),
            dataclasses.replace(SPEC, weight_format="dense", group_size=None),
            ZEN4,
        )
    with pytest.raises(ConfigError, match="choose 'auto', 'fp32' or 'int8'"):
        EngineConfig(linear_precision="int4")


@pytest.mark.skipif(_core.kernels.cuda_available()[0], reason="a CUDA device is here: the refusal cannot be shown")
def test_device_cuda_without_a_device_is_refused_with_what_is_missing():
    ok, why = _core.kernels.cuda_available()
    with pytest.raises(ConfigError) as e:
        resolve(EngineConfig(device="cuda"), SPEC, ZEN4)
    assert e.value.field == "device"
    assert why in e.value.requirement and "'cpu'" in e.value.requirement


def test_kv_cache_sizing_on_the_gpu_takes_its_free_memory():
    # device "cuda" sizes an automatic pool from the GPU's free memory (resolve reads it), and says so
    from lmrt.resolve import _kv_blocks

    cfg = EngineConfig(max_batch_size=16)  # 16 x 128 blocks of 1 MiB wanted, 819 allowed
    num, how = _kv_blocks(cfg, 8192, 1 << 20, 0, 8 * GIB, "free GPU memory")
    assert num == int(8 * GIB * 0.1) // (1 << 20) and how.endswith("capped at 10% of the free GPU memory")
    if _core.kernels.cuda_available()[0]:
        free, total = _core.kernels.cuda_memory()
        assert 0 < free <= total
    else:
        with pytest.raises(RuntimeError, match="no CUDA device|no CUDA backend"):
            _core.kernels.cuda_memory()


def test_the_op_set_model_resolves_to_what_it_runs():
    # LMRT_OPS_MODEL on the CPU (device "cuda" resolves the same way where a device is found): fp32 activations,
    # prefill on the machine's bf16 unit as the CPU model's, a dense output matrix for 4-bit weights, and
    # int4-per-channel keys with their staging slots
    machine = dataclasses.replace(ZEN4, env_ops_model=True)
    r = resolve(EngineConfig(cache_memory_gib=0.1), SPEC, machine)
    assert (r.ops_model, r.prefill_precision, r.tile_unit, r.linear_precision, r.lm_head_dtype) == (
        True,
        "bf16",
        "avx512bf16",
        "fp32",
        "dense",
    )
    r = resolve(EngineConfig(cache_memory_gib=0.1, prefill_precision="fp32"), SPEC, machine)
    assert (r.prefill_precision, r.tile_unit, r.step_graphs) == ("fp32", None, True)
    assert not resolve(EngineConfig(cache_memory_gib=0.1, enforce_eager=True), SPEC, machine).step_graphs
    assert r.engine_options().ops_model and not resolve(EngineConfig(cache_memory_gib=0.1), SPEC, ZEN4).ops_model
    with pytest.raises(ConfigError, match="fp32"):
        resolve(EngineConfig(linear_precision="int8"), SPEC, machine)
    with pytest.raises(ConfigError, match="dense output matrix"):
        resolve(EngineConfig(lm_head_dtype="int8"), SPEC, machine)
    r = resolve(EngineConfig(kv_cache_dtype="int4", cache_memory_gib=0.1), SPEC, machine)  # staged, as the CPU's
    o = r.engine_options()
    assert (o.k_dtype, o.v_dtype, r.kv_dtype) == (_core.KVDType.int4_channel, _core.KVDType.int4, "int4")


def test_device_cuda_resolves_bf16_prefill_on_the_tensor_cores(monkeypatch):
    # resolve's cuda branch, the device lookups answered as a GPU with 8 GiB free would (the engine itself is not
    # built here): prefill "auto" -> bf16 (steps of 16+ rows on the tensor cores), "fp32" stays exact; int8
    # activations refused by name
    monkeypatch.setattr(_core.kernels, "cuda_available", lambda: (True, "a stub GPU"))
    monkeypatch.setattr(_core.kernels, "cuda_memory", lambda: (8 * GIB, 16 * GIB))
    r = resolve(EngineConfig(device="cuda"), SPEC, ZEN4)
    assert (r.device, r.ops_model, r.prefill_precision, r.tile_unit, r.weight_dtype) == (
        "cuda",
        True,
        "bf16",
        None,
        "bfloat16",
    )
    assert r.step_graphs and r.engine_options().step_graphs  # decode steps as CUDA graphs, unless enforce_eager
    assert not resolve(EngineConfig(device="cuda", enforce_eager=True), SPEC, ZEN4).step_graphs
    assert not resolve(EngineConfig(), SPEC, ZEN4).step_graphs
    assert resolve(EngineConfig(device="cuda", prefill_precision="fp32"), SPEC, ZEN4).prefill_precision == "fp32"
    assert resolve(EngineConfig(device="cuda", prefill_precision="bf16"), SPEC, ZEN4).prefill_precision == "bf16"
    with pytest.raises(ConfigError, match="no int8 yet"):
        resolve(EngineConfig(device="cuda", linear_precision="int8"), SPEC, ZEN4)
