"""Prompt-lookup speculation: drafts taken from the text itself, no draft model.

When a model copies (rewrites a block of code with one change, quotes a document, repeats a name), the tokens that
follow the last few it wrote have usually appeared before, in the prompt or in its own answer. The drafter finds
the latest earlier place where the last `n` tokens occur (n from MAX_MATCH down to MIN_MATCH) and proposes what
followed there; the target checks every proposal in one batch (runtimes.llama_cpp.scheduler), so the text is the
target's own. A text that repeats itself is carried on past its end, so a short loop still fills a long draft.
Proposals cost a wider decode step, so the drafter keeps a length per sequence that doubles while drafts are taken
whole and halves when they are not, and it rests (proposes nothing) for longer and longer after drafts that were
refused at once: free-form chat, where little repeats, runs as without speculation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

MAX_MATCH = 4  # the longest tail looked up; longer tails are rarer and no more telling on short texts
MIN_MATCH = 2  # a single token repeats too often to predict anything
FIRST_LENGTH = 4  # draft tokens proposed after a fresh start
MAX_LENGTH = 32
MAX_REST = 64  # steps without proposals after repeated misses, at most


@dataclass
class _Sequence:
    tokens: list[int] | None = None  # the job's token list the index was built from (the same object grows)
    indexed: int = 0  # n-grams ending before this position are in `where`
    where: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> the position after its latest use
    length: int = FIRST_LENGTH
    misses: int = 0  # drafts in a row refused at their first token
    rest: int = 0  # steps left without proposals
    last: int = 0  # tokens proposed last time, to judge the outcome by what the job kept


class PromptLookup:
    """The scheduler's draft interface (`propose`), for any number of sequences."""

    name = "ngram"

    def __init__(self, ends_text: Callable[[int], bool] = lambda token: False) -> None:
        """`ends_text(token)`: whether a token closes a text (end of turn or generation, a template's control
        token). A draft stops after one: what followed it in the prompt (the next turn's header) is not what the
        answer goes on with, and measured on an edit that ends where the prompt's code ends, a draft running on
        past it wasted a tenth of the rows the target checked."""
        self.sequences: dict[int, _Sequence] = {}
        self.ends_text = ends_text

    def propose(self, seq: int, tokens: list[int], count: int, pick=None, min_probability: float = 0.0) -> list[int]:
        """Up to `count` tokens that followed the latest earlier occurrence of the text's last n tokens. `pick`
        and `min_probability` (a draft model's) have no meaning here."""
        state = self.sequences.get(seq)
        if state is None or state.tokens is not tokens or state.indexed > len(tokens):
            state = self.sequences[seq] = _Sequence(tokens=tokens)
        if state.rest > 0:
            state.rest -= 1
            return []
        self._index(state, tokens)
        length = min(count, state.length)
        if length <= 0:
            return []
        for n in range(min(MAX_MATCH, len(tokens) - 1), MIN_MATCH - 1, -1):
            after = state.where.get(tuple(tokens[-n:]))
            if after is not None:
                draft = self._cut(_continuation(tokens, after, length))
                state.last = len(draft)
                return draft
        return []

    def judge(self, seq: int, proposed: int, accepted: int) -> None:
        """How the target took the last proposal: the next length and any rest follow from it."""
        state = self.sequences.get(seq)
        if state is None or proposed == 0:
            return
        if accepted == proposed:
            state.length, state.misses = min(state.length * 2, MAX_LENGTH), 0
        elif accepted == 0:
            state.misses += 1
            state.length = max(state.length // 2, 1)
            state.rest = min(2 ** state.misses, MAX_REST) if state.misses >= 2 else 0
        else:
            state.length, state.misses = max(accepted + 1, 2), 0

    def _cut(self, draft: list[int]) -> list[int]:
        for index, token in enumerate(draft):
            if self.ends_text(token):
                return draft[: index + 1]
        return draft

    def forget(self, seq: int) -> None:
        self.sequences.pop(seq, None)

    @staticmethod
    def _index(state: _Sequence, tokens: list[int]) -> None:
        """Add the n-grams that end before the last token (each needs a token after it to propose); a later
        occurrence replaces an earlier one, so lookups find the latest."""
        end = len(tokens) - 1
        where = state.where
        for stop in range(max(state.indexed, MIN_MATCH), end + 1):
            for n in range(MIN_MATCH, min(MAX_MATCH, stop) + 1):
                where[tuple(tokens[stop - n: stop])] = stop
        state.indexed = max(state.indexed, end + 1)


def _continuation(tokens: list[int], after: int, length: int) -> list[int]:
    """`length` tokens of what followed position `after`. When that is closer to the end than `length` (the text
    is repeating itself with a period of len(tokens) - after), the repetition is carried on past the end: a loop
    of 14 tokens yields whole 32-token drafts rather than 13-token ones."""
    draft = tokens[after: after + length]
    period = len(tokens) - after
    while len(draft) < length:
        draft.append(draft[len(draft) - period])
    return draft
