"""MLX models on disk: a folder `models/<publisher>/<repo>/` with config.json, *.safetensors and tokenizer
files. What `lms ls` and the loader need is read from config.json, tokenizer_config.json and the safetensors
headers (no MLX import: listing models never needs the engine)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

# Bytes per element of the safetensors dtypes that hold weights directly.
_FLOAT_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8}


def is_mlx_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) \
        and not any(folder.glob("*.gguf"))


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _elements(shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def parameter_count(folder: Path, group_size: int) -> int:
    """Weights counted from the safetensors headers: a quantized weight holds one group per scale (whatever
    its bit width, which may differ per tensor), other float tensors their elements."""
    total = 0
    for path in folder.glob("*.safetensors"):
        with open(path, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            header = json.loads(handle.read(size))
        for name, tensor in header.items():
            if name == "__metadata__" or name.endswith((".scales", ".biases")):
                continue
            scales = header.get(name.removesuffix(".weight") + ".scales")
            if tensor["dtype"] == "U32" and scales:
                total += _elements(scales["shape"]) * group_size
            elif tensor["dtype"] in _FLOAT_BYTES:
                total += _elements(tensor["shape"])
    return total


def describe(folder: Path) -> dict:
    """architecture, quantization, bits, context length, chat template and parameters of an MLX folder."""
    config = _read_json(folder / "config.json")
    tokenizer = _read_json(folder / "tokenizer_config.json")
    template = tokenizer.get("chat_template")
    if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text()
    quantization = config.get("quantization") or config.get("quantization_config") or {}
    bits = quantization.get("bits") if isinstance(quantization, dict) else None
    group_size = quantization.get("group_size", 64) if isinstance(quantization, dict) else 64
    return {"architecture": str(config.get("model_type", "unknown")), "bits": bits,
            "quantization": f"{bits}bit" if bits else None,
            "context_length": int(config.get("max_position_embeddings") or 4096),
            "chat_template": template if isinstance(template, str) else None,
            "parameters": parameter_count(folder, group_size), "config": config}
