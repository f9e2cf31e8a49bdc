"""load_checkpoint and ModelSpec against HF transformers (the reference no one here wrote)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import LLAMA3_ROPE_SCALING, make_tiny_llama, make_tiny_qwen2
from safetensors.numpy import load_file, save_file

import lmrt
from lmrt import _core
from lmrt._bf16 import bf16_bits_to_float32, float32_to_bf16_bits
from lmrt.formats import CheckpointError
from lmrt.loader import load_checkpoint
from lmrt.model_config import ModelSpec, UnsupportedModelError

# ---------------------------------------------------------------------- tensors vs the HF state dict


def hf_state_dict(path: Path, torch_dtype) -> dict[str, torch.Tensor]:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model.state_dict()


def expected_core_tensors(spec: ModelSpec, sd: dict[str, torch.Tensor], dtype: str) -> dict[str, np.ndarray]:
    """The core layout built from HF's own tensors with torch (cat + torch's bf16 rounding)."""

    def matrix(*tensors):
        t = torch.cat(tensors, dim=0)
        if dtype == "bfloat16":
            return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        return t.float().numpy()

    def vector(*tensors):
        return torch.cat(tensors).float().numpy()

    out = {"embed_tokens": matrix(sd["model.embed_tokens.weight"]), "norm": vector(sd["model.norm.weight"])}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        attn = [p + f"self_attn.{x}_proj" for x in "qkv"]
        out[f"layers.{i}.input_norm"] = vector(sd[p + "input_layernorm.weight"])
        out[f"layers.{i}.qkv_proj"] = matrix(*(sd[n + ".weight"] for n in attn))
        if spec.qkv_bias:
            out[f"layers.{i}.qkv_bias"] = vector(*(sd[n + ".bias"] for n in attn))
        out[f"layers.{i}.o_proj"] = matrix(sd[p + "self_attn.o_proj.weight"])
        out[f"layers.{i}.post_attn_norm"] = vector(sd[p + "post_attention_layernorm.weight"])
        out[f"layers.{i}.gate_up_proj"] = matrix(sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"])
        out[f"layers.{i}.down_proj"] = matrix(sd[p + "mlp.down_proj.weight"])
    if not spec.tie_word_embeddings:
        out["lm_head"] = matrix(sd["lm_head.weight"])
    return out


def assert_same_tensors(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype, name
        assert have.shape == want.shape, name
        assert have.flags.c_contiguous, name
        np.testing.assert_array_equal(have, want, err_msg=name)


CASES = {
    "llama-tied-f32": lambda d: make_tiny_llama(d, tied=True),
    "llama-untied-llama3-rope": lambda d: make_tiny_llama(
        d, tied=False, rope_scaling=LLAMA3_ROPE_SCALING, rope_theta=500000.0, max_position_embeddings=16384
    ),
    "llama-head-dim-32": lambda d: make_tiny_llama(d, tied=False, head_dim=32),
    "llama-sharded": lambda d: make_tiny_llama(d, tied=False, max_shard_size="20KB"),
    "llama-bf16": lambda d: make_tiny_llama(d, tied=False, dtype=torch.bfloat16),
    "llama-f16": lambda d: make_tiny_llama(d, tied=True, dtype=torch.float16),
    "qwen2-bias": lambda d: make_tiny_qwen2(d, tied=False),
    "qwen2-bias-tied-bf16-sharded": lambda d: make_tiny_qwen2(
        d, tied=True, dtype=torch.bfloat16, max_shard_size="20KB"
    ),
}
SOURCE_DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", list(CASES))
def test_tensors_match_hf_state_dict(tmp_path, case, dtype):
    path = CASES[case](tmp_path / case)
    source_dtype = next((t for k, t in SOURCE_DTYPES.items() if k in case), torch.float32)
    spec, tensors = load_checkpoint(path, dtype=dtype)
    sd = hf_state_dict(path, source_dtype)
    assert_same_tensors(tensors, expected_core_tensors(spec, sd, dtype))
    if "sharded" in case:
        assert (path / "model.safetensors.index.json").is_file()
        assert len(list(path.glob("*.safetensors"))) > 1


def test_spec_fields_match_hf_config(tmp_path):
    path = make_tiny_qwen2(tmp_path / "q", tied=True, eos_token_ids_generation=[2, 5])
    spec = ModelSpec.from_pretrained_dir(path)
    config = transformers.AutoConfig.from_pretrained(path)
    assert spec.architecture == "Qwen2ForCausalLM"
    assert (spec.vocab_size, spec.hidden_size, spec.intermediate_size) == (
        config.vocab_size,
        config.hidden_size,
        config.intermediate_size,
    )
    assert (spec.num_layers, spec.num_heads, spec.num_kv_heads) == (
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
    )
    assert spec.head_dim == config.hidden_size // config.num_attention_heads
    assert spec.rms_norm_eps == config.rms_norm_eps
    assert spec.rope_theta == config.rope_parameters["rope_theta"] == 1e6
    assert spec.tie_word_embeddings and spec.qkv_bias
    assert spec.bos_token_id == 1
    assert spec.eos_token_ids == (2, 5)  # config's int merged with generation_config's list
    core = spec.to_core("bfloat16")  # the C++ core's typed ModelSpec
    for name in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_layers",
        "num_heads",
        "num_kv_heads",
        "head_dim",
        "tie_word_embeddings",
        "qkv_bias",
    ):
        assert getattr(core, name) == getattr(spec, name), name
    assert core.rms_norm_eps == np.float32(spec.rms_norm_eps) and core.attention_scaling == spec.attention_scaling()
    np.testing.assert_array_equal(np.asarray(core.inv_freq, np.float32), spec.inv_freq())
    assert core.weight_dtype == _core.DType.bfloat16
    with pytest.raises(AttributeError):  # a typed class: a misspelt field is an error, not a new key
        core.num_layer = 3


def test_tied_checkpoint_that_still_stores_lm_head(tmp_path):
    path = make_tiny_llama(tmp_path / "m", tied=False)
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = True
    (path / "config.json").write_text(json.dumps(config))
    spec, tensors = load_checkpoint(path)
    assert spec.tie_word_embeddings and "lm_head" not in tensors


# ---------------------------------------------------------------------- RoPE vs transformers

ROPE_CONFIGS = {
    "llama-default": dict(architectures=["LlamaForCausalLM"], hidden_size=512, num_attention_heads=8),
    "llama-head-dim-48": dict(architectures=["LlamaForCausalLM"], hidden_size=384, num_attention_heads=8),
    "smollm2": dict(architectures=["LlamaForCausalLM"], hidden_size=576, num_attention_heads=9, rope_theta=100000.0),
    "llama3.1": dict(
        architectures=["LlamaForCausalLM"],
        hidden_size=4096,
        num_attention_heads=32,
        max_position_embeddings=131072,
        rope_parameters={"rope_theta": 500000.0, **LLAMA3_ROPE_SCALING},
    ),
    "linear-old-format": dict(
        architectures=["LlamaForCausalLM"],
        hidden_size=2048,
        num_attention_heads=16,
        rope_theta=10000.0,
        rope_scaling={"type": "linear", "factor": 4.0},
    ),
    "qwen2-yarn": dict(
        architectures=["Qwen2ForCausalLM"],
        hidden_size=3584,
        num_attention_heads=28,
        max_position_embeddings=131072,
        rope_theta=1000000.0,
        rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
    ),
    "mistral-head-dim-128": dict(
        architectures=["MistralForCausalLM"], hidden_size=5120, num_attention_heads=32, head_dim=128, rope_theta=1e6
    ),
}
for _config in ROPE_CONFIGS.values():
    _config.setdefault("max_position_embeddings", 8192)
    _config.update(vocab_size=1000, intermediate_size=64, num_hidden_layers=1, rms_norm_eps=1e-5)

HF_ROPE_SCRIPT = r"""
import json, sys
import numpy as np
import transformers
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding
classes = {
    "LlamaForCausalLM": (transformers.LlamaConfig, LlamaRotaryEmbedding),
    "Qwen2ForCausalLM": (transformers.Qwen2Config, Qwen2RotaryEmbedding),
    "MistralForCausalLM": (transformers.MistralConfig, MistralRotaryEmbedding),
}
result = {}
for name, config in json.loads(sys.stdin.read()).items():
    config_class, rope_class = classes[config["architectures"][0]]
    rope = rope_class(config_class.from_dict(config))
    result[name] = {"inv_freq_bits": rope.inv_freq.numpy().view(np.uint32).tolist(),
                    "attention_scaling": float(rope.attention_scaling)}
