"""The draft model of speculative decoding: a small model with the target's vocabulary that guesses the next few
tokens greedily; the target checks them all in one batch (runtimes.llama_cpp.scheduler)."""

from __future__ import annotations

import llama_cpp
import numpy as np

from lms.errors import LmsError
from runtimes.llama_cpp.loading import new_context
from runtimes.llama_cpp.prefix_cache import common_prefix
from runtimes.llama_cpp.sampling import token_pieces


def check_vocabularies(target, draft, draft_name: str) -> None:
    """A draft can only propose tokens the target reads the same way: same size, same special tokens, same pieces."""
    t_vocab, d_vocab = target.vocab, draft.vocab
    t_size, d_size = llama_cpp.llama_vocab_n_tokens(t_vocab), llama_cpp.llama_vocab_n_tokens(d_vocab)
    problem = None
    if t_size != d_size:
        problem = f"it has {d_size} tokens and the model has {t_size}"
    elif llama_cpp.llama_vocab_type(t_vocab) != llama_cpp.llama_vocab_type(d_vocab):
        problem = "its tokenizer type differs"
    elif (llama_cpp.llama_vocab_bos(t_vocab), llama_cpp.llama_vocab_eos(t_vocab)) != (
            llama_cpp.llama_vocab_bos(d_vocab), llama_cpp.llama_vocab_eos(d_vocab)):
        problem = "its special tokens differ"
    else:
        t_piece, d_piece = token_pieces(t_vocab), token_pieces(d_vocab)
        mismatch = next((t for t in range(t_size) if t_piece(t) != d_piece(t)), None)
        if mismatch is not None:
            problem = f"token {mismatch} differs"
    if problem:
        raise LmsError.invalid(f"The draft model '{draft_name}' cannot be used with this model: {problem}. A draft "
                               "model must share the model's vocabulary.", "draft_model",
                               code="incompatible_draft_model")


def top_probability(logits) -> float:
    """The probability softmax gives the most likely token."""
    top = float(np.max(logits))
    return 1.0 / float(np.sum(np.exp(logits.astype(np.float64) - top)))


class DraftModel:
    def __init__(self, model, name: str, n_ctx: int, n_seq: int, threads: int, n_batch: int = 512):
        self.model, self.name = model, name
        self.n_batch = n_batch
        self.ctx = new_context(model, n_ctx, n_seq, n_batch, threads, max_outputs=n_seq)  # one guess at a time
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self.held: dict[int, list[int]] = {}  # per sequence: the tokens its KV holds
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)

    def judge(self, seq: int, proposed: int, accepted: int) -> None:
        """A draft model's guesses need no verdicts: its own confidence (min_probability) stops them."""

    def propose(self, seq: int, tokens: list[int], count: int, pick, min_probability: float = 0.0) -> list[int]:
        """Up to `count` guesses of what follows `tokens`: `pick(logits, guesses so far)` chooses each (the request's
        own greedy choice: logit bias and penalties applied). With `min_probability`, the guesses stop before the
        first step where the draft's top token is less likely than that (llama.cpp's draft p-min)."""
        held = self.held.get(seq, [])
        keep = min(common_prefix(held, tokens), len(tokens) - 1)
        if not llama_cpp.llama_memory_seq_rm(self.memory, seq, keep, -1):
            llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
            keep = 0
        held = tokens[:keep]
        # catch up on what the target accepted since last time; the last chunk's logits give the first guess
        while keep < len(tokens):
            chunk = tokens[keep: keep + self.n_batch]
            if not self._decode(chunk, keep, seq):
                self.held[seq] = held
                return []
            keep += len(chunk)
            held = tokens[:keep]
        guesses: list[int] = []
        while True:
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
            if min_probability > 0 and top_probability(logits) < min_probability:
                break
            guess = pick(logits, guesses)
            guesses.append(guess)
            if len(guesses) >= count or not self._decode([guess], len(held), seq):
                break
            held = [*held, guess]
        self.held[seq] = held
        return guesses

    def _decode(self, tokens: list[int], position: int, seq: int) -> bool:
        batch = self.batch
        for row, token in enumerate(tokens):
            batch.token[row] = token
            batch.pos[row] = position + row
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = seq
            batch.logits[row] = row == len(tokens) - 1
        batch.n_tokens = len(tokens)
        return llama_cpp.llama_decode(self.ctx, batch) == 0
