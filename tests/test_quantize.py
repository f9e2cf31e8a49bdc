"""quantize/: the 4-bit quantizer and AutoAWQ gemm packing, the written checkpoint, AWQ's scale search, the CLI.

Everything runs on tiny random models (conftest.make_tiny_llama) in seconds.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file

try:
    import quantize  # noqa: F401  (installed with the wheel)
except ImportError:  # a source checkout: the package sits beside tests/ (appended, so an installed lmrt still wins)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from conftest import make_tiny_llama

from lmrt.formats.awq import AWQ_ORDER, dequantize_awq, pack_awq, unpack_awq
from quantize import auto_scale, cli, evaluate, pre_quant, writer
from quantize.quantizer import QuantizedWeight, fake_quantize

LICENSES = Path("/usr/share/common-licenses")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread is fastest, and on a busy machine a second one mostly waits to be scheduled."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_weight(out_features=48, in_features=128, seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(out_features, in_features, generator=generator) * torch.rand(in_features, generator=generator) * 2
    w[:3, :32] = w[:3, :32].abs() + 0.5  # all-positive groups: the zero point clamps at 0
    w[3, 32:64] = 0.25  # a constant group: scale clamps at its floor
    return w


def test_quantizer_round_trip_is_exact():
    w = _random_weight()
    for group_size in (32, 64, 128):
        qw = QuantizedWeight.from_weight(w, group_size)
        assert qw.q.dtype == torch.uint8 and int(qw.q.max()) <= 15 and int(qw.zeros.max()) <= 15
        packed = qw.to_awq()
        restored = torch.from_numpy(
            dequantize_awq(*(packed[k].numpy() for k in ("qweight", "qzeros", "scales")), group_size).T.copy()
        )  # [in, out] -> [out, in]
        assert torch.equal(restored, fake_quantize(w, group_size))
        assert torch.equal(qw.dequantize(), fake_quantize(w, group_size))
        # within one step (half a step of rounding, up to half a step of zero-point rounding at the ends)
        step = qw.scales.float().repeat_interleave(group_size, dim=1)
        assert bool(((restored - w).abs() <= step * 1.001)[4:].all())  # rows 0-3: zero point clamped at 0 (as AutoAWQ)


def test_unpack_inverts_pack():
    values = torch.randint(0, 16, (64, 8), dtype=torch.uint8).numpy()
    zeros = values[:2]
    q, z, _ = unpack_awq(*pack_awq(values, zeros, torch.ones(2, 8, dtype=torch.float16).numpy()))
    assert (q == values).all() and (z == zeros).all()


def _decode_bit_by_bit(words: torch.Tensor) -> list[list[int]]:
    """DESIGN.md's spec read literally: nibble i (bits 4i..4i+3) of word c holds column 8c + [0,2,4,6,1,3,5,7][i]."""
    order = [0, 2, 4, 6, 1, 3, 5, 7]
    rows = []
    for row in words.tolist():
        values = [0] * (8 * len(row))
        for c, word in enumerate(row):
            word &= 0xFFFFFFFF
            for i in range(8):
                nibble = sum(((word >> (4 * i + b)) & 1) << b for b in range(4))
                values[8 * c + order[i]] = nibble
        rows.append(values)
    return rows


