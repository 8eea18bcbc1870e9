"""The MLX engine, on mlx-lm: the same protocol and events as the llama.cpp engine.

One model per worker. Generation runs `mlx_lm.generate.generate_step` over a prompt cache kept between requests,
so a prompt that starts like the previous conversation only computes its new tokens (reported as cached tokens).
Sampling, logit bias and the penalties map to mlx-lm's sampler and logits processors; stop strings, logprobs and
the reasoning-token count work as in the llama.cpp engine. JSON-schema and JSON-object output and GBNF grammars are
enforced by a logits processor (runtimes/mlx/constraints.py). Images are not available on MLX here: such a request
is refused as invalid instead of being silently ignored.
"""

from __future__ import annotations

import importlib.metadata
import time

from lms.errors import LmsError
from lms.generation.chat_template import render_request
from lms.generation.finish import done_event
from lms.generation.request import EmbeddingRequest, GenerationRequest, Sampling
from lms.generation.stops import StopMatcher
from runtimes.base import Cancelled, Emit
from runtimes.common import (
    Progress,
    PromptProgress,
    ReasoningCounter,
    SerialEngine,
    format_param,
    generation_limits,
    start_of_empty_prompt,
    text_event,
    token_entry,
)

# request field -> what it is, for the error
UNSUPPORTED = {"images": "Image input", "suffix": "Fill-in-the-middle (suffix)"}


