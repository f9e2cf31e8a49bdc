"""4-bit weights through the whole engine: AutoAWQ checkpoints against HF transformers fp32 on
the dequantised weights, and the default model's GGUF imported losslessly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import make_tiny_llama
from kernel_paths import bits, with_isa
from test_quant_formats import SHAPE_FOR_GROUP, make_tiny_awq

import lmrt
from lmrt._core import kernels as K
from lmrt.default_model import default_model_gguf, default_model_path

# fp32 compute on exactly the dequantised weights: only the reduction order differs from HF.
# The bound is 1e-3; what we see is ~1e-6.
W4_REL_TOL = 1e-3
# Perplexity: lmrt on the GGUF's own 4-bit tensors against llama.cpp on the same file
# (22.11 measured with 512-token windows, shared/README.md); the issue asks for 0.5%.
LLAMA_CPP_PPL_GPL3 = 22.11
PPL_REL_TOL = 0.005


def exact_config(**kw) -> lmrt.EngineConfig:
    """Exact fp32 prefill (not bf16, the default where the CPU has AMX or AVX512-BF16): these tests
    measure the 4-bit formats against fp32 references, so nothing else may round (fp32 KV, not the int8 default)."""
    return lmrt.EngineConfig(prefill_precision="fp32", **{"kv_cache_dtype": "float32", **kw})


def rel_err(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("g", [32, 64, 128])
def test_awq_logits_match_hf_on_dequantised_weights(tmp_path, g):
    shape = SHAPE_FOR_GROUP[g]
    path, dequant = make_tiny_awq(tmp_path / "awq", g, tied=False, **shape)
    dense = make_tiny_llama(tmp_path / "dense", tied=False, **shape)
    model = transformers.AutoModelForCausalLM.from_pretrained(dense, dtype=torch.float32).eval()
    with torch.no_grad():
        params = dict(model.named_parameters())
        for module, w in dequant.items():
            params[module + ".weight"].copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
        ids = np.random.RandomState(g).randint(3, 128, size=90).tolist()
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    cfg = lmrt.EngineConfig(
        kv_cache_dtype="float32",
        block_size=16,
        num_threads=2,
        max_num_batched_tokens=32,
        cache_memory_gib=0.02,
        lm_head_dtype="dense",
        prefill_precision="fp32",
    )
    with lmrt.pipeline(path, cfg) as pipe:
        assert pipe.info()["weight_format"] == "w4" and pipe.info()["group_size"] == g
        assert rel_err(pipe.get_logits(ids), ref) < W4_REL_TOL
        # batching, chunked prefill and 4-bit kernels together change no token
        prompts = [ids[: 10 + 7 * i] for i in range(6)]
        gen = lmrt.GenerationConfig(max_new_tokens=12, ignore_eos=True)
        alone = [pipe(p, gen).token_ids for p in prompts]
        assert [r.token_ids for r in pipe(prompts, gen)] == alone


def _gpl3_windows(tok, window=512):
    """Disjoint 512-token windows, the last one partial, as the figures in shared/README.md were measured
    (HF fp32 on the dequantised weights gives 22.05 that way)."""
    text = open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()
    ids = tok.encode(text, add_special_tokens=False)
    return [w for w in (ids[i : i + window] for i in range(0, len(ids), window)) if len(w) >= 2]


@pytest.fixture(scope="module")
def gguf_pipe():
    with lmrt.pipeline(default_model_gguf(), exact_config(max_num_batched_tokens=512)) as pipe:
        yield pipe


def test_gguf_import_is_4bit_and_greedy_matches_fp32(gguf_pipe):
    info = gguf_pipe.info()
    assert info["weight_format"] == "w4" and info["group_size"] == 32
    chats = [
        [{"role": "user", "content": p}]
        for p in ("What is the capital of France?", "Write a haiku about the sea.", "List three fruits that are red.")
    ]
    gen = lmrt.GenerationConfig(max_new_tokens=48)
    ours = gguf_pipe(chats, gen)
    # The reference: lmrt fp32 on the converted checkpoint (the same Q4_1 values, stored as fp16).
    with lmrt.pipeline(default_model_path(), exact_config(dtype="float32")) as dense:
        ref = dense(chats, gen)
        for a, b, chat in zip(ours, ref, chats):
            if a.token_ids == b.token_ids:
                continue
            j = next(k for k, (x, y) in enumerate(zip(a.token_ids, b.token_ids)) if x != y)
            logits = dense.get_logits(dense.encode_prompt(chat) + b.token_ids[:j])[-1]
            top2 = np.sort(logits)[-2:]
            assert top2[1] - top2[0] < 1e-2, f"divergence at token {j} is not at a near-tie ({top2[1] - top2[0]:.3g})"


def _ppl(pipe) -> float:
    logprobs = np.concatenate([pipe.get_logprobs(w) for w in _gpl3_windows(pipe.tokenizer)]).astype(np.float64)
    return float(np.exp(-logprobs.mean()))


@pytest.mark.slow
def test_gguf_perplexity_matches_llama_cpp(gguf_pipe):
    assert gguf_pipe.info()["lm_head_dtype"] == "int8"  # the default for 4-bit models
    ppl = _ppl(gguf_pipe)
    print(f"lmrt 4-bit GGUF perplexity on GPL-3: {ppl:.3f} (llama.cpp: {LLAMA_CPP_PPL_GPL3})")
    assert abs(ppl - LLAMA_CPP_PPL_GPL3) / LLAMA_CPP_PPL_GPL3 < PPL_REL_TOL


# The int8 lm_head is on by default for 4-bit models only where it costs nothing measurable:
# we allow 0.2% perplexity (measured: 22.048 dense -> 22.064 int8, +0.07%).
INT8_HEAD_PPL_COST = 0.002


@pytest.mark.slow
def test_int8_lm_head_costs_nothing(gguf_pipe):
    with lmrt.pipeline(default_model_gguf(), exact_config(lm_head_dtype="dense", max_num_batched_tokens=512)) as dense:
        base = _ppl(dense)
    assert _ppl(gguf_pipe) <= base * (1 + INT8_HEAD_PPL_COST)


@pytest.mark.slow
def test_default_model_awq_checkpoint_matches_hf_dequantised(tmp_path):
    """The default model quantised by lmrt-quantize (round-to-nearest, g64: seconds, where AWQ takes
    minutes; the file format is the same) runs in lmrt with HF's logits on its dequantised weights."""
    from lmrt.cli import main as lmrt_main
    from quantize.evaluate import load_awq_dequantized

    short = tmp_path / "eval.txt"
    short.write_text(open("/usr/share/common-licenses/GPL-3", encoding="utf-8").read()[:3000])
    out = tmp_path / "rtn-g64"
    assert (
        lmrt_main(["quantize", "--method", "rtn", "--group-size", "64", "--out", str(out), "--eval-file", str(short)])
        == 0
    )
    with lmrt.pipeline(out, exact_config(lm_head_dtype="dense")) as pipe:
        assert (pipe.info()["weight_format"], pipe.info()["group_size"]) == ("w4", 64)
        ids = pipe.encode_prompt([{"role": "user", "content": "Explain in two sentences why the sky is blue."}])
        ours = pipe.get_logits(ids)
    with torch.no_grad():
        ref = load_awq_dequantized(out)(torch.tensor([ids])).logits[0].double().numpy()
    assert rel_err(ours, ref) < W4_REL_TOL


