"""One GGUF model on llama-cpp-python: chat and raw generation with streaming and cancellation, embeddings.

The decode loop is ours (over `Llama.generate`) so that we count tokens exactly, stop within one token of a
cancel, handle stop strings across token boundaries, and report prompt tokens reused from the KV cache.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import json
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama, LlamaGrammar
from llama_cpp.llama_grammar import JSON_GBNF

from lms.generation.chat_template import TemplateError, render
from lms.generation.stops import StopMatcher
from runtimes.base import Cancelled, Emit
from runtimes.common import (
    EngineError,
    Progress,
    ReasoningCounter,
    done_event,
    generation_limits,
    physical_cores,
    text_event,
    token_entry,
)
from runtimes.llama_cpp.vision import Projector, VisionError

# A chat model that writes one of these has ended its turn and begun another (Ollama's ChatML and Llama 3
# templates stop on them too); harmony's <|start|> is not here: gpt-oss writes several messages per turn.
TURN_START_MARKERS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>")


@contextlib.contextmanager
def _reporting_progress(progress: Progress | None):
    """llama-cpp-python has no load-progress option; give llama.cpp's own callback to the model params it
    creates, for the duration of one load."""
    if progress is None:
        yield
        return
    library = llama_cpp.llama_cpp
    original = library.llama_model_default_params
    callback = library.llama_progress_callback(lambda value, _data: bool(progress(value)))

    def params_with_progress():
        params = original()
        params.progress_callback = callback
        return params

    library.llama_model_default_params = params_with_progress
    try:
        yield
    finally:
        library.llama_model_default_params = original


class LlamaCppEngine:
    name = "llama.cpp"
    version = llama_cpp.__version__

    def __init__(self, path: str, context_length: int, embedding: bool = False, threads: int = 0,
                 chat_template: str | None = None, progress: Progress | None = None, projector: str | None = None):
        threads = threads or physical_cores()
        self.embedding = embedding
        options = dict(model_path=path, n_ctx=context_length, n_threads=threads, n_threads_batch=threads,
                       embedding=embedding, verbose=False)
        if embedding:
            # Encoder models need a whole input in one micro-batch.
            options.update(n_batch=context_length, n_ubatch=context_length)
        with _reporting_progress(progress):
            try:
                self.llm = Llama(**options)
            except ValueError as exc:
                raise EngineError(f"llama.cpp could not load {path}: {exc}", 500, "model_load_failed") from exc
        self.n_ctx = self.llm.n_ctx()
        self.n_vocab = self.llm.n_vocab()
        try:
            self.projector = Projector(self.llm, projector, threads) if projector else None
        except VisionError as exc:
            raise EngineError(str(exc), 500, "model_load_failed") from exc
        self.chat_template = chat_template
        vocab = self.llm._model.vocab
        self._vocab = vocab
        self.bos_text = self._piece(self.llm.token_bos())
        self.eos_text = self._piece(self.llm.token_eos())
        self._turn_starts = self._single_tokens(TURN_START_MARKERS)
        self.prompt_text = ""

    def _single_tokens(self, markers: tuple[str, ...]) -> set[int]:
        tokens = set()
        for marker in markers:
            ids = self.llm.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                tokens.add(ids[0])
        return tokens

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    def info(self) -> dict:
        return {"context_length": self.n_ctx, "engine": self.name, "engine_version": self.version,
                "embedding": self.embedding, "n_vocab": self.llm.n_vocab()}

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def _prompt_tokens(self, request: dict) -> tuple[list[int], bool]:
        """The prompt's tokens, and whether the chat template itself opened a <think> block.

        With images, the prompt is evaluated into the context here (through the projector): the tokens returned
        are then the context's own history, which the decode loop finds already cached."""
        if request.get("messages") is not None:
            try:
                text = render(self.chat_template, request["messages"], bos_token=self.bos_text,
                              eos_token=self.eos_text, tools=request.get("tools"),
                              **(request.get("template_options") or {}))
            except TemplateError as exc:
                raise EngineError(str(exc), 400, "invalid_prompt", "messages") from exc
            # The tokenizer adds BOS itself when the model wants it; don't double it.
            if self.bos_text and text.startswith(self.bos_text):
                text = text[len(self.bos_text):]
            opened_think = text.rstrip().endswith("<think>")
            self.prompt_text = text
            if request.get("images"):
                return self._evaluate_with_images(text, request["images"]), opened_think
            return self.tokenize(text), opened_think
        self.prompt_text = request.get("prompt") or ""
        return self.tokenize(self.prompt_text), False

    def _evaluate_with_images(self, text: str, images: list[str]) -> list[int]:
        if self.projector is None:
            raise EngineError("This model has no vision projector: it cannot take images.", 400,
                              "model_not_supported", "messages")
        try:
            return self.projector.evaluate(self.llm, text, [base64.b64decode(image) for image in images])
        except VisionError as exc:
            if str(exc).startswith("context:"):
                count = int(str(exc).split(":")[1])
                raise EngineError(
                    f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                    f"{count} input tokens (images included). Please reduce the length of the input.",
                    400, "context_length_exceeded", "messages") from exc
            raise EngineError(str(exc), 400, "invalid_image", "messages") from exc

    def count(self, request: dict) -> int:
        return len(self._prompt_tokens(request)[0])

    def _grammar(self, request: dict) -> LlamaGrammar | None:
        try:
            if request.get("grammar"):
                return LlamaGrammar.from_string(request["grammar"], verbose=False)
            if request.get("json_schema") is not None:
                return LlamaGrammar.from_json_schema(json.dumps(request["json_schema"]), verbose=False)
            if request.get("json_object"):
                return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        except Exception as exc:
            raise EngineError(f"cannot build a grammar for the requested format: {exc}", 400,
                              "invalid_format", "response_format") from exc
        return None

    def _logits_processor(self, logit_bias: dict | None):
        if not logit_bias:
            return None
        n_vocab = self.llm.n_vocab()
        bias = {}
        for key, value in logit_bias.items():
            token = int(key)
            if not 0 <= token < n_vocab:
                raise EngineError(f"logit_bias has a token id out of range: {token}", 400, "invalid_value",
                                  "logit_bias")
            bias[token] = float(value)

        def apply(_input_ids, scores):
            for token, value in bias.items():
                scores[token] += value
            return scores

        return llama_cpp.LogitsProcessorList([apply])

    def generate(self, request: dict, emit: Emit, cancelled: Cancelled) -> None:
        started = time.perf_counter()
        prompt, opened_think = self._prompt_tokens(request)
        limit, seed = generation_limits(request, len(prompt), self.n_ctx)
        sampling = request.get("sampling") or {}
        self.llm.set_seed(seed)
        cached = 0 if request.get("images") else self._cached_prefix(prompt)
        grammar = self._grammar(request)
        generator = self.llm.generate(
            prompt,
            temp=sampling.get("temperature", 0.8),
            top_p=sampling.get("top_p", 0.95),
            top_k=sampling.get("top_k", 40),
            min_p=sampling.get("min_p", 0.05),
            repeat_penalty=sampling.get("repeat_penalty", 1.1),
            presence_penalty=sampling.get("presence_penalty", 0.0),
            frequency_penalty=sampling.get("frequency_penalty", 0.0),
            logits_processor=self._logits_processor(sampling.get("logit_bias")),
            grammar=grammar,
        )
        stops = StopMatcher(request.get("stop") or [])
        chat = request.get("messages") is not None
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        top_logprobs = request.get("logprobs")  # None: no logprobs; N: the chosen token's and N alternatives
        reasoning_start = request.get("reasoning_start")
        if reasoning_start and opened_think:
            reasoning_start = "inside"
        reasoning = ReasoningCounter(reasoning_start)
        pending_logprobs: list[dict] = []
        finish, count, first_token_at, hit_stop_string = "length", 0, None, False
        try:
            for token in generator if limit > 0 else ():
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    emit({"type": "prompt", "prompt_tokens": len(prompt), "cached_tokens": cached,
                          "reasoning_open": reasoning_start == "inside",
                          # the fully templated prompt, only when `lms log stream` listens for it
                          **({"prompt_text": self.prompt_text} if request.get("echo_prompt") else {})})
                if cancelled():
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token) or (chat and token in self._turn_starts):
                    finish = "stop"
                    break
                count += 1
                # Special tokens are text here: tool-call markers such as <|python_tag|> or [TOOL_CALLS] are
                # control tokens, and the output parser needs to see them (end-of-generation ones stop above).
                piece = self.llm.detokenize([token], special=True)
                if top_logprobs is not None:
                    pending_logprobs.append(self._logprobs(token, piece, top_logprobs))
                decoded = decoder.decode(piece)
                reasoning.add(decoded)
                text, hit_stop_string = stops.feed(decoded)
                if text:
                    emit(text_event(text, pending_logprobs))
                if hit_stop_string:
                    finish = "stop"
                    break
                if count >= limit:
                    break
        finally:
            generator.close()
        tail = "" if hit_stop_string else stops.flush() + decoder.decode(b"", final=True)
        if finish != "cancelled" and (tail or pending_logprobs):
            emit(text_event(tail, pending_logprobs))
        emit(done_event(finish, len(prompt), count, cached, reasoning.tokens, started, first_token_at,
                        time.perf_counter()))

    def _logprobs(self, token: int, piece: bytes, top: int) -> dict:
        """The chosen token's log-probability under the model's raw distribution, and the top alternatives."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm._ctx.ctx, -1), shape=(self.n_vocab,))
        shifted = logits - logits.max()
        logprobs = shifted - np.log(np.exp(shifted).sum())
        entry = token_entry(piece, float(logprobs[token]))
        if top:
            best = np.argpartition(-logprobs, top)[:top]
            best = best[np.argsort(-logprobs[best])]
            entry["top_logprobs"] = [token_entry(self.llm.detokenize([int(t)]), float(logprobs[t])) for t in best]
        else:
            entry["top_logprobs"] = []
        return entry

    def _cached_prefix(self, prompt: list[int]) -> int:
        """Prompt tokens the next decode will reuse from the KV cache (as Llama.generate decides it)."""
        if self.llm.n_tokens == 0:
            return 0
        common = 0
        for have, want in zip(self.llm._input_ids, prompt):
            if have != want:
                break
            common += 1
        return min(common, len(prompt) - 1)

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
