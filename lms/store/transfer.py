"""Moving the bytes of one file from a URL into a part file, as fast as the link allows.

huggingface_hub decides what to fetch (the resolve URL, the auth headers, the expected size and sha256); this
does the transfer: `readinto` straight into reused buffers, written at once and hashed on a second thread, a
Range request to resume a part file, redirects followed (the Hub sends large files to its CDN; credentials are
not sent to another host), and a few retries from where it stopped when a connection breaks.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import queue
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

BUFFER_BYTES = 2 * 1024 * 1024
BUFFERS = 4
PROGRESS_EVERY = 8 * 1024 * 1024
RETRIES = 5
TIMEOUT_SECONDS = 30


class TransferError(Exception):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def _connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=TIMEOUT_SECONDS,
                                           context=ssl.create_default_context())
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_SECONDS)


def _open(url: str, headers: dict[str, str], offset: int) -> tuple[http.client.HTTPResponse, int]:
    """GET with redirects followed; returns the response and the offset its body starts at."""
    origin = urlsplit(url).netloc
    for _ in range(10):
        connection = _connect(url)
        parts = urlsplit(url)
        sent = dict(headers) if parts.netloc == origin else {k: v for k, v in headers.items()
                                                              if k.lower() != "authorization"}
        if offset:
            sent["Range"] = f"bytes={offset}-"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request("GET", path, headers=sent)
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location"))
            response.close()
            connection.close()
            continue
        if response.status == 206:
            return response, offset
        if response.status == 200:
            return response, 0  # the server ignored the Range: the part starts over
        if response.status == 416 and offset:
            return response, offset  # nothing left to send
        body = response.read(2000).decode(errors="replace")
        connection.close()
        raise TransferError(f"HTTP {response.status} for {url}: {body.strip()[:300]}", response.status)
    raise TransferError(f"Too many redirects for {url}")


def _hash_existing(path: Path, size: int):
    digest = hashlib.sha256()
    with open(path, "rb") as existing:
        while size and (chunk := existing.read(min(size, 4 * BUFFER_BYTES))):
            digest.update(chunk)
            size -= len(chunk)
    return digest


class _Hasher:
    """Hashes pieces on a second core while the next piece is received and written (hashlib and the socket
    and file calls all release the GIL, so the two threads really run side by side)."""

    def __init__(self, digest):
        self.digest = digest
        self.free: queue.Queue = queue.Queue()
        self.todo: queue.Queue = queue.Queue()
        for _ in range(BUFFERS):
            self.free.put(bytearray(BUFFER_BYTES))
        self.thread = threading.Thread(target=self._run, name="lms-download-hash", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.todo.get()) is not None:
            buffer, count = item
            self.digest.update(memoryview(buffer)[:count])
            self.free.put(buffer)

    def buffer(self) -> bytearray:
        return self.free.get()

    def add(self, buffer: bytearray, count: int) -> None:
        self.todo.put((buffer, count))

    def finish(self):
        self.todo.put(None)
        self.thread.join()
        return self.digest


def fetch(url: str, headers: dict[str, str], part: Path, size: int,
          progress: Callable[[int, int], None]) -> str:
    """Fetch into `part` (resuming what it holds) until it has `size` bytes; returns its sha256.
    `progress(position, received)` is called as bytes arrive and may raise to stop the transfer; the part
    keeps what was written."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    offset = offset if offset <= size else 0
    failures = 0
    while True:
        response, offset = _open(url, headers, offset) if offset < size else (None, offset)
        hasher = _Hasher(_hash_existing(part, offset) if offset else hashlib.sha256())
        position = offset
        fd = os.open(part, os.O_WRONLY | os.O_CREAT)
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
            progress(position, 0)
            reported = position
            while response is not None and position < size:
                buffer = hasher.buffer()
                count = response.readinto(buffer)
                if not count:
                    hasher.free.put(buffer)
                    break
                piece = memoryview(buffer)[:count]
                while piece:
                    piece = piece[os.write(fd, piece):]
                hasher.add(buffer, count)
                position += count
                if position - reported >= PROGRESS_EVERY or position >= size:
                    progress(position, position - reported)
                    reported = position
        except (ConnectionError, TimeoutError, http.client.HTTPException):
            failures += 1
            if failures > RETRIES:
                raise
        finally:
            digest = hasher.finish()
            os.close(fd)
            if response is not None:
                response.close()
        if position >= size:
            if position > size:
                raise TransferError(f"{url} sent {position} bytes, more than the {size} expected")
            return digest.hexdigest()
        if position == offset:
            failures += 1
            if failures > RETRIES:
                raise TransferError(f"The connection for {url} kept breaking ({position} of {size} bytes).")
        offset = position
