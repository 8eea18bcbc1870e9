"""The contract between a worker (runtimes/worker.py) and its engine: one loaded model that can generate
(streaming, cancellable), count prompt tokens, tokenize text, render its chat template and embed.

The worker rebuilds the typed request from the daemon's JSON before it calls the engine, so an engine reads
attributes of a `GenerationRequest` / `EmbeddingRequest` (lms/generation/request.py), never dicts. An engine
reports a failure by raising `lms.errors.LmsError`; anything else it raises is an internal error. Engines import
this module and runtimes/common.py, never the reverse: the factory that imports the engines lives in the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from lms.generation.request import EmbeddingRequest, GenerationRequest

Emit = Callable[[dict], None]
Cancelled = Callable[[], bool]


class Engine(Protocol):
    name: str
    version: str
    # True: `generate` only queues the request and returns; the engine emits its events from its own thread,
    # the last one a `done` or `error` event (llama.cpp's batching scheduler). False: `generate` runs the request
    # to the end on the worker's engine thread before it returns.
    concurrent: bool

    def info(self) -> dict:
        """What was loaded: context length, engine and engine_version, model facts."""

    def generate(self, request: GenerationRequest, emit: Emit, cancelled: Cancelled) -> None:
        """Run one request; emit its events (lms/generation/request.py); stop soon after cancelled() is true.
        Raising LmsError before anything was emitted fails the request with that error."""

    def embed(self, request: EmbeddingRequest) -> dict:
        """Return {"embeddings": [[float], ...] (one per input), "prompt_tokens": int}."""

    def tokenize(self, text: str, add_special: bool = ...) -> list[int]:
        """The token ids of raw text (no chat template); BOS/EOS added as for a prompt when `add_special` (each
        engine's default is what its prompts get)."""

    def detokenize(self, tokens: list[int]) -> str:
        """The text of token ids (special tokens as their text); an id outside the vocabulary raises LmsError."""

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's bytes, as `/tokenize` with `with_pieces` shows them."""

    def render_prompt(self, request: GenerationRequest) -> str:
        """The request's messages under the model's chat template, as text, without generating (the start of
        the assistant's turn included); an engine that has no chat template raises LmsError."""

    def count(self, request: GenerationRequest) -> int:
        """Prompt tokens of the request, chat template applied."""

    def on_step_end(self, flush: Callable[[], None]) -> threading.Thread | None:
        """Called once, right after the load. A concurrent engine returns the thread it emits from and calls
        `flush` on that thread after each unit of work (llama.cpp: after every scheduling step); the
        worker then holds that thread's events and writes them together at `flush`, so no other thread wakes
        while the engine computes. An engine that returns a thread must call `flush`, or its events never go
        out. None (every serial engine): events are sent as they are emitted."""
