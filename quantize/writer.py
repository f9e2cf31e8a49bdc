"""Write an AutoAWQ "gemm" checkpoint: config.json with quantization_config, model.safetensors, tokenizer files.

Quantised linears are stored as ``<name>.qweight`` / ``.qzeros`` / ``.scales`` (see quantizer.py);
everything else (embeddings, norms with the AWQ scales folded in, an untied lm_head) as float16.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from .quantizer import QuantizedWeight

WEIGHT_FILE = "model.safetensors"
_NOT_COPIED = {"config.json", "model.safetensors.index.json"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def quantization_config(group_size: int, bits: int = 4) -> dict:
    return {
        "quant_method": "awq",
        "bits": bits,
        "group_size": group_size,
        "zero_point": True,
        "version": "gemm",
        "modules_to_not_convert": None,
    }


def write_checkpoint(
    model: nn.Module, quantized: dict[str, QuantizedWeight], source_dir: Path, out_dir: Path, group_size: int
) -> Path:
    """Write ``model`` with ``quantized`` (full linear name -> weight) to ``out_dir``; returns the weight file."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    tensors = {}
    for name, tensor in model.state_dict().items():
        module_name, _, kind = name.rpartition(".")
        if module_name in quantized:
            if kind == "weight":
                tensors.update({f"{module_name}.{k}": v for k, v in quantized[module_name].to_awq().items()})
            else:  # bias
                tensors[name] = tensor.detach().half().contiguous()
        elif tied and name == "lm_head.weight":
            continue
        else:
            tensors[name] = tensor.detach().half().contiguous()
    missing = set(quantized) - {name.rpartition(".")[0] for name in tensors}
    if missing:
        raise ValueError(f"quantized linears not in the model: {sorted(missing)[:3]}")
    weight_file = out_dir / WEIGHT_FILE
    save_file(tensors, weight_file, metadata={"format": "pt"})
    _make_readable(weight_file)

    config = json.loads((Path(source_dir) / "config.json").read_text())
    config["quantization_config"] = quantization_config(group_size)
    config["torch_dtype"] = "float16"
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for path in Path(source_dir).iterdir():
        if path.is_file() and path.name not in _NOT_COPIED and not path.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(path, out_dir / path.name)
    return weight_file


def _make_readable(path: Path) -> None:
    """safetensors creates the file 0600; give it the permissions the umask allows, like the other files."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def checkpoint_bytes(model_dir: Path) -> int:
    """Bytes of a checkpoint's weight files (*.safetensors)."""
    return sum(path.stat().st_size for path in Path(model_dir).glob("*.safetensors"))
