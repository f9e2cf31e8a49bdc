"""The engine against HF transformers fp32 on tiny random models, and the persistent
batch's guarantees: batching, preemption and prefix caching change no token."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import transformers
from conftest import LLAMA3_ROPE_SCALING, make_tiny_llama, make_tiny_qwen2

import lmrt
from lmrt import _core
from lmrt.config import ConfigError

# fp32 logits: the same math in another reduction order. Per-element error ~ K * 2^-24
# through 2 layers; 1e-4 relative to the largest logit leaves >10x margin over what we see (~1e-6).
FP32_REL_TOL = 1e-4
# bf16 weights, fp32 compute: identical to HF on the same bf16-rounded weights up to fp32 reordering.
BF16_SAME_WEIGHTS_REL_TOL = 1e-4
# bf16 weights vs the fp32 original: each weight moves by up to 2^-9 relative; through 2 layers
# of random weights that gives ~0.5% of the logit range; 3% is the bound we hold.
BF16_VS_FP32_REL_TOL = 3e-2
# bf16 KV cache on top: K/V rounded to 8 mantissa bits before attention.
BF16_KV_REL_TOL = 3e-2


def rel_err(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def hf_logits(path, ids, dtype=torch.float32) -> np.ndarray:
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype).float().eval()
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def engine_config(**kw) -> lmrt.EngineConfig:
    base = dict(
        block_size=16,
        num_threads=2,
        max_batch_size=8,
        max_num_batched_tokens=48,
        cache_memory_gib=0.05,
        prefill_precision="fp32",
        kv_cache_dtype="float32",
    )  # exact: these tests compare bits and HF fp32 (fp32 KV, not the int8 default)
    base.update(kw)
    return lmrt.EngineConfig(**base)


def prompt(n: int, seed: int, vocab: int = 128) -> list[int]:
    return np.random.RandomState(seed).randint(3, vocab, size=n).tolist()


GREEDY = lmrt.GenerationConfig(max_new_tokens=24, ignore_eos=True)

MODELS = {
    "llama-tied": lambda p: make_tiny_llama(p, tied=True),
    "llama-untied": lambda p: make_tiny_llama(p, tied=False),
    "llama3-rope-scaling": lambda p: make_tiny_llama(p, tied=False, rope_scaling=LLAMA3_ROPE_SCALING),
    "qwen2-qkv-bias": lambda p: make_tiny_qwen2(p),
    "llama-hd32": lambda p: make_tiny_llama(p, tied=False, num_attention_heads=2, num_key_value_heads=1),  # int4 KV
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: make(root / name) for name, make in MODELS.items()}


@pytest.mark.parametrize("name", list(MODELS))
def test_prompt_logits_match_hf_fp32(models, name):
    # 150 tokens cross 10 KV blocks and 4 prefill chunks of 48: paging and chunking are exercised.
    ids = prompt(150, seed=1)
    with lmrt.pipeline(models[name], engine_config()) as pipe:
        ours = pipe.get_logits(ids)
    assert rel_err(ours, hf_logits(models[name], ids)) < FP32_REL_TOL


@pytest.mark.parametrize("name", list(MODELS))
def test_greedy_tokens_match_hf_generate(models, name):
    ids = prompt(20, seed=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(models[name]).eval()
    with torch.no_grad():
        ref = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, min_new_tokens=24)[
            0, 20:
        ].tolist()
    with lmrt.pipeline(models[name], engine_config()) as pipe:
        assert pipe(ids, GREEDY).token_ids == ref


def test_bf16_weights(models, tmp_path):
    ids = prompt(80, seed=3)
    src = models["llama-untied"]
    ref32 = hf_logits(src, ids)
    # The same bf16-rounded weights computed by HF in fp32: the reference for our bf16 path.
    bf16_dir = make_tiny_llama(tmp_path / "bf16", tied=False, dtype=torch.bfloat16)
    ref_bf16 = hf_logits(bf16_dir, ids, dtype=torch.bfloat16)
    with lmrt.pipeline(bf16_dir, engine_config(dtype="bfloat16", kv_cache_dtype="float32")) as pipe:
        assert rel_err(pipe.get_logits(ids), ref_bf16) < BF16_SAME_WEIGHTS_REL_TOL
    # fp32 checkpoint loaded as bf16 (norms stay fp32): against the fp32 original.
    with lmrt.pipeline(src, engine_config(dtype="bfloat16", kv_cache_dtype="float32")) as pipe:
        assert rel_err(pipe.get_logits(ids), ref32) < BF16_VS_FP32_REL_TOL
    with lmrt.pipeline(bf16_dir, engine_config(dtype="bfloat16", kv_cache_dtype="bfloat16")) as pipe:
        assert pipe.info()["kv_cache_dtype"] == "bfloat16"
        assert rel_err(pipe.get_logits(ids), ref_bf16) < BF16_KV_REL_TOL


def test_get_ppl_matches_hf_loss(models):
    ids = prompt(100, seed=4)
    model = transformers.AutoModelForCausalLM.from_pretrained(models["llama-tied"]).eval()
    with torch.no_grad():
        loss = model(torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    with lmrt.pipeline(models["llama-tied"], engine_config()) as pipe:
        assert pipe.get_ppl(ids) == pytest.approx(np.exp(loss), rel=1e-4)
        assert pipe.get_ppl([ids, ids]) == pytest.approx([np.exp(loss)] * 2, rel=1e-4)


def test_repetition_penalty_matches_hf(models):
    ids = prompt(12, seed=5)
    model = transformers.AutoModelForCausalLM.from_pretrained(models["llama-tied"]).eval()
    with torch.no_grad():
        ref = model.generate(
            torch.tensor([ids]), max_new_tokens=24, min_new_tokens=24, do_sample=False, repetition_penalty=1.5
        )[0, 12:].tolist()
    with lmrt.pipeline(models["llama-tied"], engine_config()) as pipe:
        out = pipe(ids, lmrt.GenerationConfig(max_new_tokens=24, ignore_eos=True, repetition_penalty=1.5))
    assert out.token_ids == ref


def test_sampling_seeds_and_degenerate_filters(models):
    ids = prompt(10, seed=6)
    with lmrt.pipeline(models["llama-tied"], engine_config()) as pipe:
        greedy = pipe(ids, GREEDY).token_ids
        sample = lambda **kw: pipe(ids, lmrt.GenerationConfig(max_new_tokens=24, ignore_eos=True, **kw)).token_ids
        assert sample(temperature=1.0, top_k=1, seed=1) == greedy
        assert sample(temperature=1.0, top_p=1e-6, seed=1) == greedy
        assert sample(temperature=1.0, min_p=1.0, seed=1) == greedy
        assert sample(temperature=1.0, seed=7) == sample(temperature=1.0, seed=7)
        runs = {tuple(sample(temperature=1.5, seed=s)) for s in range(4)}
        assert len(runs) > 1, "different seeds should give different samples at temperature 1.5"


def test_min_new_tokens_bans_eos(models):
    ids = prompt(10, seed=7)
    with lmrt.pipeline(models["llama-tied"], engine_config()) as pipe:
        first = pipe(ids, GREEDY).token_ids[0]
        # Declare the first greedy token a stop token: it ends the request at once, unless min_new_tokens forbids it.
        stopped = pipe(ids, lmrt.GenerationConfig(max_new_tokens=8, stop_token_ids=(first,)))
        assert stopped.token_ids == [first] and stopped.finish_reason == "stop"
        held = pipe(ids, lmrt.GenerationConfig(max_new_tokens=8, min_new_tokens=4, stop_token_ids=(first,)))
        assert len(held.token_ids) >= 4 and first not in held.token_ids[:4]


# ---- the persistent batch ----


def run_alone(path, prompts, gen, **cfg):
    with lmrt.pipeline(path, engine_config(enable_prefix_caching=False, **cfg)) as pipe:
        return [pipe(p, gen).token_ids for p in prompts]


def run_staggered(pipe, prompts, gen):
    """Request i is submitted once request i-1 has streamed its first token, so each one
    joins a batch that is already running (on any machine speed)."""
    results = [None] * len(prompts)
    started = [threading.Event() for _ in prompts]

    def worker(i):
        if i > 0:
            started[i - 1].wait(timeout=60)
        out = []
        for r in pipe.stream(prompts[i], gen):
            started[i].set()
            out += r.token_ids
        started[i].set()
        results[i] = out

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture(scope="module")
def sixteen(models):
    path = models["llama-untied"]
    prompts = [prompt(5 + 9 * i, seed=100 + i) for i in range(16)]
    return path, prompts, run_alone(path, prompts, GREEDY)


def test_batching_changes_nothing(sixteen):
    path, prompts, alone = sixteen
    with lmrt.pipeline(path, engine_config()) as pipe:
        assert run_staggered(pipe, prompts, GREEDY) == alone
        assert pipe.stats()["num_steps"] < sum(len(p) + 24 for p in prompts)  # rows really were batched


def test_preemption_changes_nothing(sixteen):
    path, prompts, alone = sixteen
    # 12 blocks of 16 tokens: the longest request (140 + 24 tokens) fits alone, 16 together cannot.
    bytes_per_block = _core.kv_bytes_per_block(2, 16, 2, 16, _core.KVDType.float32, _core.KVDType.float32)
    cfg = engine_config(cache_memory_gib=12 * bytes_per_block / 2**30)
    with lmrt.pipeline(path, cfg) as pipe:
        assert pipe.info()["kv_capacity_tokens"] == 12 * 16
        # All 16 at once: admission fills the pool, and decoding then outgrows it.
        assert [r.token_ids for r in pipe(prompts, GREEDY)] == alone
        assert pipe.stats()["num_preemptions"] > 0
        assert run_staggered(pipe, prompts, GREEDY) == alone


def test_prefix_caching_changes_nothing(models):
    path = models["llama-untied"]
    shared = prompt(40, seed=9)
    prompts = [shared + prompt(3 + i, seed=200 + i) for i in range(8)]
    alone = run_alone(path, prompts, GREEDY)
    with lmrt.pipeline(path, engine_config(enable_prefix_caching=True)) as pipe:
        assert pipe(prompts[0], GREEDY).token_ids == alone[0]  # fills the cache
        assert run_staggered(pipe, prompts, GREEDY) == alone
        stats = pipe.stats()
    assert stats["prefix_cache_hit_tokens"] > 0


# ---- the quantized KV caches: rows are quantized once, as they are written (int4 K: a block's keys staged at 8 bits
# and sealed when it is full, and a query reads a block sealed only once it sees all of it), so what a request
# reads does not depend on the batch, on the blocks being recomputed after a preemption, or on a prefix-cache hit:
# the same bits.

QUANT_KV = {  # kv_cache_dtype -> (model, the (K, V) KVDType names of resolve.KV_SCHEMES)
    "int8": ("llama-untied", ("int8", "int8")),
    "int4": ("llama-hd32", ("int4_channel", "int4")),
    "int4-per-token": ("llama-hd32", ("int4", "int4")),
    "k8v4": ("llama-hd32", ("int8", "int4")),
}


def gib_for_blocks(n, kv, head_dim, n_kv_heads):
    """cache_memory_gib that gives engine_config() n blocks of kv (int4 K's staging slots included)."""
    k, v = (_core.KVDType.__members__[name] for name in kv)
    cfg = engine_config()
    size = n * _core.kv_bytes_per_block(2, 16, n_kv_heads, head_dim, k, v)
    if k == _core.KVDType.int4_channel:
        slots = _core.kv_stage_slots(cfg.max_batch_size, cfg.max_num_batched_tokens, 16)
        size += slots * _core.kv_bytes_per_stage_slot(2, 16, n_kv_heads, head_dim)
    return size / 2**30


@pytest.mark.parametrize("kv", list(QUANT_KV))
def test_quantized_kv_batching_preemption_and_prefix_hits_change_nothing(models, kv):
    name, kinds = QUANT_KV[kv]
    path = models[name]
    head_dim, n_kv = (16, 2) if name == "llama-untied" else (32, 1)
    prompts = [prompt(5 + 9 * i, seed=500 + i) for i in range(12)]
    alone = run_alone(path, prompts, GREEDY, kv_cache_dtype=kv)
    with lmrt.pipeline(path, engine_config(kv_cache_dtype=kv)) as pipe:
        assert run_staggered(pipe, prompts, GREEDY) == alone
        assert pipe.stats()["num_staged_blocks"] == 0  # every request done: no staging slot left behind
    with lmrt.pipeline(
        path, engine_config(kv_cache_dtype=kv, cache_memory_gib=gib_for_blocks(10, kinds, head_dim, n_kv))
    ) as pipe:
        assert pipe.info()["kv_capacity_tokens"] == 10 * 16
        assert [r.token_ids for r in pipe(prompts, GREEDY)] == alone
        assert pipe.stats()["num_preemptions"] > 0
    shared = prompt(40, seed=9)
    with_prefix = [shared + prompt(3 + i, seed=600 + i) for i in range(6)]
    alone = run_alone(path, with_prefix, GREEDY, kv_cache_dtype=kv)
    with lmrt.pipeline(path, engine_config(kv_cache_dtype=kv, enable_prefix_caching=True)) as pipe:
        assert pipe(with_prefix[0], GREEDY).token_ids == alone[0]  # fills the cache
        assert run_staggered(pipe, with_prefix, GREEDY) == alone
        assert pipe.stats()["prefix_cache_hit_tokens"] > 0


def test_int4_kv_refuses_a_head_size_it_cannot_take(models):
    with pytest.raises(ConfigError, match="multiple of 32.*'int8'"):
        lmrt.pipeline(models["llama-untied"], engine_config(kv_cache_dtype="int4"))


# K/V values move by at most half a step of their range / 255 (int8) or / 15 (4-bit); through 2 layers of these
# random weights that is, of the logit range, for int8 ~0.5% (measured: 0.54% on llama-tied; bf16 KV 0.19%),
# and on llama-hd32 int8 0.73%, k8v4 8.1%, int4 9.4%, int4-per-token 11.9% (random weights have no outlier
# key channels, where int4's per-channel keys gain most). The bounds hold those with margin.
QUANT_KV_REL_TOL = {"int8": 2e-2, "k8v4": 0.2, "int4": 0.2, "int4-per-token": 0.25}


@pytest.mark.parametrize("kv", list(QUANT_KV))
def test_quantized_kv_logits_close_to_fp32_kv(models, kv):
    path = models["llama-tied" if kv == "int8" else "llama-hd32"]
    ids = prompt(70, seed=21)
    with lmrt.pipeline(path, engine_config()) as pipe:
        exact = pipe.get_logits(ids)
    with lmrt.pipeline(path, engine_config(kv_cache_dtype=kv)) as pipe:
        assert pipe.info()["kv_cache_dtype"] == kv
        quantized = pipe.get_logits(ids)
    err = rel_err(quantized, exact)
    assert 0 < err <= QUANT_KV_REL_TOL[kv], err  # > 0: the cache really was quantized


def test_abort_and_the_others_keep_going(models):
    path = models["llama-untied"]
    prompts = [prompt(30, seed=300 + i) for i in range(3)]
    alone = run_alone(path, prompts, GREEDY)
    with lmrt.pipeline(path, engine_config()) as pipe:
        long_gen = lmrt.GenerationConfig(max_new_tokens=200, ignore_eos=True)
        victim = pipe.stream(prompts[0], long_gen)
        next(victim)
        others = run_staggered(pipe, prompts[1:], GREEDY)
        victim.close()  # the consumer leaves: the request is aborted
        assert others == alone[1:]
        # abort() reaches a request in a state the test fixes (the engine held between steps; a tiny model decodes
        # 200 tokens in a few ms, so without the hold a stalled test thread could see the request finish first).
        engine = pipe._engine
        engine.pause()
        waiting = pipe._submit(prompts[0], long_gen)  # never scheduled before its abort
        engine.abort(waiting)
        running = pipe._submit(prompts[1], long_gen)
        engine.resume(1)  # exactly one step: the prompt (30 tokens, one chunk) and its first token
        first = engine.get(running, -1)
        assert len(first.token_ids) == 1 and first.finish_reason is None
        assert pipe.stats()["num_running"] == 1
        engine.abort(running)
        engine.resume()
        for rid, expected_tokens in ((waiting, 0), (running, 0)):
            tokens = []
            while (chunk := engine.get(rid, 1.0)).finish_reason is None:
                tokens += chunk.token_ids
            assert chunk.finish_reason == "abort", (chunk.finish_reason, chunk.error)
            assert len(tokens + list(chunk.token_ids)) == expected_tokens
        with pytest.raises(KeyError, match="unknown request id 123456"):
            pipe._engine.abort(123456)
        assert pipe(prompts[1], GREEDY).token_ids == alone[1]
        # A stream dropped before it is read is aborted, and its output is not kept.
        dropped = pipe.stream(prompts[2], long_gen)
        del dropped
        stop_at_text = pipe.stream(prompts[2], long_gen)  # closed mid-way by the consumer
        next(stop_at_text)
        stop_at_text.close()
        deadline = time.time() + 10
        while pipe.stats()["num_running"] + pipe.stats()["num_waiting"] > 0 and time.time() < deadline:
            time.sleep(0.01)
        stats = pipe.stats()
        assert stats["num_running"] == 0 and stats["num_waiting"] == 0
        assert stats["num_free_blocks"] == stats["num_blocks"]
        assert pipe._engine.num_streams() == 0


def test_pause_holds_the_loop_between_steps(models):
    gen = lmrt.GenerationConfig(max_new_tokens=50, ignore_eos=True)
    with lmrt.pipeline(models["llama-untied"], engine_config()) as pipe:
        engine = pipe._engine
        engine.pause()
        steps = pipe.stats()["num_steps"]
        rid = pipe._submit(prompt(30, seed=20), gen)
        held = engine.get(rid, 0.2)  # a tiny model would have decoded all 50 tokens by now
        assert held.token_ids == [] and held.finish_reason is None and pipe.stats()["num_steps"] == steps
        engine.resume(2)  # the prompt with the first token, then one decode step
        tokens = []
        while len(tokens) < 2:
            tokens += engine.get(rid, -1).token_ids
        assert len(tokens) == 2
        assert engine.get(rid, 0.2).token_ids == [] and pipe.stats()["num_steps"] == steps + 2
        engine.resume()
        while (chunk := engine.get(rid, 1.0)).finish_reason is None:
            tokens += chunk.token_ids
        assert chunk.finish_reason == "length" and len(tokens + list(chunk.token_ids)) == 50


def test_gil_is_released_while_generating(models):
    with lmrt.pipeline(models["llama-untied"], engine_config()) as pipe:
        rid = pipe._submit(prompt(60, seed=10), lmrt.GenerationConfig(max_new_tokens=100, ignore_eos=True))
        ticks = 0
        deadline = time.time() + 0.3
        while time.time() < deadline:  # Python keeps running while the engine thread computes
            ticks += 1
        while pipe._engine.get(rid, 1.0).finish_reason is None:
            pass
        assert ticks > 1000


def test_asyncio_stream(models):
    import asyncio

    ids = prompt(20, seed=11)
    with lmrt.pipeline(models["llama-tied"], engine_config()) as pipe:
        expected = pipe(ids, GREEDY).token_ids

        async def main():
            async def one():
                return [t async for r in pipe.astream(ids, GREEDY) for t in r.token_ids]

            return await asyncio.gather(one(), one())

        assert asyncio.run(main()) == [expected, expected]


# ---- bad input: a clear error, and the engine keeps serving ----


def test_bad_requests_are_refused_and_serving_goes_on(models):
    path = models["llama-tied"]
    ids = prompt(20, seed=12)
    with lmrt.pipeline(path, engine_config(session_len=64)) as pipe:
        expected = pipe(ids, GREEDY).token_ids
        with pytest.raises(ValueError, match="prompt has 64 tokens but session_len is 64"):
            pipe(prompt(64, seed=13), GREEDY)
        with pytest.raises(ValueError, match="outside the vocabulary"):
            pipe([5, 128], GREEDY)
        with pytest.raises(ValueError, match="no tokenizer.json"):
            pipe("text needs a tokenizer", GREEDY)
        with pytest.raises(ValueError, match="top_p must be in"):  # the core checks too, not only the config
            params = _core.RequestParams()
            params.max_new_tokens, params.sampling.top_p = 4, 0.0
            pipe._engine.submit(ids, params)
        assert pipe(ids, GREEDY).token_ids == expected
        # A request reaching session_len ends with "length".
        out = pipe(prompt(50, seed=14), lmrt.GenerationConfig(max_new_tokens=100, ignore_eos=True))
        assert out.finish_reason == "length" and len(out.token_ids) == 64 - 50


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(temperature=-1.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-1), "top_k"),
        (dict(min_p=2.0), "min_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2, min_new_tokens=3), "min_new_tokens"),
        (dict(seed=-1), "seed"),
    ],
)
def test_invalid_sampling_values(kw, match):
    with pytest.raises(ConfigError, match=match):
        lmrt.GenerationConfig(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(dtype="float16"), "dtype"),
        (dict(kv_cache_dtype="int3"), "choose one of"),
        (dict(kv_cache_dtype="fp8"), "choose one of"),
        (dict(quant_policy=3), "quant_policy"),
        (dict(block_size=0), "block_size"),
        (dict(max_batch_size=0), "max_batch_size"),
        (dict(device="tpu"), "device"),
    ],
)
def test_invalid_engine_config(kw, match):
    with pytest.raises(ConfigError, match=match):
        lmrt.EngineConfig(**kw)


