"""What a model's vocabulary says about it without loading it: its fill-in-the-middle tokens (Ollama's `insert`
capability, autocomplete with `suffix`)."""

from __future__ import annotations

import functools
from pathlib import Path

from lms.store.gguf import GGUFError, find_strings

# (prefix, suffix, middle) as the code-model families name them: Qwen2.5-Coder, StarCoder, DeepSeek-Coder,
# CodeGemma, CodeLlama. llama.cpp finds the same tokens by these names when it loads the model.
FILL_IN_THE_MIDDLE = [
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    ("<|fim_begin|>", "<|fim_hole|>", "<|fim_end|>"),
    ("▁<PRE>", "▁<SUF>", "▁<MID>"),
    ("<PRE>", "<SUF>", "<MID>"),
]


def fill_in_the_middle_tokens(path: Path) -> tuple[str, str, str] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _fim_tokens(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _fim_tokens(path: str, _size: int, _mtime_ns: int) -> tuple[str, str, str] | None:
    wanted = {token for family in FILL_IN_THE_MIDDLE for token in family}
    try:
        found = find_strings(path, "tokenizer.ggml.tokens", wanted)
    except (OSError, GGUFError, KeyError):
        return None
    for family in FILL_IN_THE_MIDDLE:
        if all(token in found for token in family):
            return family
    return None