def test_prefill_progress_is_reported_while_a_long_prompt_runs():
    """StreamChunk.num_prefilled_tokens (what the CLI's prefill bar shows) climbs chunk by chunk to the prompt's
    length. A 1,024-token prompt in 64-token chunks is 16 steps of the default model (tens of ms each even on a
    large machine), polled every 2 ms: the steps in between cannot all be missed."""
    ids = np.random.RandomState(5).randint(3, 49152, size=1024).tolist()
    cfg = exact_config(num_threads=2, max_num_batched_tokens=64, max_batch_size=1, session_len=4096)
    with lmrt.pipeline(None, cfg) as pipe:
        rid = pipe._submit(ids, lmrt.GenerationConfig(max_new_tokens=1))
        seen = []
        while True:
            chunk = pipe._engine.get(rid, 0.002)
            assert chunk.num_prompt_tokens == 1024
            seen.append(chunk.num_prefilled_tokens)
            if chunk.finish_reason is not None:
                break
    assert seen == sorted(seen) and seen[-1] == 1024  # no preemption here: it only climbs
    between = sorted(set(seen) - {0, 1024})
    assert len(between) >= 4 and all(n % 64 == 0 for n in between), between


# int8 activations (linear_precision="int8") on the default model, against the exact fp32 mode on the same
# weights: the mean KL of the next-token distributions over a GPL-3 window stays under this (measured ~2e-3; an
# activation quantizer off by one bit of scale, or a wrong group's scale, gives > 0.1), and the argmax agrees at
# nearly every position (measured 97%).
INT8_ACT_MEAN_KL = 0.01
INT8_ACT_TOP1_AGREE = 0.9


