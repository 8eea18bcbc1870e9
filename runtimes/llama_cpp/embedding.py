"""Embedding models on llama-cpp-python's `Llama` (encoder models need a whole input in one micro-batch)."""

from __future__ import annotations

from llama_cpp import Llama

from lms.errors import LmsError
from lms.generation.request import EmbeddingRequest, GenerationRequest
from runtimes.common import Progress, SerialEngine, physical_cores
from runtimes.llama_cpp.loading import reporting_progress


class LlamaCppEmbedder(SerialEngine):
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
                raise LmsError.internal(f"llama.cpp could not load {path}: {exc}", code="model_load_failed") from exc
        self.n_ctx = self.llm.n_ctx()

    def info(self) -> dict:
        return {"context_length": self.n_ctx, "engine": self.name, "engine_version": self.version,
                "embedding": True, "n_vocab": self.llm.n_vocab()}

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def generate(self, request: GenerationRequest, emit, cancelled) -> None:
        raise LmsError.invalid("This is an embedding model: it cannot generate text.", "model",
                               code="model_not_supported")

    def render_prompt(self, request: GenerationRequest) -> str:
        raise LmsError.invalid("This is an embedding model: it has no chat template.", "model",
                               code="model_not_supported")

    def count(self, request: GenerationRequest) -> int:
        return len(self.tokenize(request.prompt or ""))

    def embed(self, request: EmbeddingRequest) -> dict:
        inputs = request.inputs
        counts = [len(self.llm.tokenize(text.encode("utf-8"), add_bos=True)) for text in inputs]
        for index, count in enumerate(counts):
            if count > self.n_ctx and not request.truncate:
                raise LmsError.invalid(
                    f"Input {index} has {count} tokens, more than this model's context length of {self.n_ctx}.",
                    "input", code="context_length_exceeded")
        vectors = self.llm.embed(inputs, normalize=True, truncate=request.truncate)
        return {"embeddings": vectors, "prompt_tokens": sum(min(count, self.n_ctx) for count in counts)}
