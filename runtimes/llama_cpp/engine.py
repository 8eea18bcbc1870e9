"""One GGUF chat/completion model on llama.cpp: requests are turned into token jobs for the batching scheduler, and
each job's tokens back into events (text with logprobs, stop strings, reasoning count, usage, timing).

The decode loop is ours, on llama.cpp's C API through llama-cpp-python's bindings: one context with N slots,
sampling in llama.cpp's sampler chains, so no Python runs over the vocabulary per token.
"""

from __future__ import annotations

import base64
import codecs
import threading
import time
from collections.abc import Callable
from pathlib import Path

import llama_cpp

from lms.errors import LmsError
from lms.generation.chat_template import render_request
from lms.generation.finish import done_event
from lms.generation.request import IMAGE_MARKER, DraftSpec, EmbeddingRequest, GenerationRequest
from lms.generation.stops import StopMatcher
from runtimes.base import Cancelled, Emit
from runtimes.common import (
    Progress,
    PromptProgress,
    ReasoningCounter,
    error_event,
    generation_limits,
    physical_cores,
    start_of_empty_prompt,
    text_event,
)
from runtimes.llama_cpp.disk_cache import DiskCache, fingerprint
from runtimes.llama_cpp.draft import DraftModel, check_vocabularies
from runtimes.llama_cpp.loading import load_model, new_context
from runtimes.llama_cpp.ngram import MAX_LENGTH as NGRAM_MAX_TOKENS
from runtimes.llama_cpp.ngram import PromptLookup
from runtimes.llama_cpp.prefix_cache import HostCache
from runtimes.llama_cpp.sampling import SamplerChain, logprobs_entry, token_pieces
from runtimes.llama_cpp.scheduler import Job, Scheduler
from runtimes.llama_cpp.vision import Projector, VisionError

# A chat model that writes one of these has ended its turn and begun another (Ollama's ChatML and Llama 3
# templates stop on them too); harmony's <|start|> is not here: gpt-oss writes several messages per turn.
TURN_START_MARKERS = ("<|im_start|>", "<|start_header_id|>", "<start_of_turn>")
BATCH = 512  # tokens per decode step: prompt chunks share a step with the running streams
DEFAULT_DRAFT_TOKENS = 8
DRAFT_OUTPUTS = 32  # logits rows per step beyond one per slot: what all drafts of a step may check together