# Per kernel path: AVX-512 interleaves the layers' weights (cpu::linear_w4a8_il for every product), AVX2 keeps the
# row layout (cpu::linear_w4a8).
INT8_LAYOUTS = {"avx2": "rows", "avx512": "interleaved"}


@pytest.mark.parametrize("isa_name", list(INT8_LAYOUTS))
def test_int8_activations_close_to_exact_and_batch_invariant(gguf_pipe, isa_name):
    if not K.isa_supported(isa_name):
        pytest.skip(f"CPU lacks {isa_name}")
    window = _gpl3_windows(gguf_pipe.tokenizer)[1][:200]
    exact = gguf_pipe.get_logits(window).astype(np.float64)
    with_isa(isa_name, lambda: check_int8_activations(window, exact, INT8_LAYOUTS[isa_name]))


# int8 mode's decode steps over 4-bit layers with rows enough run in row groups (LlamaModel::decode_row_groups: each
# thread its rows through every layer alone, no barrier between the ops): the bits of the layer-by-layer path, which
# 1 thread runs (the kernels give the same bits on any thread count). On 2 threads that is 8+ rows; AVX2 keeps int8
# mode's row layout (cpu::linear_w4a8), AVX-512 the interleaved one. Exact fp32 products never group (no gain). The
# KV cache: fp32, int8 (the default: int8 q scores on VNNI, rotated q and k), and int4 with K per channel, whose decode
# steps that seal a block (a sequence's 16th row) run layer by layer.
@pytest.mark.parametrize(
    "isa_name,linear,kv",
    [
        ("avx512", "int8", "float32"),
        ("avx2", "int8", "float32"),
        ("avx512", "fp32", "float32"),
        ("avx512", "int8", "int8"),
        ("avx512", "int8", "int4"),
    ],
)
def test_decode_row_groups_give_the_layer_by_layer_bits(isa_name, linear, kv):
    if not K.isa_supported(isa_name):
        pytest.skip(f"CPU lacks {isa_name}")
    firsts = [100 + 37 * i for i in range(12)]  # 1-token prompts: their step is decode-shaped (a row a sequence)
    prompts = [list(range(300 + 11 * i, 300 + 11 * i + 5 + 7 * i)) for i in range(12)]
    gen = lmrt.GenerationConfig(max_new_tokens=12, ignore_eos=True)

    def together(pipe, prompts, gen, **kw):  # every request in the engine before its next step
        pipe._engine.pause()
        rids = [pipe._submit(p, gen, **kw) for p in prompts]
        pipe._engine.resume()
        return rids

    def run(threads):
        cfg = exact_config(
            linear_precision=linear,
            kv_cache_dtype=kv,
            max_batch_size=16,
            max_num_batched_tokens=1024,
            num_threads=threads,
        )
        with lmrt.pipeline(default_model_gguf(), cfg) as pipe:
            rids = together(pipe, [[t] for t in firsts], lmrt.GenerationConfig(max_new_tokens=0), prompt_logits=True)
            logits = np.stack([pipe._get(r).prompt_logits[0] for r in rids])  # one step of 12 rows
            grouped = pipe.stats()["num_row_group_steps"]
            tokens = []
            for r in together(pipe, prompts, gen):  # one step of every prompt, then 11 decode steps of 12 rows
                chunks = [pipe._get(r)]
                while chunks[-1].finish_reason is None:
                    chunks.append(pipe._get(r))
                tokens.append([t for c in chunks for t in c.token_ids])
            return logits, tokens, grouped, pipe.stats()["num_row_group_steps"] - grouped

    one = with_isa(isa_name, lambda: run(1))
    two = with_isa(isa_name, lambda: run(2))
    assert one[2:] == (0, 0), one[2:]
    if linear == "fp32":
        assert two[2:] == (0, 0), two[2:]
    else:  # int4: 8 of the 12 requests seal a block in one of their decode steps, each such step layer by layer
        assert two[2] == 1 and (two[3] == 11 if kv != "int4" else 1 <= two[3] < 11), two[2:]
    np.testing.assert_array_equal(bits(two[0]), bits(one[0]))
    assert two[1] == one[1]


