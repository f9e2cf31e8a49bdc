"""prefill_precision="bf16": prompt batches of 32+ rows through AMX tiles (x and weights rounded to bf16).

Checked against HF transformers fp32 with the bf16-vs-fp32 bound the engine tests use, on dense and 4-bit
checkpoints, through the tile unit's software model (LMRT_AMX_EMULATE=1, any CPU) and through the tiles
themselves where the CPU has AMX-BF16 (skipped elsewhere, with the reason).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from conftest import make_tiny_llama
from test_quant_formats import SHAPE_FOR_GROUP, make_tiny_awq

import lmrt
from lmrt._core import kernels as K
from lmrt.config import ConfigError

# bf16 rounding of x and W (2^-9 relative each) through 2 random layers: ~0.7% of the logit range seen;
# the same bound as test_engine.py's bf16-vs-fp32 weights.
BF16_VS_FP32_REL_TOL = 3e-2


def rel_err(a, ref):
    return float(np.abs(a - ref).max() / np.abs(ref).max())


@pytest.fixture(params=["model", "amx"])
def tiles(request, monkeypatch):
    if request.param == "amx":
        if not K.amx_available():
            pytest.skip("CPU lacks AMX-TILE/AMX-BF16, or the OS did not grant the tile state")
        monkeypatch.delenv("LMRT_AMX_EMULATE", raising=False)
    else:
        monkeypatch.setenv("LMRT_AMX_EMULATE", "1")
    return request.param


def cfg(precision, **kw):
    # Chunks of 48 rows: three of the four chunks of a 150-token prompt go to the tiles, the last (6 rows) not.
    return lmrt.EngineConfig(block_size=16, num_threads=2, max_num_batched_tokens=48, cache_memory_gib=0.02,
                             prefill_precision=precision, **kw)


def hf_logits(path, ids, replace=None):
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        if replace:
            params = dict(model.named_parameters())
            for module, w in replace.items():
                params[module + ".weight"].copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))
        return model(torch.tensor([ids])).logits[0].double().numpy()


def test_dense_checkpoint(tiles, tmp_path):
    path = make_tiny_llama(tmp_path / "m", tied=False)
    ids = np.random.RandomState(11).randint(3, 128, size=150).tolist()
    ref = hf_logits(path, ids)
    with lmrt.pipeline(path, cfg("fp32")) as pipe:
        exact = pipe.get_logits(ids)
    with lmrt.pipeline(path, cfg("bf16")) as pipe:
        ours = pipe.get_logits(ids)
        gen = pipe(ids, lmrt.GenerationConfig(max_new_tokens=8, ignore_eos=True))
    assert rel_err(ours, ref) < BF16_VS_FP32_REL_TOL
    assert rel_err(ours[:144], exact[:144]) > 1e-5, "the tiles did not run: bf16 prefill equals fp32"
    # The last chunk (6 rows) stays on the fp32 path, but its attention reads the bf16 chunks' K/V.
    assert len(gen.token_ids) == 8


def test_4bit_checkpoint(tiles, tmp_path):
    g = 64
    shape = SHAPE_FOR_GROUP[g]
    path, dequant = make_tiny_awq(tmp_path / "awq", g, tied=False, **shape)
    dense = make_tiny_llama(tmp_path / "dense", tied=False, **shape)
    ids = np.random.RandomState(12).randint(3, 128, size=150).tolist()
    ref = hf_logits(dense, ids, replace=dequant)
    with lmrt.pipeline(path, cfg("bf16", lm_head_dtype="dense")) as pipe:
        assert pipe.info()["weight_format"] == "w4"
        assert rel_err(pipe.get_logits(ids), ref) < BF16_VS_FP32_REL_TOL


def test_without_amx_bf16_prefill_is_refused_with_the_fix(monkeypatch, tmp_path):
    if K.amx_available():
        pytest.skip("this CPU has AMX: the refusal cannot be shown")
    monkeypatch.delenv("LMRT_AMX_EMULATE", raising=False)
    with pytest.raises(ConfigError, match="prefill_precision='fp32'"):
        lmrt.pipeline(make_tiny_llama(tmp_path / "m"), cfg("bf16"))
    with pytest.raises(ConfigError, match="choose 'fp32' or 'bf16'"):
        lmrt.EngineConfig(prefill_precision="fp16")
