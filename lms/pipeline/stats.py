"""What LM Studio's native API adds to a generation (`stats`, `model_info`, `runtime`): the /api/v0 endpoints
return all three, and OpenAI chat completions carry the speculative-decoding counters of `stats`."""

from __future__ import annotations

import importlib.metadata
import platform
from functools import lru_cache

from lms.generation.finish import lmstudio_stop_reason


@lru_cache(maxsize=1)
def runtime() -> dict:
    """The engine that serves GGUF models, read from its package metadata (the daemon never imports it)."""
    try:
        version = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    machine = platform.machine().lower().replace("amd64", "x86_64")
    return {"name": f"llama.cpp-{platform.system().lower()}-{machine}-cpu", "version": version,
            "supported_formats": ["gguf"]}


def model_info(model) -> dict:
    entry = model.entry
    return {"arch": entry.architecture, "quant": entry.quantization, "format": "gguf",
            "context_length": model.context_length}


DRAFT_STATS = ("draft_model", "speculative", "total_draft_tokens_count", "accepted_draft_tokens_count",
               "rejected_draft_tokens_count", "ignored_draft_tokens_count")


def draft_stats(raw: dict) -> dict:
    """LM Studio's speculative-decoding stats, when the generation had a draft model."""
    return {key: raw[key] for key in DRAFT_STATS if key in raw}


def stats(raw: dict, finish_reason: str | None) -> dict:
    return {"tokens_per_second": raw.get("tokens_per_second"), "time_to_first_token": raw.get("time_to_first_token"),
            "generation_time": raw.get("generation_time"),
            "stop_reason": lmstudio_stop_reason(finish_reason), **draft_stats(raw)}


def native_details(model, raw_stats: dict, finish_reason: str | None) -> dict:
    return {"stats": stats(raw_stats, finish_reason), "model_info": model_info(model), "runtime": runtime()}


def details(model, raw_stats: dict, finish_reason: str | None, native: bool) -> dict:
    """LM Studio's extras of an answer: all of them on /api/v0; on /v1 only the draft counters, when a draft (a
    model or ngram) was used."""
    if native:
        return native_details(model, raw_stats, finish_reason)
    found = draft_stats(raw_stats or {})
    return {"stats": found} if found else {}
