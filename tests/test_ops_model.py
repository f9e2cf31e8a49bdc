"""The model that device "cuda" runs (OpsLlamaModel, csrc/model/llama_ops.*: the Llama forward over a backend's op
set) on the CPU op set (LMRT_OPS_MODEL=1), against the CPU's own model (LlamaModel) bit for bit: all of it but the
CUDA kernels (tests/test_kernels_cuda.py checks those one by one against the CPU ops) is checked on any machine. Where
a CUDA device is here, device="cuda" runs the same forward on the GPU: against HF fp32 and the CPU model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from test_engine import (
    FP32_REL_TOL,
    GREEDY,
    MODELS,
    engine_config,
    hf_logits,
    prompt,
    rel_err,
    run_alone,
    run_staggered,
)

import lmrt
from lmrt import _core

CUDA_OK, CUDA_WHY = _core.kernels.cuda_available()

# test_engine's tiny models (tied, untied, llama3 RoPE scaling, qwen2 qkv bias, head size 32 for int4 KV)
CASES = [(name, "float32") for name in MODELS] + [
    ("llama-hd32", kv) for kv in ("bfloat16", "int8", "int4", "int4-per-token", "k8v4")
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ops_models")
    return {name: make(root / name) for name, make in MODELS.items()}


@pytest.mark.parametrize("name,kv", CASES)
def test_ops_model_gives_the_cpu_models_bits(models, name, kv, monkeypatch):
    # 150 tokens cross 10 KV blocks and 4 prefill chunks of 48; then greedy decode
    ids = prompt(150, seed=1)
    cfg = engine_config(kv_cache_dtype=kv)
    with lmrt.pipeline(models[name], cfg) as pipe:
        assert not pipe.info()["ops_model"]
        ref_logits, ref_tokens = pipe.get_logits(ids), pipe(ids[:20], GREEDY).token_ids
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    with lmrt.pipeline(models[name], cfg) as pipe:
        assert pipe.info()["ops_model"] and pipe.info()["device"] == "cpu"
        assert np.array_equal(pipe.get_logits(ids), ref_logits)
        assert pipe(ids[:20], GREEDY).token_ids == ref_tokens


@pytest.mark.parametrize(
    "name,kv,kinds,head_dim,n_kv",
    [
        ("llama-untied", "float32", ("float32", "float32"), 16, 2),
        ("llama-hd32", "int4", ("int4_channel", "int4"), 32, 1),
    ],
)
def test_ops_model_batching_and_preemption_change_nothing(models, monkeypatch, name, kv, kinds, head_dim, n_kv):
    # the step's rows as the engine builds them (sequences joining and leaving, decode rows beside prompt chunks,
    # recompute after preemption) through the op-set model's block tables; int4 K per channel (KIVI's split): the
    # engine's staging slots drive the op-set model's copy of the table, each block's keys staged at 8 bits until a
    # step fills it and kv_seal quantizes it per channel (a decode step that seals runs eagerly, not from its graph)
    from test_engine import gib_for_blocks

    path = models[name]
    prompts = [prompt(5 + 9 * i, seed=100 + i) for i in range(10)]
    alone = run_alone(path, prompts, GREEDY, kv_cache_dtype=kv)  # the CPU model, one request at a time
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    with lmrt.pipeline(path, engine_config(kv_cache_dtype=kv)) as pipe:
        assert pipe.info()["ops_model"]
        assert run_staggered(pipe, prompts, GREEDY) == alone
    small = engine_config(kv_cache_dtype=kv, cache_memory_gib=gib_for_blocks(10, kinds, head_dim, n_kv))
    with lmrt.pipeline(path, small) as pipe:
        assert pipe.info()["kv_capacity_tokens"] == 10 * 16
        assert [r.token_ids for r in pipe(prompts, GREEDY)] == alone
        assert pipe.stats()["num_preemptions"] > 0


def test_steps_sample_their_tokens_on_the_device(models, monkeypatch):
    # the op-set model draws every step's tokens where the logits are (DeviceOps::sample: only token ids cross to the
    # host): greedy, sampled (temperature, top-k, top-p, min-p, seeded), penalized and banned requests side by side,
    # each with its draw from its own generator; a step with a prompt's logprobs keeps the host sampler (it needs
    # the logits). The tokens are the CPU model's (its host sampler, the same rule) either way.
    path = models["llama-untied"]
    ids = [prompt(9 + 5 * i, seed=200 + i) for i in range(3)]

    def gen(**kw):
        return lmrt.GenerationConfig(max_new_tokens=12, ignore_eos=True, **kw)

    runs = {
        "greedy": [GREEDY] * 3,
        "sampled": [gen(temperature=0.8, top_k=20, seed=3), GREEDY, gen(temperature=1.2, top_p=0.9, seed=4)],
        "min-p": [gen(temperature=1.0, min_p=0.05, seed=5), gen(temperature=0.7, top_k=5, top_p=0.8, seed=6), GREEDY],
        "penalty": [GREEDY, gen(temperature=0.9, repetition_penalty=1.3, seed=7), gen(repetition_penalty=1.3)],
        "bans": [lmrt.GenerationConfig(max_new_tokens=12, min_new_tokens=6, stop_token_ids=[5]), GREEDY, GREEDY],
        "prompt logprobs": [GREEDY, gen(temperature=0.8, seed=8), GREEDY],
    }

    def together(pipe, name):  # every request in the engine before any is read: they run as one batch
        from lmrt.api import RequestStream

        streams = []
        for i, (p, g) in enumerate(zip(ids, runs[name])):
            rid = pipe._submit(p, g, prompt_logprobs=name == "prompt logprobs" and i == 0)
            streams.append(RequestStream(pipe, rid, p, g))
        return [[t for chunk in st for t in chunk.token_ids] for st in streams]

    want = {}
    with lmrt.pipeline(path, engine_config()) as pipe:
        for name in runs:
            want[name] = together(pipe, name)
    assert want["sampled"][0] != want["greedy"][0] and want["penalty"][2] != want["greedy"][2]  # they do differ
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    with lmrt.pipeline(path, engine_config()) as pipe:
        for name in runs:
            before, steps = pipe.stats()["num_device_sampled_steps"], pipe.stats()["num_steps"]
            assert together(pipe, name) == want[name], name
            on_device = pipe.stats()["num_device_sampled_steps"] - before
            if name == "prompt logprobs":  # the host sampler for the steps with the logprobs request's prompt
                assert 0 < on_device < pipe.stats()["num_steps"] - steps
            else:  # every step with a logit row: all of them here
                assert on_device == pipe.stats()["num_steps"] - steps > 0, name


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_non_finite_logits_fail_a_device_sampled_request(tmp_path, models, monkeypatch, sampled):
    # a NaN in the output matrix reaches the logits; the device's sampling says so (-1) and the request ends with
    # the engine's error, the engine serving on
    import shutil

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "nan"
    shutil.copytree(models["llama-untied"], bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["lm_head.weight"][7, 3] = np.nan
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    with lmrt.pipeline(bad, engine_config()) as pipe:
        with pytest.raises(lmrt.RequestError, match=r"non-finite logits \(NaN or \+inf\) at position 9"):
            pipe(
                prompt(10, seed=8),
                lmrt.GenerationConfig(max_new_tokens=4, temperature=0.7, seed=1) if sampled else GREEDY,
            )
        assert pipe.stats()["num_device_sampled_steps"] == 1
        assert pipe.stats()["num_running"] == pipe.stats()["num_waiting"] == 0


# bf16 rounding of x and W (2^-9 relative each) through 2 random layers: test_prefill_bf16.py's bound.
BF16_VS_FP32_REL_TOL = 3e-2


@pytest.mark.parametrize("name", ["llama-untied", "qwen2-qkv-bias"])
def test_ops_model_bf16_prefill_runs_the_bf16_unit_from_16_rows(models, name, monkeypatch):
    # prefill_precision="bf16" on the op-set model: steps of 16+ rows take their products on the op set's bf16 unit
    # (the GPU's tensor cores; here the CPU's software tile model, on any machine), fewer rows stay exact fp32
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    monkeypatch.setenv("LMRT_TILE_UNIT", "model")
    ids = prompt(150, seed=5)  # chunks of 48, 48, 48, 6 rows: three on the bf16 unit
    with lmrt.pipeline(models[name], engine_config()) as pipe:
        exact, exact_short = pipe.get_logits(ids), pipe.get_logits(ids[:12])
        exact_tokens = pipe(ids[:12], GREEDY).token_ids
    with lmrt.pipeline(models[name], engine_config(prefill_precision="bf16")) as pipe:
        assert pipe.info()["ops_model"] and pipe.info()["prefill_precision"] == "bf16"
        ours = pipe.get_logits(ids)
        # a 12-token prompt and its decode steps never reach 16 rows: exact fp32's bits
        assert np.array_equal(pipe.get_logits(ids[:12]), exact_short)
        assert pipe(ids[:12], GREEDY).token_ids == exact_tokens
    assert rel_err(ours, hf_logits(models[name], ids)) < BF16_VS_FP32_REL_TOL
    assert rel_err(ours[:144], exact[:144]) > 1e-5, "the bf16 unit did not run: bf16 prefill equals fp32"
    assert rel_err(ours, exact) < BF16_VS_FP32_REL_TOL


def test_ops_model_bf16_prefill_of_a_4bit_checkpoint(tmp_path, monkeypatch):
    # the 4-bit products on the bf16 unit (each weight formed from its code, scale and min, then rounded to bf16)
    from conftest import make_tiny_llama
    from test_prefill_bf16 import hf_logits as hf_logits_replaced
    from test_quant_formats import SHAPE_FOR_GROUP, make_tiny_awq

    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    monkeypatch.setenv("LMRT_TILE_UNIT", "model")
    shape = SHAPE_FOR_GROUP[64]
    path, dequant = make_tiny_awq(tmp_path / "awq", 64, tied=False, **shape)
    ids = prompt(150, seed=6)
    ref = hf_logits_replaced(make_tiny_llama(tmp_path / "dense", tied=False, **shape), ids, replace=dequant)
    with lmrt.pipeline(path, engine_config(prefill_precision="bf16", lm_head_dtype="dense")) as pipe:
        assert pipe.info()["weight_format"] == "w4" and pipe.info()["ops_model"]
        ours = pipe.get_logits(ids)
    with lmrt.pipeline(path, engine_config(lm_head_dtype="dense")) as pipe:
        exact = pipe.get_logits(ids)
    assert rel_err(ours, ref) < BF16_VS_FP32_REL_TOL
    assert rel_err(ours[:144], exact[:144]) > 1e-5, "the bf16 unit did not run"


def test_ops_model_refuses_int8_activations_by_name(models, monkeypatch):
    monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    with pytest.raises(lmrt.config.ConfigError, match="fp32 activations only"):
        lmrt.pipeline(models["llama-tied"], engine_config(linear_precision="int8"))


@pytest.mark.skipif(CUDA_OK, reason="a CUDA device is here: the refusal without one cannot be shown")
def test_device_cuda_without_a_device_is_refused_by_name(models):
    with pytest.raises(lmrt.config.ConfigError, match="no CUDA device"):
        lmrt.pipeline(models["llama-tied"], engine_config(device="cuda"))


@pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}")
@pytest.mark.parametrize("name", list(MODELS))
def test_device_cuda_matches_hf_fp32_and_the_cpu_model(models, name):
    ids = prompt(150, seed=1)
    cfg = engine_config(device="cuda", dtype="float32")
    with lmrt.pipeline(models[name], cfg) as pipe:
        assert pipe.info()["device"] == "cuda"
        ours = pipe.get_logits(ids)
        tokens = pipe(ids[:20], GREEDY).token_ids
        again = pipe(ids[:20], GREEDY).token_ids
    assert np.isfinite(ours).all()
    assert rel_err(ours, hf_logits(models[name], ids)) < FP32_REL_TOL
    with lmrt.pipeline(models[name], engine_config()) as pipe:
        assert rel_err(ours, pipe.get_logits(ids)) < FP32_REL_TOL
    model = transformers.AutoModelForCausalLM.from_pretrained(models[name]).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids[:20]]), max_new_tokens=24, do_sample=False, min_new_tokens=24)
    assert tokens == again == ref[0, 20:].tolist()


@pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}")
@pytest.mark.parametrize("kv", ["bfloat16", "int8", "int4", "int4-per-token", "k8v4"])
def test_device_cuda_batching_changes_nothing(models, kv):
    path = models["llama-hd32"]
    prompts = [prompt(5 + 9 * i, seed=300 + i) for i in range(10)]
    cfg = dict(device="cuda", dtype="float32", kv_cache_dtype=kv)
    alone = run_alone(path, prompts, GREEDY, **cfg)
    with lmrt.pipeline(path, engine_config(**cfg)) as pipe:
        assert run_staggered(pipe, prompts, GREEDY) == alone


@pytest.mark.skipif(not CUDA_OK, reason=f"no CUDA device: {CUDA_WHY}")
@pytest.mark.parametrize("name", ["llama-untied", "qwen2-qkv-bias"])
def test_device_cuda_bf16_prefill_on_the_tensor_cores(models, name):
    # device "cuda"'s default: steps of 16+ rows on the tensor cores (cuda::linear_tc), within the bf16 bound of HF
    # fp32, and shorter steps exact
    ids = prompt(150, seed=7)
    with lmrt.pipeline(models[name], engine_config(device="cuda", dtype="float32")) as pipe:
        exact, exact_short = pipe.get_logits(ids), pipe.get_logits(ids[:12])
    cfg = engine_config(device="cuda", dtype="float32", prefill_precision="auto")
    with lmrt.pipeline(models[name], cfg) as pipe:
        assert pipe.info()["prefill_precision"] == "bf16"
        ours = pipe.get_logits(ids)
        assert np.array_equal(pipe.get_logits(ids[:12]), exact_short)
    assert np.isfinite(ours).all()
    assert rel_err(ours, hf_logits(models[name], ids)) < BF16_VS_FP32_REL_TOL
    assert rel_err(ours[:144], exact[:144]) > 1e-5, "the tensor cores did not run: bf16 prefill equals fp32"


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_step_graphs_change_nothing(models, device, monkeypatch):
    # decode steps replayed as recorded graphs (one per row count, recorded again when a larger step moves a
    # workspace; CUDA graphs on the GPU, the op calls themselves on the CPU op set) give the tokens every op run
    # eagerly gives: requests of staggered lengths (the row count changes as they finish), then a long prompt (the
    # workspaces grow), then the short ones again (their graphs recorded anew)
    if device == "cuda" and not CUDA_OK:
        pytest.skip(f"no CUDA device: {CUDA_WHY}")
    if device == "cpu":
        monkeypatch.setenv("LMRT_OPS_MODEL", "1")
    path = models["llama-untied"]
    prompts = [prompt(5 + 9 * i, seed=400 + i) for i in range(6)]
    gens = [lmrt.GenerationConfig(max_new_tokens=4 + 5 * i, ignore_eos=True) for i in range(6)]
    long = prompt(140, seed=9)

    def run(pipe):
        from lmrt.api import RequestStream

        out = []
        for batch in (prompts, [long], prompts):
            streams = [RequestStream(pipe, pipe._submit(p, g), p, g) for p, g in zip(batch, gens)]
            out.append([[t for c in st for t in c.token_ids] for st in streams])
        return out

    cfg = dict(device=device, dtype="float32", kv_cache_dtype="int8")
    with lmrt.pipeline(path, engine_config(enforce_eager=True, **cfg)) as pipe:
        assert pipe.info()["ops_model"] and not pipe.info()["step_graphs"]
        eager = run(pipe)
    with lmrt.pipeline(path, engine_config(**cfg)) as pipe:
        assert pipe.info()["step_graphs"]
        assert run(pipe) == eager
    if device == "cpu":  # and the CPU model's tokens, which no graph touches
        monkeypatch.delenv("LMRT_OPS_MODEL")
        with lmrt.pipeline(path, engine_config(**cfg)) as pipe:
            assert run(pipe) == eager