@pytest.mark.skipif(not K.amx_available(), reason="no AMX tile unit here: int8 mode keeps every step off the tiles")
def test_int8_activations_large_steps_on_amx_tiles(gguf_pipe):
    """On an AMX host the int8 mode with bf16 prefill runs a step of 64+ rows (a 200-token prompt) on bf16 tiles
    packed from the interleaved layout, smaller steps on AMX-INT8: the same KL and agreement bounds against the exact
    mode, and the tiles in use (the logits differ from the int8 products')."""
    window = _gpl3_windows(gguf_pipe.tokenizer)[1][:200]
    exact = gguf_pipe.get_logits(window).astype(np.float64)
    cfg = dict(linear_precision="int8", max_batch_size=8, kv_cache_dtype="float32")
    with lmrt.pipeline(default_model_gguf(), lmrt.EngineConfig(prefill_precision="bf16", **cfg)) as pipe:
        assert pipe.info()["int8_weight_layout"] == "interleaved"
        tiles = pipe.get_logits(window).astype(np.float64)
    with lmrt.pipeline(default_model_gguf(), exact_config(**cfg)) as pipe:
        int8 = pipe.get_logits(window).astype(np.float64)
    assert not np.array_equal(tiles, int8)  # the large step ran on the tiles
    check_close_to_exact(exact, tiles, "int8 mode, bf16 tiles for 64+ rows")


def check_close_to_exact(exact, fast, what):
    """The mean KL of fast's next-token distributions against exact's and their top-1 agreement, within the bounds."""
    lp, lq = (
        a - np.log(np.exp(a - a.max(-1, keepdims=True)).sum(-1, keepdims=True)) - a.max(-1, keepdims=True)
        for a in (exact, fast)
    )
    kl = float((np.exp(lp) * (lp - lq)).sum(-1).mean())
    agree = float((exact.argmax(-1) == fast.argmax(-1)).mean())
    print(f"{what} vs exact: mean KL {kl:.2e}, top-1 agreement {agree:.3f}")
    assert kl < INT8_ACT_MEAN_KL and agree > INT8_ACT_TOP1_AGREE


def check_int8_activations(window, exact, layout):
    with lmrt.pipeline(default_model_gguf(), exact_config(linear_precision="int8", max_batch_size=8)) as pipe:
        assert pipe.info()["linear_precision"] == "int8"
        assert pipe.info()["int8_weight_layout"] == layout
        fast = pipe.get_logits(window).astype(np.float64)
        assert not np.array_equal(fast, exact)  # the mode is on
        check_close_to_exact(exact, fast, f"int8 activations ({layout})")
        # Each request's tokens do not depend on the batch around it (a product's rows are independent).
        prompts = [window[: 10 + 9 * i] for i in range(6)]
        gen = lmrt.GenerationConfig(max_new_tokens=16, ignore_eos=True)
        alone = [pipe(p, gen).token_ids for p in prompts]
        assert [r.token_ids for r in pipe(prompts, gen)] == alone