class LlamaCppEngine:
    name = "llama.cpp"
    version = llama_cpp.__version__
    concurrent = True  # generate() queues the request and returns; events come from the scheduler thread

    def __init__(self, path: str, context_length: int, embedding: bool = False, threads: int = 0,
                 chat_template: str | None = None, progress: Progress | None = None, projector: str | None = None,
                 parallel: int = 4, host_cache_bytes: int = 0, draft: dict | None = None,
                 kv_cache_type: str = "f16", flash_attention: str = "auto", batch_size: int | None = None,
                 draft_min_probability: float = 0.0, speculative: str | None = None,
                 disk_cache: dict | None = None, batch_invariant: bool = False):
        """`draft`: the draft model the load named, as DraftSpec's fields; `kv_cache_type`: f16, q8_0 or q4_0 (K
        and V); `flash_attention`: on, off or auto; `batch_size`: tokens per decode step (n_batch);
        `draft_min_probability`: a draft stops proposing at a token its own top probability is below;
        `speculative`: "ngram" drafts from the text itself (prompt lookup) when no draft model is named;
        `disk_cache`: {"dir", "bytes"}, where stored conversations' KV states are kept across restarts;
        `batch_invariant`: weights in the kernels that give a token the same logits alone or in a batch (a model
        that checks drafts then writes exactly the text it writes without them)."""
        self.threads = threads or physical_cores()
        self.model = load_model(path, progress, repack=not batch_invariant)
        self.vocab = self.model.vocab
        self.n_slots = max(1, parallel)
        self.max_outputs = self.n_slots + DRAFT_OUTPUTS
        self.n_batch = batch_size or BATCH
        self.kv_cache_type, self.draft_min_probability = kv_cache_type, draft_min_probability
        self.ctx = new_context(self.model, context_length, self.n_slots, self.n_batch, self.threads,
                               self.max_outputs, kv_cache_type, flash_attention)
        self.n_ctx = llama_cpp.llama_n_ctx_seq(self.ctx)  # what one request may use
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.piece = token_pieces(self.vocab)
        try:
            self.projector = Projector(self.model.model, projector, self.threads) if projector else None
        except VisionError as exc:
            raise LmsError.internal(str(exc), code="model_load_failed") from exc
        self.chat_template = chat_template
        self.bos_text = self._special_text(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(llama_cpp.llama_vocab_eos(self.vocab))
        self._turn_starts = self._single_tokens(TURN_START_MARKERS)
        self.host_cache = HostCache(host_cache_bytes)
        n_swa = llama_cpp.llama_model_n_swa(self.model.model) if hasattr(llama_cpp, "llama_model_n_swa") else 0
        self.disk_cache = DiskCache(Path(disk_cache["dir"]), fingerprint(path, kv_cache_type, self.n_ctx,
                                                                         flash_attention), int(disk_cache["bytes"])) \
            if disk_cache and disk_cache.get("bytes") else None
        self.scheduler = Scheduler(self.ctx, self.n_slots, self.n_batch, self.max_outputs, self.host_cache, n_swa,
                                   self.disk_cache)
        self.drafts: dict[str, DraftModel] = {}
        self._draft_lock = threading.Lock()
        spec = DraftSpec(**draft) if draft else None
        self.default_draft = self._draft(spec) if spec else None
        self.default_draft_tokens = (spec.max_tokens if spec else None) or DEFAULT_DRAFT_TOKENS
        vocab = self.vocab  # one lookup for every slot: it keeps each sequence's index apart
        self.lookup = PromptLookup(lambda token: llama_cpp.llama_vocab_is_eog(vocab, token)
                                   or llama_cpp.llama_vocab_is_control(vocab, token))
        self.speculative = speculative if speculative == "ngram" else None

    # --- model facts ----------------------------------------------------------------------------------------

    def _special_text(self, token: int) -> str:
        return self.piece(token).decode("utf-8", errors="ignore") if token >= 0 else ""

    def _single_tokens(self, markers: tuple[str, ...]) -> set[int]:
        tokens = set()
        for marker in markers:
            ids = self.model.tokenize(marker.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                tokens.add(ids[0])
        return tokens

    def _fill_in_the_middle(self, prefix: str, suffix: str) -> str:
        """Prefix, suffix, middle (the order code models are trained on), with the tokens llama.cpp found in
        this model's vocabulary."""
        tokens = (llama_cpp.llama_vocab_fim_pre(self.vocab), llama_cpp.llama_vocab_fim_suf(self.vocab),
                  llama_cpp.llama_vocab_fim_mid(self.vocab))
        if min(tokens) < 0:
            raise LmsError.invalid("This model has no fill-in-the-middle tokens: 'suffix' needs a code model "
                                   "trained for it (such as Qwen2.5-Coder).", "suffix", code="model_not_supported")
        before, after, middle = (self._special_text(token) for token in tokens)
        return f"{before}{prefix}{after}{suffix}{middle}"

    def info(self) -> dict:
        return {"context_length": self.n_ctx, "engine": self.name, "engine_version": self.version,
                "embedding": False, "n_vocab": self.n_vocab, "parallel": self.n_slots, "batch_size": self.n_batch,
                "kv_cache_type": self.kv_cache_type,
                "draft_model": self.default_draft.name if self.default_draft else None,
                "speculative": self.speculative}

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Special tokens written in the text are parsed as such; `add_special`: BOS (and EOS) where the model wants
        them, as for a prompt."""
        return self.model.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def _check_tokens(self, tokens: list[int]) -> None:
        for index, token in enumerate(tokens):
            if not 0 <= token < self.n_vocab:
                raise LmsError.invalid(f"Token {token} is not in this model's vocabulary (0 to {self.n_vocab - 1}).",
                                       f"tokens[{index}]", code="invalid_token")

    def token_pieces(self, tokens: list[int]) -> list[bytes]:
        """Each token's bytes (special tokens as their text); a piece may be part of a UTF-8 character."""
        self._check_tokens(tokens)
        return [self.piece(token) for token in tokens]

    def detokenize(self, tokens: list[int]) -> str:
        """The text of the tokens, special tokens included as their text."""
        return b"".join(self.token_pieces(tokens)).decode("utf-8", errors="replace")

    def _draft(self, spec: DraftSpec) -> DraftModel:
        """The draft model a request or the load named, loaded once and kept."""
        with self._draft_lock:
            found = self.drafts.get(spec.path)
            if found is None:
                model = load_model(spec.path)
                name = spec.name or spec.path
                check_vocabularies(self.model, model, name)
                found = DraftModel(model, name, self.n_ctx, self.n_slots, self.threads)
                self.drafts[spec.path] = found
            return found

    # --- requests -------------------------------------------------------------------------------------------

    def _prompt_text(self, request: GenerationRequest) -> tuple[str, bool]:
        """The prompt as text, and whether the chat template itself opened a <think> block."""
        if request.messages is None:
            if request.suffix is not None:
                return self._fill_in_the_middle(request.prompt or "", request.suffix), False
            return request.prompt or "", False
        text = self.render_prompt(request)
        # The tokenizer adds BOS itself when the model wants it; don't double it.
        if self.bos_text and text.startswith(self.bos_text):
            text = text[len(self.bos_text):]
        return text, text.rstrip().endswith("<think>")

    def render_prompt(self, request: GenerationRequest) -> str:
        """The messages under the chat template, with the model's own BOS and EOS text (as the template puts them)."""
        return render_request(self.chat_template, request, bos_token=self.bos_text, eos_token=self.eos_text)

    def count(self, request: GenerationRequest) -> int:
        """The prompt tokens `generate` reports for the same request: with images, the positions of the text and
        image chunks the projector splits the prompt into."""
        text = self._prompt_text(request)[0]
        if request.images:
            if self.projector is None:
                raise LmsError.invalid("This model has no vision projector: it cannot take images.", "messages",
                                       code="model_not_supported")
            return self._count_with_images(text, [base64.b64decode(image) for image in request.images])
        return len(self.tokenize(text) or start_of_empty_prompt(llama_cpp.llama_vocab_bos(self.vocab)))

    def _count_with_images(self, text: str, images: list[bytes]) -> int:
        """What the projector's evaluation of this prompt would put in the context, without evaluating it."""
        import ctypes

        from llama_cpp import mtmd_cpp

        if text.count(IMAGE_MARKER) != len(images):
            raise LmsError.invalid(f"The prompt has {text.count(IMAGE_MARKER)} image places for {len(images)} "
                                   "images.", "messages", code="invalid_image")
        context = self.projector.context
        bitmaps, chunks = [], mtmd_cpp.mtmd_input_chunks_init()
        try:
            for data in images:
                buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
                bitmap = mtmd_cpp.mtmd_helper_bitmap_init_from_buf(context, buffer, len(data), False)
                if not bitmap:
                    raise LmsError.invalid("An image could not be decoded (supported: PNG, JPEG, BMP, GIF).",
                                           "messages", code="invalid_image")
                bitmaps.append(bitmap)
            encoded = text.replace(IMAGE_MARKER, self.projector.marker).encode()
            prompt = mtmd_cpp.mtmd_input_text()
            prompt.text, prompt.text_len = encoded, len(encoded)
            prompt.add_special, prompt.parse_special = True, True
            array = (mtmd_cpp.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
            if mtmd_cpp.mtmd_tokenize(context, chunks, ctypes.byref(prompt), array, len(bitmaps)) != 0:
                raise LmsError.invalid("The prompt with images could not be tokenized.", "messages",
                                       code="invalid_image")
            return sum(mtmd_cpp.mtmd_input_chunk_get_n_pos(mtmd_cpp.mtmd_input_chunks_get(chunks, index))
                       for index in range(mtmd_cpp.mtmd_input_chunks_size(chunks)))
        finally:
            mtmd_cpp.mtmd_input_chunks_free(chunks)
            for bitmap in bitmaps:
                mtmd_cpp.mtmd_bitmap_free(bitmap)

    def close(self) -> None:
        """The worker is stopping: stored conversations copied out but not yet on disk are written first."""
        if self.disk_cache is not None:
            self.disk_cache.flush(timeout=4.0)

    def _drafter(self, request: GenerationRequest) -> tuple[DraftModel | PromptLookup | None, int]:
        """Who drafts for a request, and how many tokens at most: the draft model it names, else what its
        `speculative` says (ngram or off), else the load's draft model, else the load's `speculative`."""
        if request.draft:
            return self._draft(request.draft), request.draft.max_tokens or self.default_draft_tokens
        if request.speculative == "off":
            return None, 0
        if request.speculative == "ngram" or (self.default_draft is None and self.speculative == "ngram"):
            return self.lookup, NGRAM_MAX_TOKENS
        return self.default_draft, self.default_draft_tokens

    def generate(self, request: GenerationRequest, emit: Emit, cancelled: Cancelled) -> None:
        """Queue one generation; its events are emitted from the scheduler thread as it runs."""
        started = time.perf_counter()
        text, opened_think = self._prompt_text(request)
        images = request.images
        if images and self.projector is None:
            raise LmsError.invalid("This model has no vision projector: it cannot take images.", "messages",
                                   code="model_not_supported")
        # With images the tokens are known once the projector has split the prompt; the text alone sizes the limit.
        tokens = self.tokenize(text) or ([] if images else start_of_empty_prompt(llama_cpp.llama_vocab_bos(self.vocab)))
        limit, seed = generation_limits(request, len(tokens), self.n_ctx)
        draft, draft_tokens = self._drafter(request)
        if limit <= 0:
            emit(done_event("length", len(tokens), 0, 0, 0, started, None, time.perf_counter()))
            return
        sampler = SamplerChain(self.vocab, self.n_vocab, request, seed)
        stream = _Stream(self, request, emit, started, opened_think, text, draft)
        job = Job(tokens, limit, cancelled, stream.fail, stream.on_token, stream.on_cancel, sampler,
                  prepare=self._media_preparer(text, images) if images else None, draft=draft, draft_max=draft_tokens,
                  on_progress=stream.on_progress if request.prompt_progress else None,
                  draft_min_probability=self.draft_min_probability, persist=request.persist)
        stream.job = job
        self.scheduler.submit(job)

    def _media_preparer(self, text: str, images: list[str]):
        data = [base64.b64decode(image) for image in images]

        def prepare(job: Job, seq: int) -> None:
            def decode_text(tokens: list[int], position: int) -> None:
                for start in range(0, len(tokens), self.n_batch):
                    self._decode_into(seq, tokens[start: start + self.n_batch], position + start)

            try:
                job.tokens = self.projector.evaluate(self.ctx, seq, self.n_ctx, self.n_batch, text, data,
                                                     decode_text)
            except VisionError as exc:
                if str(exc).startswith("context:"):
                    count = int(str(exc).split(":")[1])
                    raise LmsError.invalid(
                        f"This model's maximum context length is {self.n_ctx} tokens. However, your request has "
                        f"{count} input tokens (images included). Please reduce the length of the input.",
                        "messages", code="context_length_exceeded") from exc
                raise LmsError.invalid(str(exc), "messages", code="invalid_image") from exc
            job.limit = min(job.limit, self.n_ctx - len(job.tokens))

        return prepare

    def _decode_into(self, seq: int, tokens: list[int], position: int) -> None:
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            for row, token in enumerate(tokens):
                batch.token[row], batch.pos[row], batch.n_seq_id[row] = token, position + row, 1
                batch.seq_id[row][0], batch.logits[row] = seq, False
            batch.n_tokens = len(tokens)
            if llama_cpp.llama_decode(self.ctx, batch) != 0:
                raise LmsError.internal("llama.cpp could not evaluate the prompt", code="decode_failed")
        finally:
            llama_cpp.llama_batch_free(batch)

    def on_step_end(self, flush: Callable[[], None]) -> threading.Thread:
        """Have `flush` run on the scheduler thread after every scheduling step (admissions, one batched decode,
        sampling), whose events the worker then writes together; returns that thread, the one every generation's
        events come from."""
        self.scheduler.step_end = flush
        return self.scheduler.thread

    def embed(self, request: EmbeddingRequest) -> dict:
        raise LmsError.invalid("This model does not compute embeddings.", "model", code="model_not_supported")


class _Stream:
    """One job's tokens turned into events: text (UTF-8 safe, held back at possible stop strings), logprobs,
    the reasoning count, and the final done event."""

    def __init__(self, engine: LlamaCppEngine, request: GenerationRequest, emit: Emit, started: float,
                 opened_think: bool, prompt_text: str, draft: DraftModel | None):
        self.engine, self.request, self.emit, self.started = engine, request, emit, started
        self.prompt_text, self.draft = prompt_text, draft
        self.chat = request.messages is not None
        self.stops = StopMatcher(request.stop or [])
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.top_logprobs = request.logprobs  # None: none; N: the chosen token's and N alternatives
        reasoning_start = request.reasoning_start
        self.reasoning_open = bool(reasoning_start and opened_think)
        self.reasoning = ReasoningCounter("inside" if self.reasoning_open else reasoning_start)
        self.pending_logprobs: list[dict] = []
        self.first_token_at: float | None = None
        self.produced = 0
        self.prompt_tokens = 0  # known at the first token (with images, once the projector has split the prompt)
        self.job: Job | None = None
        self.progress = PromptProgress(emit)

    def on_token(self, job: Job, token: int, row: int) -> bool:
        """Handle one sampled token; False ends the generation (the event stream is then complete)."""
        engine = self.engine
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
            self.emit({"type": "prompt", "prompt_tokens": len(job.tokens), "cached_tokens": job.cached,
                       "reasoning_open": self.reasoning_open,
                       # the fully templated prompt, only when `lms log stream` listens for it
                       **({"prompt_text": self.prompt_text} if self.request.echo_prompt else {})})
            self.prompt_tokens = len(job.tokens)
        if llama_cpp.llama_vocab_is_eog(engine.vocab, token) or (self.chat and token in engine._turn_starts):
            self._finish("stop", flush=True)
            return False
        self.produced += 1
        # Special tokens are text here: tool-call markers such as <|python_tag|> or [TOOL_CALLS] are control
        # tokens, and the output parser needs to see them (end-of-generation ones stop above).
        piece = engine.piece(token)
        if self.top_logprobs is not None:
            self.pending_logprobs.append(logprobs_entry(engine.ctx, row, engine.n_vocab, token, piece,
                                                        self.top_logprobs, engine.piece))
        decoded = self.decoder.decode(piece)
        self.reasoning.add(decoded)
        text, hit_stop = self.stops.feed(decoded)
        if text:
            self.emit(text_event(text, self.pending_logprobs))
        if hit_stop:
            self._finish("stop", flush=False)
            return False
        if self.produced >= job.limit:
            self._finish("length", flush=True)
            return False
        return True

    def _finish(self, reason: str, flush: bool) -> None:
        tail = self.stops.flush() + self.decoder.decode(b"", final=True) if flush else ""
        if reason != "cancelled" and (tail or self.pending_logprobs):
            self.emit(text_event(tail, self.pending_logprobs))
        job = self.job
        done = done_event(reason, self.prompt_tokens or len(job.tokens), self.produced, job.cached,
                          self.reasoning.tokens, self.started, self.first_token_at, time.perf_counter())
        if self.draft is not None:
            stats = job.draft_stats
            drafter = {"speculative": "ngram"} if self.draft is self.engine.lookup else {"draft_model": self.draft.name}
            done["stats"].update({**drafter, "total_draft_tokens_count": stats["total"],
                                  "accepted_draft_tokens_count": stats["accepted"],
                                  "rejected_draft_tokens_count": stats["rejected"],
                                  "ignored_draft_tokens_count": stats["ignored"]})
        done["prefix_cache_bytes"] = self.engine.host_cache.used
        job.sampler.close()
        self.emit(done)

    def on_progress(self, job: Job) -> None:
        self.progress.report(job.evaluated, len(job.tokens), job.cached)

    def on_cancel(self, job: Job) -> None:
        self._finish("cancelled", flush=False)

    def fail(self, error: Exception) -> None:
        if self.job is not None:
            self.job.sampler.close()
        self.emit(error_event(error))

