"""The scheduler's slot choice and the host prefix cache's bookkeeping, on plain data (no model)."""

from __future__ import annotations

from runtimes.llama_cpp.prefix_cache import HostCache, Saved, common_prefix
from runtimes.llama_cpp.scheduler import Job, Scheduler, Slot


def job(tokens: list[int]) -> Job:
    return Job(tokens, 8, lambda: False, print, lambda *_: True, print, sampler=None)


def test_common_prefix_stops_at_the_first_difference_and_at_image_positions():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([1, -1, 3], [1, -1, 3]) == 1  # image embeddings are never matched by token


def test_a_free_slot_is_chosen_by_useful_prefix_then_empty_then_least_recently_used():
    conversation = list(range(100))
    other = [0, 1, 2] + list(range(500, 600))  # shares only a chat template's opening with `conversation`
    kept = Slot(0, tokens=conversation, used_at=1.0)
    empty = Slot(1, used_at=0.0)
    stale = Slot(2, tokens=list(range(700, 760)), used_at=0.5)
    slots = [kept, empty, stale]
    assert max(slots, key=lambda s: Scheduler._fitness(s, job(conversation + [7, 8]))) is kept
    assert max(slots, key=lambda s: Scheduler._fitness(s, job(other))) is empty
    assert max([kept, stale], key=lambda s: Scheduler._fitness(s, job(other))) is stale


def test_without_a_useful_prefix_a_slot_next_to_the_running_sequences_is_chosen():
    near = Slot(1, tokens=list(range(700, 760)), used_at=2.0)
    far = Slot(3, used_at=0.0)  # empty and long unused, but a step with sequences 0 and 3 spans four KV streams
    assert max([far, near], key=lambda s: Scheduler._fitness(s, job(list(range(50))), running=[0])) is near
    assert max([far, near], key=lambda s: Scheduler._fitness(s, job(list(range(50))))) is far  # nothing running
    held = Slot(3, tokens=list(range(100)), used_at=0.0)
    assert max([near, held], key=lambda s: Scheduler._fitness(s, job(list(range(100)) + [5]), running=[0])) is held


def test_the_host_cache_finds_the_longest_prefix_and_keeps_the_useful_entry_last_out():
    cache = HostCache(1000)
    cache.entries = {1: Saved([1, 2, 3, 4], b"a" * 10), 2: Saved([1, 2, 9], b"b" * 10)}
    from collections import OrderedDict

    cache.entries = OrderedDict(cache.entries)
    entry, length = cache.best([1, 2, 3, 4, 5])
    assert entry.tokens == [1, 2, 3, 4] and length == 4
    assert list(cache.entries) == [2, 1]  # the entry just used goes out last
    assert cache.best([7, 7]) == (None, 0)
