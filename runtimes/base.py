"""The protocol a worker drives: one loaded model that can generate (streaming, cancellable) and embed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Emit = Callable[[dict], None]
Cancelled = Callable[[], bool]


class Engine(Protocol):
    name: str
    version: str

    def info(self) -> dict:
        """What was loaded: context length, model type, memory facts."""

    def generate(self, request: dict, emit: Emit, cancelled: Cancelled) -> None:
        """Run one GenerationRequest (as a dict); emit its events; stop soon after cancelled() is true.
        An engine with `concurrent = True` only queues it here and emits from its own thread, ending with a
        `done` or `error` event; others run it to the end before returning."""

    def embed(self, request: dict) -> dict:
        """Run one EmbeddingRequest (as a dict); return {"embeddings": [[float]], "prompt_tokens": int}."""

    def tokenize(self, text: str) -> list[int]:
        ...

    def count(self, request: dict) -> int:
        """Prompt tokens of a GenerationRequest (as a dict), template applied."""


def load_engine(runtime: str, options: dict, progress: Callable[[float], bool] | None = None) -> Engine:
    """Load a model; `progress` gets 0..1 as it loads and may return False to abort."""
    if runtime == "llama.cpp" and options.get("embedding"):
        from runtimes.llama_cpp.embedding import LlamaCppEmbedder

        return LlamaCppEmbedder(**options, progress=progress)
    if runtime == "llama.cpp":
        from runtimes.llama_cpp.engine import LlamaCppEngine

        return LlamaCppEngine(**options, progress=progress)
    if runtime == "mlx":
        from runtimes.mlx.engine import MlxEngine

        return MlxEngine(**options, progress=progress)
    raise ValueError(f"unknown runtime {runtime!r}")