class MlxEngine(SerialEngine):
    name = "mlx"

    def __init__(self, path: str, context_length: int, embedding: bool = False, threads: int = 0,
                 chat_template: str | None = None, projector: str | None = None, progress: Progress | None = None):
        if embedding or projector:
            raise LmsError.invalid("The MLX engine serves chat and completion models only (no embeddings or vision).",
                                   code="model_not_supported")
        from mlx_lm import load
        from mlx_lm.models.cache import make_prompt_cache

        if progress and not progress(0.05):
            raise LmsError.cancelled("load cancelled", code="cancelled")
        try:
            self.model, self.tokenizer = load(path)
        except Exception as exc:  # noqa: BLE001 - any load failure is reported, the worker stays clean
            raise LmsError.internal(f"mlx-lm could not load {path}: {exc}", code="model_load_failed") from exc
        self.version = importlib.metadata.version("mlx-lm")
        self.n_ctx = context_length
        self.chat_template = chat_template or getattr(self.tokenizer, "chat_template", None)
        self.cache = make_prompt_cache(self.model)
        self.cached: list[int] = []  # the tokens the prompt cache holds, in order
        self.prompt_text = ""
        self._grammar_index = None  # built on the first structured request
        bos = self.tokenizer.bos_token
        self.bos_text, self.eos_text = bos or "", self.tokenizer.eos_token or ""
        if progress:
            progress(1.0)

    def info(self) -> dict:
        return {"context_length": self.n_ctx, "engine": "mlx", "engine_version": self.version,
                "vocab_size": len(self.tokenizer.get_vocab())}

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        """The token ids of the text; `add_special`: the tokenizer's BOS (and EOS) where it adds them."""
        return list(self.tokenizer.encode(text, add_special_tokens=add_special))

    def _check_tokens(self, tokens: list[int]) -> None:
        size = len(self.tokenizer.get_vocab())
        for index, token in enumerate(tokens):
            if not 0 <= token < size:
                raise LmsError.invalid(f"Token {token} is not in this model's vocabulary (0 to {size - 1}).",
                                       f"tokens[{index}]", code="invalid_token")

    def detokenize(self, tokens: list[int]) -> str:
        self._check_tokens(tokens)
        return self.tokenizer.decode(tokens, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's own bytes: byte-level BPE tokens through the byte table, SentencePiece ones with their
        word marks as spaces and byte tokens as their byte, others as the tokenizer decodes them alone."""
        self._check_tokens(tokens)
        from mlx_lm import tokenizer_utils

        names = self.tokenizer.convert_ids_to_tokens(tokens)
        kind = type(self.tokenizer.detokenizer).__name__
        pieces = []
        for token, name in zip(tokens, names):
            if kind == "BPEStreamingDetokenizer" and isinstance(name, str):
                table = tokenizer_utils._byte_decoder()
                pieces.append(b"".join(bytes([table[c]]) if c in table else c.encode() for c in name))
            elif kind == "SPMStreamingDetokenizer" and isinstance(name, str):
                byte = len(name) == 6 and name.startswith("<0x") and name.endswith(">")
                pieces.append(bytes([int(name[3:5], 16)]) if byte else name.replace("\u2581", " ").encode())
            else:
                pieces.append(self.tokenizer.decode([token]).encode())
        return pieces

    def _prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], bool]:
        if request.messages is None:
            self.prompt_text = request.prompt or ""
            return self.tokenize(self.prompt_text) or start_of_empty_prompt(self.tokenizer.bos_token_id), False
        text = self.render_prompt(request)
        self.prompt_text = text
        return self.tokenize(text), text.rstrip().endswith("<think>")

    def render_prompt(self, request: GenerationRequest) -> str:
        """The messages under the chat template, with the tokenizer's BOS and EOS text."""
        return render_request(self.chat_template, request, bos_token=self.bos_text, eos_token=self.eos_text)

    def count(self, request: GenerationRequest) -> int:
        """The prompt tokens `generate` reports for the same request (which it refuses with images or a suffix)."""
        self._check_supported(request)
        return len(self._prompt_tokens(request)[0])

    def _check_supported(self, request: GenerationRequest) -> None:
        for key, what in UNSUPPORTED.items():
            if getattr(request, key):
                raise LmsError.invalid(f"{what} is not available on the MLX engine yet; use a GGUF model for it.",
                                       key, code="unsupported_on_mlx")

    def _reuse_cache(self, prompt: list[int]) -> int:
        """Trim the prompt cache to the longest prefix it shares with this prompt; returns that length (at
        least one prompt token is always left to compute)."""
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        common = 0
        for have, want in zip(self.cached, prompt):
            if have != want:
                break
            common += 1
        common = min(common, len(prompt) - 1)
        surplus = len(self.cached) - common
        if surplus and can_trim_prompt_cache(self.cache):
            trim_prompt_cache(self.cache, surplus)
        elif surplus:
            self.cache, common = make_prompt_cache(self.model), 0
        self.cached = self.cached[:common]
        return common

    def _processors(self, sampling: Sampling, cached_prompt: list[int]):
        """The sampler and the penalty processors. mlx-lm hands processors only the tokens fed in this call, so
        a reused prompt cache would shrink the penalty window; they get the cached prompt prepended, and the
        same request then samples the same way whatever the cache held."""
        import mlx.core as mx
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        sampler = make_sampler(temp=sampling.temperature, top_p=sampling.top_p, min_p=sampling.min_p,
                               top_k=sampling.top_k)
        bias = {int(k): float(v) for k, v in (sampling.logit_bias or {}).items()}
        processors = make_logits_processors(logit_bias=bias or None,
                                            repetition_penalty=sampling.repeat_penalty,
                                            presence_penalty=sampling.presence_penalty or None,
                                            frequency_penalty=sampling.frequency_penalty or None)
        if not cached_prompt:
            return sampler, processors
        history = mx.array(cached_prompt)

        def with_history(processor):
            return lambda tokens, logits: processor(
                history if tokens is None else mx.concatenate([history, tokens]), logits)

        return sampler, [with_history(p) for p in processors]

    def _exact_detokenizer(self):
        """mlx-lm's streaming detokenizers drop the leading space of the first token (a display nicety for
        chat); the text must stay exact, as llama.cpp gives it (" yes" after "Answer:" is not "yes")."""
        detokenizer = self.tokenizer.detokenizer
        detokenizer.reset()
        if hasattr(detokenizer, "trim_space"):
            detokenizer.trim_space = False
        elif hasattr(detokenizer, "_maybe_trim_space"):
            detokenizer.text, detokenizer.offset = "\0", 1  # not empty: nothing counts as the start
        return detokenizer

    def _constraint(self, request: GenerationRequest, fed_prompt: int):
        from runtimes.mlx.constraints import GrammarProcessor, TokenizerIndex, grammar_for

        try:
            grammar = grammar_for(request)
            if grammar is None:
                return None
            if self._grammar_index is None:
                self._grammar_index = TokenizerIndex(self.tokenizer)
            return GrammarProcessor(self._grammar_index, grammar, fed_prompt)
        except (ValueError, RecursionError) as exc:  # RecursionError: GBNF nested too deep to translate
            raise LmsError.invalid(f"The grammar cannot be used: {exc}", format_param(request),
                                   code="invalid_format") from exc

    def _logprobs(self, token: int, logprobs, top: int) -> dict:
        import mlx.core as mx

        piece = self.tokenizer.decode([token]).encode("utf-8")
        entry = token_entry(piece, float(logprobs[token].item()))
        entry["top_logprobs"] = []
        if top:
            best = mx.argsort(-logprobs)[:top].tolist()
            entry["top_logprobs"] = [token_entry(self.tokenizer.decode([t]).encode("utf-8"),
                                                 float(logprobs[t].item())) for t in best]
        return entry

    def generate(self, request: GenerationRequest, emit: Emit, cancelled: Cancelled) -> None:
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        self._check_supported(request)
        started = time.perf_counter()
        prompt, opened_think = self._prompt_tokens(request)
        limit, seed = generation_limits(request, len(prompt), self.n_ctx)
        sampling = request.sampling
        mx.random.seed(seed)
        cached = self._reuse_cache(prompt)
        sampler, processors = self._processors(sampling, prompt[:cached])
        constraint = self._constraint(request, len(prompt) - cached)
        if constraint is not None:
            processors = [*processors, constraint]
        stops = StopMatcher(request.stop or [])
        detokenizer = self._exact_detokenizer()
        top_logprobs = request.logprobs
        reasoning_start = request.reasoning_start
        reasoning = ReasoningCounter("inside" if reasoning_start and opened_think else reasoning_start)
        eos = set(self.tokenizer.eos_token_ids)
        pending_logprobs: list[dict] = []
        finish, count, first_token_at, hit_stop, produced = "length", 0, None, False, []
        self.cached = list(prompt)  # the prompt goes into the cache as generate_step computes it
        progress = PromptProgress(emit)
        steps = generate_step(mx.array(prompt[cached:]), self.model, max_tokens=limit if limit > 0 else 0,
                              sampler=sampler, logits_processors=processors, prompt_cache=self.cache,
                              prompt_progress_callback=(lambda done, total: progress.report(
                                  cached + done, cached + total, cached)) if request.prompt_progress else None)
        try:
            for token, logprobs in steps if limit > 0 else ():
                token = int(token)
                produced.append(token)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    emit({"type": "prompt", "prompt_tokens": len(prompt), "cached_tokens": cached,
                          "reasoning_open": reasoning.state == "inside",
                          **({"prompt_text": self.prompt_text} if request.echo_prompt else {})})
                if cancelled():
                    finish = "cancelled"
                    break
                if token in eos:
                    finish = "stop"
                    break
                count += 1
                if top_logprobs is not None:
                    pending_logprobs.append(self._logprobs(token, logprobs, top_logprobs))
                detokenizer.add_token(token)
                piece = detokenizer.last_segment
                reasoning.add(piece)
                text, hit_stop = stops.feed(piece)
                if text:
                    emit(text_event(text, pending_logprobs))
                if hit_stop:
                    finish = "stop"
                    break
                if count >= limit:
                    break
        finally:
            steps.close()
        # The cache holds what generate_step fed to the model, which may or may not include the last token it
        # yielded (it feeds each token before yielding it, except at its own max_tokens): ask the cache.
        self.cached = (prompt + produced)[:self.cache[0].offset]
        if not hit_stop:
            detokenizer.finalize()
            tail = stops.feed(detokenizer.last_segment)[0] + stops.flush()
            if finish != "cancelled" and (tail or pending_logprobs):
                emit(text_event(tail, pending_logprobs))
        emit(done_event(finish, len(prompt), count, cached, reasoning.tokens, started, first_token_at,
                        time.perf_counter()))

    def embed(self, request: EmbeddingRequest) -> dict:
        raise LmsError.invalid("The MLX engine does not compute embeddings.", code="model_not_supported")
