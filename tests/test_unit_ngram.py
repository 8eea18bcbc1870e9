"""Unit tests of prompt-lookup drafts (runtimes/llama_cpp/ngram.py) on plain token lists: what is proposed, from
where, and how the length and the rests follow the target's verdicts."""

from __future__ import annotations

from runtimes.llama_cpp import ngram
from runtimes.llama_cpp.ngram import PromptLookup


def test_proposes_what_followed_the_latest_occurrence_of_the_tail():
    lookup = PromptLookup()
    block = [10, 11, 12, 13, 14, 15, 16, 17]
    tokens = [1, 2, *block, 3, 4, 10, 11, 12]  # the answer starts copying the block
    assert lookup.propose(0, tokens, 8) == [13, 14, 15, 16]  # FIRST_LENGTH tokens of what came next
    tokens += [13, 14, 15, 16]
    lookup.judge(0, 4, 4)  # all taken: the next draft may be twice as long
    assert lookup.propose(0, tokens, 8) == [17, 3, 4, 10, 11, 12, 13, 14]


def test_the_latest_occurrence_wins_and_the_longest_tail_first():
    lookup = PromptLookup()
    tokens = [5, 6, 7, 1, 9, 6, 7, 2, 8, 5, 6, 7]
    # the tail (5, 6, 7) occurs once before, followed by 1; (6, 7) alone last came before 2
    assert lookup.propose(0, tokens, 1) == [1]
    other = PromptLookup()
    assert other.propose(0, [9, 6, 7, 1, 4, 6, 7, 2, 3, 0, 6, 7], 1) == [2]


def test_nothing_to_propose_without_a_repeated_tail():
    lookup = PromptLookup()
    assert lookup.propose(0, [1, 2, 3, 4, 5, 6], 8) == []
    assert lookup.propose(0, [1], 8) == []
    assert lookup.propose(0, [1, 2, 1, 2], 0) == []


def test_refused_drafts_shrink_the_length_then_rest_longer_each_time():
    lookup = PromptLookup()
    tokens = [1, 2, 3, 4, 5, 6, 1, 2]
    assert lookup.propose(0, tokens, 8) == [3, 4, 5, 6]
    lookup.judge(0, 4, 0)  # one miss: shorter, no rest yet
    assert lookup.propose(0, tokens, 8) == [3, 4]
    lookup.judge(0, 2, 0)  # two in a row: rest 4 steps
    assert [lookup.propose(0, tokens, 8) for _ in range(4)] == [[]] * 4
    assert lookup.propose(0, tokens, 8) == [3]
    lookup.judge(0, 1, 0)  # three: rest 8
    assert [lookup.propose(0, tokens, 8) for _ in range(8)] == [[]] * 8
    assert lookup.propose(0, tokens, 8) == [3]
    lookup.judge(0, 1, 1)  # taken whole: the misses are forgotten and the length grows again
    state = lookup.sequences[0]
    assert (state.misses, state.rest, state.length) == (0, 0, 2)


def test_the_length_is_capped_and_a_partial_take_sets_it_just_above():
    lookup = PromptLookup()
    lookup.propose(0, [1, 2, 1], 8)
    for _ in range(10):
        lookup.judge(0, 1, 1)
    assert lookup.sequences[0].length == ngram.MAX_LENGTH
    lookup.judge(0, 10, 3)
    assert lookup.sequences[0].length == 4


def test_a_new_job_in_the_same_slot_starts_a_fresh_index():
    lookup = PromptLookup()
    first = [1, 2, 3, 1, 2]
    assert lookup.propose(0, first, 4) == [3, 1, 2, 3]
    second = [7, 8, 9, 7, 8]
    assert lookup.propose(0, second, 4) == [9, 7, 8, 9]  # nothing from the first job's text
    assert lookup.propose(1, [4, 5, 6], 4) == []  # sequences are apart


def test_a_text_that_repeats_itself_is_carried_on_past_its_end():
    lookup = PromptLookup()
    loop = [20, 21, 22, 23, 24]
    tokens = [1, 2, *loop, *loop, 20, 21]  # a loop of five tokens, two tokens into its third turn
    state = lookup.sequences.setdefault(0, ngram._Sequence(tokens=tokens))
    state.length = 12
    assert lookup.propose(0, tokens, 12) == [22, 23, 24, 20, 21, 22, 23, 24, 20, 21, 22, 23]


def test_a_draft_stops_after_a_token_that_ends_the_text():
    end_of_turn = 99
    lookup = PromptLookup(lambda token: token == end_of_turn)
    tokens = [1, 2, 3, 4, end_of_turn, 50, 51, 52, 1, 2]  # the prompt's block ends its turn; the answer copies it
    assert lookup.propose(0, tokens, 8) == [3, 4, end_of_turn]  # not the next turn's header after it
