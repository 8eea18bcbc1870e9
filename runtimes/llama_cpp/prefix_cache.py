"""Finished sequences kept in host memory: when a slot is taken over by an unrelated prompt, its KV state is saved
here (bounded, least recently used first out), so a conversation that comes back later restores its prefix instead
of evaluating it again."""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass

import llama_cpp


def common_prefix(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y or x < 0:  # negative ids stand for image embeddings: never reused by token match
            break
        count += 1
    return count


@dataclass
class Saved:
    tokens: list[int]
    state: bytes


class HostCache:
    def __init__(self, capacity_bytes: int):
        self.capacity = capacity_bytes
        self.entries: OrderedDict[int, Saved] = OrderedDict()
        self.used = 0
        self._keys = 0

    def save(self, ctx, seq_id: int, tokens: list[int]) -> bool:
        """Copy one sequence's KV state to host memory; False when it does not fit the cache at all."""
        if not tokens or self.capacity <= 0 or any(t < 0 for t in tokens):
            return False
        if any(common_prefix(tokens, e.tokens) == len(tokens) for e in self.entries.values()):
            return True  # an entry already covers it
        size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
        if size > self.capacity:
            return False
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
        if not written:
            return False
        while self.entries and self.used + written > self.capacity:
            _, dropped = self.entries.popitem(last=False)
            self.used -= len(dropped.state)
        self._keys += 1
        self.entries[self._keys] = Saved(list(tokens), bytes(buffer)[:written])
        self.used += written
        return True

    def best(self, prompt: list[int]) -> tuple[Saved | None, int]:
        """The entry sharing the longest prefix with `prompt`, and that length."""
        best_key, length = None, 0
        for key, entry in self.entries.items():
            shared = common_prefix(prompt, entry.tokens)
            if shared > length:
                best_key, length = key, shared
        if best_key is None:
            return None, 0
        self.entries.move_to_end(best_key)  # recently useful: last out
        return self.entries[best_key], length

    def restore(self, entry: Saved, ctx, seq_id: int) -> list[int] | None:
        """Load an entry into an (empty) sequence; its tokens, or None when the context has no room for it."""
        buffer = (ctypes.c_uint8 * len(entry.state)).from_buffer_copy(entry.state)
        if not llama_cpp.llama_state_seq_set_data(ctx, buffer, len(entry.state), seq_id):
            return None
        return list(entry.tokens)
