"""Structured output on MLX: a logits processor that lets only the tokens a grammar allows through.

The grammar (a JSON schema, "any JSON object", or a GBNF grammar turned into Lark) is matched by llguidance over
the model's own tokenizer; at each step its token mask sets every other logit to -inf, and the tokens the model
then picks are fed back to the matcher.
"""

from __future__ import annotations

import json

import numpy as np

from lms.generation.request import GenerationRequest


class TokenizerIndex:
    """llguidance's view of an mlx-lm tokenizer, built once per model (it takes about a second)."""

    def __init__(self, tokenizer):
        from llguidance.hf import from_tokenizer

        hf = getattr(tokenizer, "_tokenizer", tokenizer)
        self.vocab_size = len(hf.get_vocab())
        self.index = from_tokenizer(hf, n_vocab=self.vocab_size)


def grammar_for(request: GenerationRequest) -> str | None:
    from llguidance import LLMatcher

    if request.json_schema is not None:
        return LLMatcher.grammar_from_json_schema(json.dumps(request.json_schema or {"type": "object"}))
    if request.json_object:
        return LLMatcher.grammar_from_json_schema(json.dumps({"type": "object"}))
    if request.grammar:
        from llguidance.gbnf_to_lark import any_to_lark

        return LLMatcher.grammar_from_lark(any_to_lark(request.grammar))
    return None


class GrammarProcessor:
    """An mlx-lm logits processor: `processor(tokens, logits) -> logits`, where `tokens` are the tokens fed to
    this generation so far (the uncached prompt part, then each generated token)."""

    def __init__(self, index: TokenizerIndex, grammar: str, fed_prompt: int):
        from llguidance import LLMatcher
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = LLMatcher(index.index, grammar)
        error = self.matcher.get_error()
        if error:
            raise ValueError(error)
        self.fed_prompt, self.consumed = fed_prompt, 0
        self.mask = allocate_token_bitmask(1, index.vocab_size)
        self.vocab_size = index.vocab_size

    def __call__(self, tokens, logits):
        import mlx.core as mx
        from llguidance.numpy import fill_next_token_bitmask

        generated = tokens[self.fed_prompt:].tolist() if tokens is not None else []
        fresh = generated[self.consumed:]
        if fresh:
            self.matcher.consume_tokens(fresh)
            self.consumed += len(fresh)
        fill_next_token_bitmask(self.matcher, self.mask, 0)
        allowed = np.unpackbits(self.mask.view(np.uint8), bitorder="little")[: self.vocab_size].astype(bool)
        width = logits.shape[-1]
        if width > self.vocab_size:  # the output layer may be padded past the vocabulary
            allowed = np.concatenate([allowed, np.zeros(width - self.vocab_size, dtype=bool)])
        return mx.where(mx.array(allowed[:width]), logits, -mx.inf)
