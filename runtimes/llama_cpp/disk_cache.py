"""KV states of stored conversations kept on disk, so a follow-up after a daemon restart or a reload of the model
restores its prefix instead of evaluating it again.

One folder per model file and load settings (the fingerprint: the file's path, size and modification time, the
KV cache type, the context of a sequence, flash attention and the engine's version), so a state is only ever
restored into a context that reads it the same way. Each entry is one file: a header with its tokens, then the
sequence's state as llama.cpp writes it. Files are written whole under a temporary name and renamed, by a writer
thread (the scheduler only copies the state out), and the whole cache folder is kept under a byte cap across every
model, least recently used (file modification time, touched on use) out first. An entry that a longer one of the
same conversation extends is dropped when that one is written.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from runtimes.llama_cpp.prefix_cache import common_prefix

MAGIC = b"LMSKV1\0\0"
SUFFIX = ".kv"


@dataclass
class DiskEntry:
    path: Path
    tokens: list[int]


def fingerprint(model_path: str, kv_cache_type: str, context_length: int, flash_attention: str) -> str:
    stat = os.stat(model_path)
    key = "|".join(map(str, (os.path.realpath(model_path), stat.st_size, stat.st_mtime_ns, kv_cache_type,
                             context_length, flash_attention, llama_cpp.__version__)))
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def read_tokens(path: Path) -> list[int] | None:
    """An entry's tokens from its header; None for a file that is not a whole entry."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(MAGIC) + 4)
            if len(head) < len(MAGIC) + 4 or head[:len(MAGIC)] != MAGIC:
                return None
            (count,) = struct.unpack("<I", head[len(MAGIC):])
            data = handle.read(4 * count)
            if len(data) != 4 * count:
                return None
            return list(struct.unpack(f"<{count}i", data))
    except OSError:
        return None


class DiskCache:
    def __init__(self, root: Path, key: str, capacity_bytes: int, min_tokens: int = 64):
        self.root, self.folder = root, root / key
        self.capacity, self.min_tokens = capacity_bytes, min_tokens
        self.entries: list[DiskEntry] = []
        self._lock = threading.Lock()
        self._writes: queue.Queue = queue.Queue()
        if capacity_bytes > 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            for path in self.folder.glob(f"*{SUFFIX}"):
                tokens = read_tokens(path)
                if tokens:
                    self.entries.append(DiskEntry(path, tokens))
            threading.Thread(target=self._write_loop, name="kv-disk-cache", daemon=True).start()

    # --- the scheduler's side -----------------------------------------------------------------------------

    def save(self, ctx, seq_id: int, tokens: list[int]) -> bool:
        """Copy the sequence's state out now; the file is written by the writer thread."""
        if self.capacity <= 0 or len(tokens) < self.min_tokens or any(t < 0 for t in tokens):
            return False
        with self._lock:
            if any(common_prefix(tokens, e.tokens) == len(tokens) for e in self.entries):
                return True  # an entry holds it already
        size = llama_cpp.llama_state_seq_get_size(ctx, seq_id)
        if not size or size > self.capacity:
            return False
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, seq_id)
        if not written:
            return False
        self._writes.put((list(tokens), memoryview(buffer)[:written]))
        return True

    def best(self, prompt: list[int]) -> tuple[DiskEntry | None, int]:
        with self._lock:
            found, length = None, 0
            for entry in self.entries:
                shared = common_prefix(prompt, entry.tokens)
                if shared > length:
                    found, length = entry, shared
            return found, length

    def restore(self, entry: DiskEntry, ctx, seq_id: int) -> list[int] | None:
        """Load an entry into an empty sequence: its tokens, or None when it cannot be read or loaded."""
        try:
            with open(entry.path, "rb") as handle:
                handle.seek(len(MAGIC) + 4 + 4 * len(entry.tokens))
                state = handle.read()
            os.utime(entry.path)  # recently used: last out
        except OSError:
            self._forget(entry)
            return None
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if not llama_cpp.llama_state_seq_set_data(ctx, buffer, len(state), seq_id):
            self._forget(entry)
            return None
        return list(entry.tokens)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait for the files queued so far (a worker that stops writes what it copied out first)."""
        if self.capacity > 0:
            done = threading.Event()
            self._writes.put(done)
            done.wait(timeout)

    # --- the writer thread ----------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            try:
                self._write(*item)
            except OSError:
                pass  # a full or read-only disk loses the cache, never a request

    def _write(self, tokens: list[int], state: memoryview) -> None:
        name = hashlib.sha256(struct.pack(f"<{len(tokens)}i", *tokens)).hexdigest()[:32] + SUFFIX
        path = self.folder / name
        partial = path.with_suffix(".part")
        with open(partial, "wb") as handle:
            handle.write(MAGIC + struct.pack("<I", len(tokens)) + struct.pack(f"<{len(tokens)}i", *tokens))
            handle.write(state)
        os.replace(partial, path)
        with self._lock:
            superseded = [e for e in self.entries if common_prefix(e.tokens, tokens) == len(e.tokens)]
            self.entries = [e for e in self.entries if e not in superseded]
            self.entries.append(DiskEntry(path, tokens))
        for entry in superseded:
            if entry.path != path:
                entry.path.unlink(missing_ok=True)
        self._trim()

    def _trim(self) -> None:
        """Oldest files out, across every model's folder, until the cache is under its cap."""
        files = []
        for path in self.root.glob(f"*/*{SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            files.append((stat.st_mtime_ns, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.capacity:
                break
            path.unlink(missing_ok=True)
            total -= size
            with self._lock:
                self.entries = [e for e in self.entries if e.path != path]

    def _forget(self, entry: DiskEntry) -> None:
        with self._lock:
            self.entries = [e for e in self.entries if e is not entry]
        entry.path.unlink(missing_ok=True)