def test_packing_bit_layout_matches_design():
    assert AWQ_ORDER == (0, 2, 4, 6, 1, 3, 5, 7)
    # columns 0..7 holding 0..7: nibbles in order 0,2,4,6,1,3,5,7 from the low bits
    one = torch.ones(1, 8, dtype=torch.float16).numpy()

    def word(values):
        return pack_awq(values, values, one)[0].tolist()

    assert word(torch.arange(8, dtype=torch.uint8)[None].numpy()) == [[0x75316420]]
    assert word(torch.arange(8, 16, dtype=torch.uint8)[None].numpy()) == [
        [0xFDB9ECA8 - 2**32]
    ]  # int32 two's complement
    assert word(torch.full((1, 8), 15, dtype=torch.uint8).numpy()) == [[-1]]

    w = _random_weight(out_features=40, in_features=64, seed=1)
    qw = QuantizedWeight.from_weight(w, 32)
    packed = qw.to_awq()
    assert packed["qweight"].dtype == torch.int32 and packed["qweight"].shape == (64, 5)
    assert packed["qzeros"].dtype == torch.int32 and packed["qzeros"].shape == (2, 5)
    assert packed["scales"].dtype == torch.float16 and packed["scales"].shape == (2, 40)
    q = _decode_bit_by_bit(packed["qweight"])  # [in][out]
    z = _decode_bit_by_bit(packed["qzeros"])  # [in/g][out]
    s = packed["scales"].float().tolist()
    assert q == qw.q.t().tolist() and z == qw.zeros.t().tolist()
    expected = fake_quantize(w, 32)
    for k in range(64):
        for n in range(40):  # w[k, n] = (q[k, n] - z[k/g, n]) * s[k/g, n]
            assert (q[k][n] - z[k // 32][n]) * s[k // 32][n] == float(expected[n, k])


def _rtn_checkpoint(tmp_path, group_size=32, **overrides) -> tuple[Path, Path, object]:
    source = make_tiny_llama(tmp_path / "fp", **overrides)
    model = evaluate.load_model(source)
    quantized = pre_quant.run_rtn(model, group_size)
    out = tmp_path / "awq"
    writer.write_checkpoint(model, quantized, source, out, group_size)
    return source, out, model


@pytest.mark.parametrize("tied", [True, False])
def test_written_checkpoint_config_and_shapes(tmp_path, tied):
    source, out, model = _rtn_checkpoint(tmp_path, tied=tied)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq",
        "bits": 4,
        "group_size": 32,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }
    assert (out / "generation_config.json").is_file()
    tensors = load_file(out / "model.safetensors")
    hidden, inter, kv = 64, 96, 2 * 16  # 2 KV heads of 16
    shapes = {  # (in, out)
        "self_attn.q_proj": (hidden, hidden),
        "self_attn.k_proj": (hidden, kv),
        "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (hidden, inter),
        "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    for layer in range(2):
        for name, (in_features, out_features) in shapes.items():
            prefix = f"model.layers.{layer}.{name}"
            assert tensors[f"{prefix}.qweight"].dtype == torch.int32
            assert tensors[f"{prefix}.qweight"].shape == (in_features, out_features // 8)
            assert tensors[f"{prefix}.qzeros"].shape == (in_features // 32, out_features // 8)
            assert tensors[f"{prefix}.scales"].dtype == torch.float16
            assert tensors[f"{prefix}.scales"].shape == (in_features // 32, out_features)
            assert f"{prefix}.weight" not in tensors
        assert tensors[f"model.layers.{layer}.input_layernorm.weight"].dtype == torch.float16
    assert tensors["model.embed_tokens.weight"].shape == (128, hidden)
    assert ("lm_head.weight" in tensors) == (not tied)
    # the file dequantizes to exactly the weights the model was evaluated with
    reloaded = evaluate.load_awq_dequantized(out)
    quantized_weights = {f"{name}.weight" for name in pre_quant.quantizable_linears(model)}
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in quantized_weights:
                assert torch.equal(reloaded.get_parameter(name), param)
            else:  # stored as float16
                param.copy_(param.half().float())
        ids = torch.randint(0, 128, (1, 24))
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)


def _outlier_inputs(hidden_size: int, seed: int = 0) -> torch.Tensor:
    """Layer inputs [4, 32, H] with a few salient channels, as real LLM activations have."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 32, hidden_size, generator=generator)
    x[..., :4] *= 20.0
    return x


def _block_error(layer, reference_layer, x, position_embeddings) -> float:
    with torch.no_grad():
        return float(
            (
                pre_quant._run_layer(layer, x, position_embeddings)
                - pre_quant._run_layer(reference_layer, x, position_embeddings)
            )
            .pow(2)
            .mean()
        )


def test_auto_scale_lowers_block_error_vs_rtn(tmp_path):
    import copy

    model = evaluate.load_model(make_tiny_llama(tmp_path / "fp"))
    layer = model.model.layers[0]
    x = _outlier_inputs(64)
    position_embeddings = model.model.rotary_emb(x[:1], torch.arange(x.shape[1])[None])
    rtn, awq = copy.deepcopy(layer), copy.deepcopy(layer)
    for name in pre_quant.LINEAR_NAMES:
        pre_quant._quantize_in_place(rtn.get_submodule(name), 32)
    _, report = pre_quant.quantize_layer(awq, x, position_embeddings, 32, clip=False)
    assert set(report.alphas) == {"qkv", "gate_up", "down"}  # GQA: no v->o scale, as AutoAWQ
    assert all(gain <= 1.0 for gain in report.gain.values())
    assert report.gain["qkv"] < 0.9 and report.alphas["qkv"] > 0
    rtn_error, awq_error = (
        _block_error(rtn, layer, x, position_embeddings),
        _block_error(awq, layer, x, position_embeddings),
    )
    assert awq_error < 0.8 * rtn_error, (awq_error, rtn_error)


def test_apply_scale_keeps_the_function():
    norm = torch.nn.Module()
    norm.weight = torch.nn.Parameter(torch.rand(16) + 0.5)
    linear = torch.nn.Linear(16, 8, bias=False)
    x = torch.randn(5, 16)
    before = linear(x * norm.weight)
    auto_scale.apply_scale(norm, [linear], torch.rand(16) + 0.5)
    assert torch.allclose(linear(x * norm.weight), before, atol=1e-5)


def test_group_size_default_and_refusal():
    sizes = {"model.layers.0.self_attn.q_proj": 576, "model.layers.0.mlp.down_proj": 1536}
    assert cli.pick_group_size(sizes, None) == 64
    assert cli.pick_group_size(sizes, 32) == 32
    with pytest.raises(
        ValueError,
        match=r"--group-size 128 does not divide the input size 576 of model.layers.0.self_attn.q_proj; use --group-size 64",
    ):
        cli.pick_group_size(sizes, 128)


def _tiny_tokenizer(path: Path, text: str) -> None:
    """A 128-token BPE tokenizer (the tiny model's vocabulary), trained on ``text``, saved beside the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=128, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], limit_alphabet=60)
    tokenizer.train_from_iterator([text], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>").save_pretrained(path)


@pytest.mark.skipif(not (LICENSES / "GPL-3").is_file(), reason="needs /usr/share/common-licenses")
def test_cli_end_to_end_on_a_tiny_model(tmp_path, capsys):
    source = make_tiny_llama(tmp_path / "fp", hidden_size=96, intermediate_size=160)
    _tiny_tokenizer(source, (LICENSES / "Apache-2.0").read_text())
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text((LICENSES / "GPL-3").read_text()[:6000])
    out = tmp_path / "awq"
    argv = [
        str(source),
        "--out",
        str(out),
        "--calib-file",
        str(LICENSES / "BSD"),
        "--calib-samples",
        "4",
        "--calib-seqlen",
        "64",
        "--eval-file",
        str(eval_file),
        "--threads",
        "1",
    ]
    assert cli.main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["group_size"] == 32  # 96 rules out 128 and 64
    assert report["calibration"]["samples"] == 4 and report["calibration"]["seqlen"] == 64
    assert math.isfinite(report["ppl_before"]) and math.isfinite(report["ppl_after"])
    assert report["bytes_after"] < report["bytes_before"]
    assert len(report["layers"]) == 2
    assert (out / "report.md").read_text() in capsys.readouterr().out
    assert {"tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()
    }

    assert cli.main(argv[:1] + ["--method", "rtn", "--out", str(tmp_path / "rtn"), "--eval-file", str(eval_file)]) == 0
    assert json.loads((tmp_path / "rtn" / "report.json").read_text())["calibration"] is None

    assert cli.main([str(source), "--out", str(tmp_path / "bad"), "--group-size", "64"]) == 2
    assert (
        "--group-size 64 does not divide the input size 96 of model.layers.0.self_attn.q_proj; use --group-size 32"
        in capsys.readouterr().err
    )


def test_lmrt_runs_what_lmrt_quantize_writes(tmp_path):
    """`lmrt quantize` output, loaded by the lmrt engine, gives the logits HF gives on the
    checkpoint's own dequantisation (so lmrt reloads exactly the weights that were written)."""
    import lmrt
    from lmrt.cli import main as lmrt_main
    from quantize.evaluate import load_awq_dequantized

    source = make_tiny_llama(tmp_path / "fp", hidden_size=96, intermediate_size=160)
    _tiny_tokenizer(source, (LICENSES / "Apache-2.0").read_text())
    out = tmp_path / "awq"
    assert (
        lmrt_main(
            [
                "quantize",
                str(source),
                "--out",
                str(out),
                "--calib-file",
                str(LICENSES / "BSD"),
                "--calib-samples",
                "4",
                "--calib-seqlen",
                "64",
                "--eval-file",
                str(LICENSES / "BSD"),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    ids = list(range(5, 105))
    with torch.no_grad():
        ref = load_awq_dequantized(out)(torch.tensor([ids])).logits[0].double().numpy()
    cfg = lmrt.EngineConfig(
        lm_head_dtype="dense",
        num_threads=1,
        cache_memory_gib=0.01,
        block_size=16,
        prefill_precision="fp32",
        kv_cache_dtype="float32",
    )
    with lmrt.pipeline(out, cfg) as pipe:
        assert pipe.info()["weight_format"] == "w4"
        ours = pipe.get_logits(ids)
    assert np.abs(ours - ref).max() / np.abs(ref).max() < 1e-3  # the bound; fp32 reordering only