def test_bad_checkpoints(tmp_path, models):
    with pytest.raises(FileNotFoundError):
        lmrt.pipeline(tmp_path / "nowhere")
    import json
    import shutil

    bad = tmp_path / "arch"
    shutil.copytree(models["llama-tied"], bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="GPT2LMHeadModel"):
        lmrt.pipeline(bad)
    cut = tmp_path / "cut"
    shutil.copytree(models["llama-tied"], cut)
    f = cut / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        lmrt.pipeline(cut)


def test_non_finite_logits_fail_the_request_not_the_engine(tmp_path, models):
    """A NaN in the weights reaches the logits: the request ends with a clear error (the sampler's sort would be
    undefined on NaN), for greedy and sampled requests alike, and the engine stays up."""
    import shutil

    from safetensors.numpy import load_file, save_file

    bad = tmp_path / "nan"
    shutil.copytree(models["llama-untied"], bad)
    tensors = load_file(bad / "model.safetensors")
    tensors["lm_head.weight"][7, 3] = np.nan
    save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
    with lmrt.pipeline(bad, engine_config()) as pipe:
        for gen in (GREEDY, lmrt.GenerationConfig(max_new_tokens=4, temperature=1.0, top_k=1, seed=1)):
            with pytest.raises(lmrt.RequestError, match=r"non-finite logits \(NaN or \+inf\) at position 9"):
                pipe(prompt(10, seed=8), gen)
        stats = pipe.stats()
        assert stats["num_running"] == stats["num_waiting"] == 0
        assert pipe.get_ppl(prompt(10, seed=9)) != pipe.get_ppl(prompt(10, seed=9))  # NaN, computed: still serving


