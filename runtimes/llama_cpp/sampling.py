"""Token choice in llama.cpp's own sampler chain: one chain per sequence, so sampling runs in C with no per-token
Python over the vocabulary (penalties, logit bias, grammar, top-k, top-p, min-p, temperature, seeded draw)."""

from __future__ import annotations

import ctypes
import math

import llama_cpp
import numpy as np

from lms.errors import LmsError
from lms.generation.request import GenerationRequest
from runtimes.common import format_param, token_entry
from runtimes.llama_cpp.grammar import grammar_text

PENALTY_WINDOW = 64  # generated tokens the repeat/frequency/presence penalties look back over


def _logit_bias(values: dict, n_vocab: int):
    entries = []
    for key, value in values.items():
        token = int(key)
        if not 0 <= token < n_vocab:
            raise LmsError.invalid(f"logit_bias has a token id out of range: {token}", "logit_bias",
                                   code="invalid_value")
        entries.append((token, float(value)))
    array = (llama_cpp.llama_logit_bias * len(entries))()
    for slot, (token, bias) in zip(array, entries):
        slot.token, slot.bias = token, bias
    return llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(entries), array)


class Candidates:
    """A reusable candidate array over the whole vocabulary (llama.cpp's `llama_token_data_array`)."""

    def __init__(self, n_vocab: int):
        self.data = (llama_cpp.llama_token_data * n_vocab)()
        self.view = np.ctypeslib.as_array(self.data)  # fields id, logit, p
        self.ids = np.arange(n_vocab, dtype=np.int32)
        self.array = llama_cpp.llama_token_data_array(data=self.data, size=n_vocab, selected=-1, sorted=False)

    def fill(self, logits: np.ndarray):
        """Every token with its logit, unsorted and unselected, as a sampler chain expects them."""
        self.view["id"] = self.ids  # samplers sort and shrink the array in place
        self.view["logit"] = logits
        self.view["p"] = 0.0
        array = self.array
        array.size, array.selected, array.sorted = len(self.ids), -1, False
        return array


class SamplerChain:
    """A request's sampler chain. `sample(ctx, i)` picks from the i-th output row of the last decode and records the
    token in the chain (penalty history, grammar state)."""

    def __init__(self, vocab, n_vocab: int, request: GenerationRequest, seed: int):
        sampling = request.sampling
        self.n_vocab = n_vocab
        self.bias = {int(k): float(v) for k, v in (sampling.logit_bias or {}).items()}
        self.penalties = (float(sampling.repeat_penalty), float(sampling.frequency_penalty),
                          float(sampling.presence_penalty))
        # Plain greedy decoding (temperature 0, no penalties, no grammar) is an argmax: numpy does it in a fraction
        # of the time the chain takes to build its 50k-entry candidate array.
        grammar = grammar_text(request)
        self.plain_greedy = sampling.temperature <= 0 and grammar is None and \
            self.penalties == (1.0, 0.0, 0.0)
        self.candidates = Candidates(n_vocab) if grammar is not None else None
        self.format_param = format_param(request)
        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = True
        self.chain = llama_cpp.llama_sampler_chain_init(params)
        add = self._add
        try:
            if sampling.logit_bias:
                add(_logit_bias(sampling.logit_bias, n_vocab))
            if self.penalties != (1.0, 0.0, 0.0):
                # over the answer's own tokens, as llama-cpp-python's generate loop has always done
                add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_WINDOW, *self.penalties))
            if grammar is not None:
                sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
                if not sampler:
                    raise LmsError.invalid("the grammar could not be parsed", format_param(request),
                                           code="invalid_format")
                add(sampler)
            temperature = sampling.temperature
            if temperature <= 0:
                add(llama_cpp.llama_sampler_init_greedy())
                return
            add(llama_cpp.llama_sampler_init_top_k(sampling.top_k))
            add(llama_cpp.llama_sampler_init_top_p(sampling.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(sampling.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(temperature))
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        except BaseException:
            self.close()
            raise

    def _add(self, sampler) -> None:
        llama_cpp.llama_sampler_chain_add(self.chain, sampler)  # the chain owns it from here

    def sample(self, ctx, index: int) -> int:
        if not self.chain:  # a request that already ended: never hand llama.cpp a freed chain
            raise LmsError.internal("sampling after the request ended", code="internal_error")
        if self.candidates is not None:
            return self._sample_in_grammar(ctx, index)
        if not self.plain_greedy:
            return llama_cpp.llama_sampler_sample(self.chain, ctx, index)
        return self.guess(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,)), [])

    def _sample_in_grammar(self, ctx, index: int) -> int:
        """What `llama_sampler_sample` does, with a check between choosing and accepting: when the grammar allows
        no token at all (it wants a character no token holds, such as NUL), the choice is a token it rejected,
        and accepting that throws a C++ exception through the C API, which aborts the worker."""
        candidates = self.candidates
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(self.n_vocab,))
        array = candidates.fill(logits)
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(array))
        picked = array.data[array.selected] if 0 <= array.selected < array.size else None
        if picked is None or not math.isfinite(picked.logit):
            raise LmsError.invalid("The grammar allows no token here: it asks for text no token of this model "
                                   "can write.", self.format_param, code="invalid_format")
        token = picked.id
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def guess(self, logits: np.ndarray, recent: list[int]) -> int:
        """A draft's best guess at the token this chain would pick greedily: the same logit bias and the same
        penalties over the same window (`recent`: the answer's tokens so far), then the most likely token."""
        repeat, frequency, presence = self.penalties
        if not self.bias and (repeat == 1.0 and not frequency and not presence or not recent):
            return int(logits.argmax())
        scores = logits.copy()
        for token, bias in self.bias.items():
            scores[token] += bias
        counts: dict[int, int] = {}
        for token in recent[-PENALTY_WINDOW:]:
            counts[token] = counts.get(token, 0) + 1
        for token, count in counts.items():
            value = scores[token]
            value = value / repeat if value > 0 else value * repeat
            scores[token] = value - count * frequency - presence
        return int(scores.argmax())

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None


def logprobs_entry(ctx, index: int, n_vocab: int, token: int, piece: bytes, top: int, piece_of) -> dict:
    """The chosen token's log-probability under the model's raw distribution (output row `index` of the last
    decode), and its `top` most likely alternatives."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, index), shape=(n_vocab,))
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    entry = token_entry(piece, float(logprobs[token]))
    entry["top_logprobs"] = []
    if top:
        best = np.argpartition(-logprobs, top)[:top]
        best = best[np.argsort(-logprobs[best])]
        entry["top_logprobs"] = [token_entry(piece_of(int(t), special=False), float(logprobs[t])) for t in best]
    return entry


def token_pieces(vocab):
    """`piece(token, special=True)`: a token's bytes, memoised (the vocabulary never changes)."""
    cache: dict[tuple[int, bool], bytes] = {}
    buffer = ctypes.create_string_buffer(256)

    def piece(token: int, special: bool = True) -> bytes:
        key = (token, special)
        found = cache.get(key)
        if found is None:
            size = llama_cpp.llama_token_to_piece(vocab, token, buffer, len(buffer), 0, special)
            if size < 0:
                big = ctypes.create_string_buffer(-size)
                size = llama_cpp.llama_token_to_piece(vocab, token, big, len(big), 0, special)
                found = big.raw[:size]
            else:
                found = buffer.raw[:size]
            cache[key] = found
        return found

    return piece
