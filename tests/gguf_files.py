"""Tiny but complete GGUF model files for the unit tests of the model store, written with the `gguf` package."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

CHATML_WITH_TOOLS = (
    "{% if tools %}{{ tools | tojson }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)
Q4_K_M, Q8_0, Q4_0, Q4_1, F16 = 15, 7, 2, 3, 1  # llama.cpp's general.file_type values


def write_gguf(path: Path, arch: str = "llama", *, file_type: int | None = Q4_K_M, context_length: int | None = 4096,
               name: str | None = None, size_label: str | None = None, chat_template: str | None = None,
               pooling_type: int | None = None, vocab_size: int = 100,
               tensors: tuple[tuple[int, ...], ...] = ((4, 8), (8,))) -> Path:
    """A small but complete GGUF: metadata, a vocabulary long enough to be skipped, zero-filled tensors."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch)
    if context_length is not None:
        writer.add_context_length(context_length)
    if file_type is not None:
        writer.add_file_type(file_type)
    if name is not None:
        writer.add_name(name)
    if size_label is not None:
        writer.add_size_label(size_label)
    if chat_template is not None:
        writer.add_chat_template(chat_template)
    if pooling_type is not None:
        writer.add_pooling_type(gguf.PoolingType(pooling_type))
    writer.add_array("tokenizer.ggml.tokens", [f"token-{i}" for i in range(vocab_size)])
    writer.add_array("tokenizer.ggml.scores", [float(i) for i in range(vocab_size)])
    writer.add_uint32("test.after_vocab", 1234)  # read correctly only if the arrays were stepped over exactly
    for index, shape in enumerate(tensors):
        writer.add_tensor(f"tensor.{index}", np.zeros(shape, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def write_chat_models(root: Path) -> None:
    """Two small chat models with a tool-aware template, `pub/chat` and `pub/other`, under a models folder."""
    write_gguf(root / "Pub" / "Chat-GGUF" / "chat-Q4_K_M.gguf", chat_template=CHATML_WITH_TOOLS)
    write_gguf(root / "Pub" / "Other-GGUF" / "other-Q4_K_M.gguf", chat_template=CHATML_WITH_TOOLS)