print(json.dumps(result))
"""


def hf_rope(cpu_capability: str | None) -> dict:
    """transformers' RoPE init for ROPE_CONFIGS, run in a fresh process (so torch's CPU path can be chosen)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if cpu_capability:
        env["ATEN_CPU_CAPABILITY"] = cpu_capability
    done = subprocess.run(
        [sys.executable, "-c", HF_ROPE_SCRIPT],
        input=json.dumps(ROPE_CONFIGS),
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hf_rope_scalar():
    return hf_rope("default")


@pytest.fixture(scope="module")
def hf_rope_native():
    return hf_rope(None)


@pytest.mark.parametrize("name", list(ROPE_CONFIGS))
def test_rope_equals_hf_scalar_path_exactly(name, hf_rope_scalar):
    """With torch's scalar kernels (correctly rounded powf), HF's inv_freq and ours agree bit for bit."""
    spec = ModelSpec.from_hf_config(ROPE_CONFIGS[name])
    want = np.array(hf_rope_scalar[name]["inv_freq_bits"], dtype=np.uint32).view(np.float32)
    np.testing.assert_array_equal(spec.inv_freq(), want)
    assert spec.attention_scaling() == hf_rope_scalar[name]["attention_scaling"]


@pytest.mark.parametrize("name", list(ROPE_CONFIGS))
def test_rope_within_one_ulp_of_hf_native_path(name, hf_rope_native):
    """torch's vectorised pow (Sleef, ~1 ulp) may differ in the last bit; never by more."""
    spec = ModelSpec.from_hf_config(ROPE_CONFIGS[name])
    want = np.array(hf_rope_native[name]["inv_freq_bits"], dtype=np.uint32).view(np.float32)
    np.testing.assert_array_max_ulp(spec.inv_freq(), want, maxulp=1)
    assert spec.attention_scaling() == hf_rope_native[name]["attention_scaling"]


def test_rope_reads_both_theta_spellings():
    base = dict(ROPE_CONFIGS["llama-default"])
    top_level = ModelSpec.from_hf_config({**base, "rope_theta": 123456.0})
    nested = ModelSpec.from_hf_config({**base, "rope_parameters": {"rope_type": "default", "rope_theta": 123456.0}})
    assert top_level.rope_theta == nested.rope_theta == 123456.0
    np.testing.assert_array_equal(top_level.inv_freq(), nested.inv_freq())
    assert ModelSpec.from_hf_config(base).rope_theta == 10000.0


# ---------------------------------------------------------------------- config errors


def config_with(**changes) -> dict:
    return {**ROPE_CONFIGS["llama-default"], **changes}


def test_unsupported_architecture_names_it_and_the_supported_list():
    with pytest.raises(UnsupportedModelError) as e:
        ModelSpec.from_hf_config(config_with(architectures=["GPT2LMHeadModel"]))
    message = str(e.value)
    assert "GPT2LMHeadModel" in message
    for supported in ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM"):
        assert supported in message


@pytest.mark.parametrize(
    "changes, words",
    [
        (dict(mlp_bias=True), "mlp_bias"),
        (dict(architectures=["Qwen2ForCausalLM"], use_sliding_window=True, sliding_window=4096), "use_sliding_window"),
        (dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "dynamic"),
        (dict(rope_scaling={"rope_type": "longrope", "factor": 2.0}), "longrope"),
        (dict(hidden_act="gelu"), "gelu"),
        (dict(attention_bias=True), "o_proj"),
        (dict(architectures=None), "no 'architectures' field"),
    ],
)
def test_unsupported_features_are_refused_clearly(changes, words):
    with pytest.raises(UnsupportedModelError, match=words):
        ModelSpec.from_hf_config(config_with(**changes))


def test_invalid_shapes_are_refused():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        ModelSpec.from_hf_config(config_with(num_key_value_heads=3))


def test_mistral_sliding_window_caps_the_context():
    spec = ModelSpec.from_hf_config(
        config_with(architectures=["MistralForCausalLM"], max_position_embeddings=32768, sliding_window=4096)
    )
    assert spec.max_position_embeddings == 4096


def test_qwen2_sliding_window_is_ignored_when_unused():
    spec = ModelSpec.from_hf_config(
        config_with(architectures=["Qwen2ForCausalLM"], use_sliding_window=False, sliding_window=4096)
    )
    assert spec.max_position_embeddings == 8192 and spec.qkv_bias


def test_eos_list_in_config():
    assert ModelSpec.from_hf_config(config_with(eos_token_id=[7, 8])).eos_token_ids == (7, 8)
    assert ModelSpec.from_hf_config(config_with(eos_token_id=None)).eos_token_ids == ()


# ---------------------------------------------------------------------- bf16, torch-free loading


def test_bf16_rounding_matches_torch_including_ties():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    bits[:4096] = (bits[:4096] & 0xFFFF0000) | 0x8000  # exact ties: round to even
    x = bits.view(np.float32)
    x = x[~np.isnan(x)]
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16_bits(x), want)
    np.testing.assert_array_equal(
        bf16_bits_to_float32(want), torch.from_numpy(want.view(np.int16)).view(torch.bfloat16).float().numpy()
    )
    assert np.isnan(bf16_bits_to_float32(float32_to_bf16_bits(np.array([np.nan], np.float32))))[0]


