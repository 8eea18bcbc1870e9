"""What a model can do, as every model list says it: tools, vision, reasoning, embedding. One reading of the
model's metadata and chat template, so `/v1/models`, `/api/v1/models` and Ollama's `/api/show` never disagree."""

from __future__ import annotations

from lms.generation.harmony import is_harmony
from lms.store.catalog import ModelEntry


def reasoning_options(entry: ModelEntry) -> dict | None:
    """LM Studio's `capabilities.reasoning`: the `reasoning` values a request may give, and the default; None for
    a model that does not think. Harmony models (gpt-oss) take an effort; templates with a think block toggle."""
    template = entry.chat_template or ""
    if entry.type != "llm":
        return None
    if is_harmony(template):
        return {"allowed_options": ["low", "medium", "high"], "default": "medium"}
    if "think" in template:
        return {"allowed_options": ["off", "on"], "default": "on"}
    return None


def capability_names(entry: ModelEntry) -> list[str]:
    """The short names OpenAI-style lists carry: embedding, or tools, vision and reasoning as the model has them."""
    if entry.type == "embedding":
        return ["embedding"]
    found = ["tools"] if entry.trained_for_tool_use else []
    if entry.vision:
        found.append("vision")
    if reasoning_options(entry):
        found.append("reasoning")
    return found


def description(entry: ModelEntry) -> str:
    """One line on the model from its own metadata (LM Studio shows a curated one; lms says what the file says)."""
    kind = "embedding model" if entry.type == "embedding" else "vision language model" if entry.vision else \
        "language model"
    size = f"{entry.params_string} " if entry.params_string else ""
    quant = f", {entry.quantization}" if entry.quantization else ""
    served = f", served by the upstream '{entry.publisher}'" if entry.format == "upstream" else ""
    return (f"{entry.display_name}: a {size}{entry.architecture} {kind}{quant}, up to {entry.max_context_length:,} "
            f"tokens of context{served}.")
