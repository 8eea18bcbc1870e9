"""Embedding models on llama-cpp-python's `Llama` (encoder models need a whole input in one micro-batch)."""

from __future__ import annotations

from llama_cpp import Llama

from runtimes.common import EngineError, Progress, physical_cores
from runtimes.llama_cpp.loading import reporting_progress


class LlamaCppEmbedder:
    name = "llama.cpp"

    def __init__(self, path: str, context_length: int, threads: int = 0, progress: Progress | None = None, **_unused):
        import llama_cpp

        self.version = llama_cpp.__version__
        threads = threads or physical_cores()
        with reporting_progress(progress):
            try:
                self.llm = Llama(model_path=path, n_ctx=context_length, n_threads=threads, n_threads_batch=threads,
                                 embedding=True, n_batch=context_length, n_ubatch=context_length, verbose=False)
            except ValueError as exc:
                raise EngineError(f"llama.cpp could not load {path}: {exc}", 500, "model_load_failed") from exc
        self.n_ctx = self.llm.n_ctx()

    def info(self) -> dict:
        return {"context_length": self.n_ctx, "engine": self.name, "engine_version": self.version,
                "embedding": True, "n_vocab": self.llm.n_vocab()}

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def generate(self, request: dict, emit, cancelled) -> None:
        raise EngineError("This is an embedding model: it cannot generate text.", 400, "model_not_supported", "model")

    def count(self, request: dict) -> int:
        return len(self.tokenize(request.get("prompt") or ""))

    def embed(self, request: dict) -> dict:
        inputs = request["inputs"]
        counts = [len(self.llm.tokenize(text.encode("utf-8"), add_bos=True)) for text in inputs]
        for index, count in enumerate(counts):
            if count > self.n_ctx:
                raise EngineError(
                    f"Input {index} has {count} tokens, more than this model's context length of {self.n_ctx}.",
                    400, "context_length_exceeded", "input")
        vectors = self.llm.embed(inputs, normalize=True, truncate=False)
        return {"embeddings": vectors, "prompt_tokens": sum(counts)}