def test_loading_does_not_import_torch(tiny_qwen2):
    code = (
        "import sys; from lmrt.loader import load_checkpoint; import lmrt.default_model; "
        f"spec, tensors = load_checkpoint({str(tiny_qwen2)!r}, dtype='bfloat16'); spec.inv_freq(); "
        "bad = [m for m in ('torch', 'transformers', 'gguf') if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env=dict(os.environ, PYTHONPATH=str(Path(lmrt.__file__).resolve().parents[1])),
    )


# ---------------------------------------------------------------------- checkpoint errors


def test_missing_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope.*config\.json"):
        load_checkpoint(tmp_path / "nope")


def test_missing_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        load_checkpoint(tmp_path)


def test_no_safetensors(tmp_path, tiny_llama):
    (tiny_llama / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors files in .*tiny-llama"):
        load_checkpoint(tiny_llama)


def test_invalid_dtype_argument(tiny_llama):
    with pytest.raises(ValueError, match="float16"):
        load_checkpoint(tiny_llama, dtype="float16")


def _rewrite(file: Path, header: dict | bytes, data: bytes) -> None:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    file.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def _split(file: Path) -> tuple[dict, bytes]:
    raw = file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_truncated_file(tiny_llama):
    file = tiny_llama / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*outside the data section.*truncated"):
        load_checkpoint(tiny_llama)


def test_file_shorter_than_header_length_field(tiny_llama):
    (tiny_llama / "model.safetensors").write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated \(2 bytes"):
        load_checkpoint(tiny_llama)


def test_header_length_beyond_file(tiny_llama):
    file = tiny_llama / "model.safetensors"
    file.write_bytes(struct.pack("<Q", 10**9) + b"{}")
    with pytest.raises(
        CheckpointError, match=r"model\.safetensors: header length 1000000000 is beyond the file size 10"
    ):
        load_checkpoint(tiny_llama)


def test_bad_json_header(tiny_llama):
    file = tiny_llama / "model.safetensors"
    _, data = _split(file)
    _rewrite(file, b"{not json", data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: header is not valid JSON"):
        load_checkpoint(tiny_llama)


def test_offsets_outside_data(tiny_llama):
    file = tiny_llama / "model.safetensors"
    header, data = _split(file)
    entry = header["model.norm.weight"]
    entry["data_offsets"] = [len(data) - 4, len(data) + 252]
    _rewrite(file, header, data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'model\.norm\.weight' has data offsets"):
        load_checkpoint(tiny_llama)


def test_offsets_disagree_with_shape(tiny_llama):
    file = tiny_llama / "model.safetensors"
    header, data = _split(file)
    begin, _ = header["model.norm.weight"]["data_offsets"]
    header["model.norm.weight"]["data_offsets"] = [begin, begin + 8]
    _rewrite(file, header, data)
    with pytest.raises(CheckpointError, match=r"'model\.norm\.weight' of shape \[64\] F32 needs 256 bytes"):
        load_checkpoint(tiny_llama)


def test_unsupported_tensor_dtype(tiny_llama):
    file = tiny_llama / "model.safetensors"
    tensors = load_file(file)
    tensors["model.norm.weight"] = tensors["model.norm.weight"].astype(np.float64)
    save_file(tensors, file)
    with pytest.raises(CheckpointError, match="dtype F64 is not supported"):
        load_checkpoint(tiny_llama)


def test_missing_tensor_is_named(tiny_llama):
    file = tiny_llama / "model.safetensors"
    tensors = load_file(file)
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, file)
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.1\.mlp\.up_proj\.weight"):
        load_checkpoint(tiny_llama)


def test_missing_lm_head_hints_at_tying(tmp_path):
    path = make_tiny_llama(tmp_path / "m", tied=True)
    config = json.loads((path / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"lm_head\.weight.*tie_word_embeddings=false"):
        load_checkpoint(path)


def test_wrong_shape_names_tensor_expected_and_found(tiny_llama):
    config = json.loads((tiny_llama / "config.json").read_text())
    config["intermediate_size"] = 80
    (tiny_llama / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"'model\.layers\.0\.mlp\.gate_proj\.weight' has shape \[96, 64\], expected \[80, 64\]"
    ):
        load_checkpoint(tiny_llama)


def test_sharded_index_naming_a_missing_shard(tmp_path):
    path = make_tiny_llama(tmp_path / "m", max_shard_size="20KB")
    shard = sorted(path.glob("model-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        load_checkpoint(path)