def test_int8_kv_outlier_key_channels_do_not_set_its_scale(tmp_path):
    # Trained models' keys carry a few channels far larger than the rest, and a per-token int8 scale follows them:
    # the other channels then keep few bits. The int8 cache stores K rotated (Hadamard, q alike), which spreads
    # such a channel over the head. Here one RoPE pair of every key head is made 100x larger; the reference for
    # the error is the bf16 cache on the same model (a relative rounding, blind to outliers). Measured: int8 1.85x
    # bf16's error (unrotated: 5.8x; on the plain model both about 2.5x); the bound sits between.
    from safetensors.numpy import load_file, save_file

    ids = prompt(70, seed=21)
    path = make_tiny_llama(tmp_path / "outlier-keys", tied=False, num_attention_heads=2, num_key_value_heads=1)
    f = path / "model.safetensors"
    t = load_file(f)
    for name, w in t.items():
        if name.endswith("k_proj.weight"):  # [kv_dim, H]: rows 5 and 5 + 16 are one RoPE pair of head_dim 32
            w[[5, 21]] *= 100.0
    save_file(t, f, metadata={"format": "pt"})
    errs = {}
    with lmrt.pipeline(path, engine_config()) as pipe:
        exact = pipe.get_logits(ids)
    for kv in ("bfloat16", "int8"):
        with lmrt.pipeline(path, engine_config(kv_cache_dtype=kv)) as pipe:
            errs[kv] = rel_err(pipe.get_logits(ids), exact)
    assert 0 < errs["int8"] <= 3 * errs["bfloat16"], errs
