"""Moving the bytes of one file from a URL into a part file, as fast as the link allows.

huggingface_hub decides what to fetch (the resolve URL, the auth headers, the expected size and sha256); this
does the transfer: over plain HTTP the body is spliced from the socket into the file inside the kernel (Linux),
else (TLS, chunked bodies) read into one reused buffer and written at once; the sha256 is computed on another
core from what was written (lms/store/trailing_hash.py); a Range request resumes a part file; redirects are
followed (the Hub sends large files to its CDN; credentials are not sent to another host); a connection that
breaks or stalls is asked again from the last byte written, a few times.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import http.client
import os
import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from lms.store.trailing_hash import TrailingHash

BUFFER_BYTES = 1024 * 1024  # fits the core's cache: 4 MiB buffers made the copies twice as slow
F_SETPIPE_SZ = 1031  # fcntl: a pipe as large as a buffer moves a megabyte per splice
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


def _without_poll(sock: socket.socket) -> None:
    """Leave the stall timeout to the kernel (SO_RCVTIMEO) instead of Python's poll() before every recv: a body
    read then takes one system call per piece, not two (measured: 0.70 of curl's speed with the poll, 0.95
    without). TLS sockets keep Python's timeout, which its SSL reads rely on."""
    if isinstance(sock, ssl.SSLSocket):
        return
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", TIMEOUT_SECONDS, 0))


def _open(url: str, headers: dict[str, str], offset: int) \
        -> tuple[http.client.HTTPResponse | None, int, socket.socket | None]:
    """GET with redirects followed; returns the response, the offset its body starts at, and its socket."""
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
        sock = connection.sock  # before getresponse, which lets go of it when the server closes after the body
        response = connection.getresponse()
        if response.status in (301, 302, 303, 307, 308) and response.getheader("Location"):
            url = urljoin(url, response.getheader("Location"))
            response.close()
            connection.close()
            continue
        if response.status in (200, 206):
            _without_poll(sock)
        if response.status == 206:
            return response, offset, sock
        if response.status == 200:
            return response, 0, sock  # the server ignored the Range: the part starts over
        if response.status == 416 and offset:
            response.close()  # nothing left to send
            connection.close()
            return None, offset, None
        body = response.read(2000).decode(errors="replace")
        connection.close()
        raise TransferError(f"HTTP {response.status} for {url}: {body.strip()[:300]}", response.status)
    raise TransferError(f"Too many redirects for {url}")


class _SpliceUnsupported(Exception):
    """This file system takes no splice: what reached the pipe was written, the rest comes by copying."""


class _PartWriter:
    """Appends a response body to the part file at its position, keeping the hash and the progress in step."""

    def __init__(self, fd: int, digest: TrailingHash, progress: Callable[[int, int], None]):
        self.fd, self.digest, self.progress = fd, digest, progress
        self.position = 0
        self.can_splice = hasattr(os, "splice")
        self._buffer = bytearray(BUFFER_BYTES)

    def _wrote(self, count: int) -> None:
        self.position += count
        self.digest.advance(self.position)
        self.progress(self.position, count)  # per piece: a cancel takes effect within one buffer

    def _write(self, data) -> None:
        piece = memoryview(data)
        while piece:
            piece = piece[os.write(self.fd, piece):]
        self._wrote(len(data))

    def copy(self, response: http.client.HTTPResponse, size: int) -> None:
        received = memoryview(self._buffer)
        while self.position < size:
            count = response.readinto(self._buffer)
            if not count:
                return
            self._write(received[:count])

    def splice(self, response: http.client.HTTPResponse, sock: socket.socket, size: int) -> None:
        """The body goes socket → pipe → file inside the kernel: one copy instead of two through a buffer, which
        on 2 cores made a 491 MB download steady at 0.36-0.39 s where copying took 0.41-1.1 s."""
        remaining = response.length or 0
        buffered = len(response.fp.peek()) if remaining else 0  # what http.client read past the headers
        if buffered:
            data = response.read(min(buffered, remaining))
            self._write(data)
            remaining -= len(data)
        read_end, write_end = os.pipe()
        try:
            with contextlib.suppress(OSError):
                fcntl.fcntl(write_end, F_SETPIPE_SZ, BUFFER_BYTES)
            while remaining and self.position < size:
                moved = os.splice(sock.fileno(), write_end, min(BUFFER_BYTES, remaining))
                if not moved:
                    return  # the server ended the body early
                remaining -= moved
                while moved:
                    try:
                        written = os.splice(read_end, self.fd, moved)
                    except OSError as exc:
                        if exc.errno != errno.EINVAL:
                            raise
                        self.can_splice = False
                        while moved:
                            data = os.read(read_end, moved)
                            self._write(data)
                            moved -= len(data)
                        raise _SpliceUnsupported() from None
                    moved -= written
                    self._wrote(written)
        finally:
            os.close(read_end)
            os.close(write_end)


def _spliceable(response: http.client.HTTPResponse, sock: socket.socket) -> bool:
    return not isinstance(sock, ssl.SSLSocket) and not response.chunked and response.length is not None


def fetch(url: str, headers: dict[str, str], part: Path, size: int,
          progress: Callable[[int, int], None]) -> str:
    """Fetch into `part` (resuming what it holds) until it has `size` bytes; returns its sha256.
    `progress(position, received)` is called for every piece received and may raise to stop the transfer; the
    part keeps what was written."""
    part.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    offset = offset if offset <= size else 0
    failures = 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT)
    digest = TrailingHash(part)  # hashes what the part already holds while the rest arrives
    writer = _PartWriter(fd, digest, progress)
    try:
        while True:
            response, start, sock = _open(url, headers, offset) if offset < size else (None, offset, None)
            if start < offset:  # the server ignored the Range: the part starts over, and so does its hash
                digest.close()
                writer.digest = digest = TrailingHash(part)
            writer.position = start
            if os.fstat(fd).st_size != start:
                # Only when there is something to cut: ext4 takes a truncate followed by writes for a file being
                # replaced, and flushes it all to disk on close (0.1-0.15 s for 491 MB, a fifth of the download).
                os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
            digest.advance(start)
            try:
                progress(start, 0)
                if response is not None and writer.can_splice and _spliceable(response, sock):
                    writer.splice(response, sock, size)
                elif response is not None:
                    writer.copy(response, size)
            except _SpliceUnsupported:
                pass  # not the connection's fault, and the pipe's bytes are written: ask for the rest, and copy it
            except (ConnectionError, TimeoutError, BlockingIOError, http.client.HTTPException):
                # A stall: SO_RCVTIMEO ran out (TimeoutError from a read, BlockingIOError from a splice). What the
                # interrupted read had received is lost with it (at most one buffer): the next request asks from
                # the last byte written.
                failures += 1
                if failures > RETRIES:
                    raise
            finally:
                if response is not None:
                    response.close()
            position = writer.position
            if position >= size:
                if position > size:
                    raise TransferError(f"{url} sent {position} bytes, more than the {size} expected")
                return digest.result(size)
            if position == start:
                failures += 1
                if failures > RETRIES:
                    raise TransferError(f"The connection for {url} kept breaking ({position} of {size} bytes).")
            offset = position
    finally:
        os.close(fd)
        digest.close()
