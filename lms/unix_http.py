"""HTTP/1.1 over the daemon's unix socket, without http.client: importing that module (it brings in email and ssl)
takes about 20 ms, a quarter of a whole `lms ps --json`. One request per connection (`Connection: close`), and only
what the daemon's server sends is read: a status line, headers, then a body sized by Content-Length, sent in
chunks, or running until the connection closes. A connection that ends early raises ConnectionError.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

_BLANK = (b"\r\n", b"\n")


class Response:
    """The answer to one request: `status`, `headers` (names in lower case), then `read()` for the whole body or
    iteration for its lines as they come (a stream)."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._file = sock.makefile("rb")
        parts = self._file.readline().split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise ConnectionError("the lms daemon's socket did not answer in HTTP")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while (line := self._line()) not in _BLANK:
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        length = self.headers.get("content-length")
        self._length = int(length) if length and length.isdigit() else None

    def _line(self) -> bytes:
        line = self._file.readline(65537)
        if not line.endswith(b"\n"):
            raise ConnectionError("the lms daemon closed the connection mid-answer")
        return line

    def _exactly(self, size: int) -> bytes:
        data = self._file.read(size)
        if len(data) < size:
            raise ConnectionError("the lms daemon closed the connection mid-answer")
        return data

    def _chunk_size(self) -> int:
        try:
            return int(self._line().split(b";")[0].strip(), 16)
        except ValueError:
            raise ConnectionError("the lms daemon sent a malformed chunk") from None

    def _pieces(self) -> Iterator[bytes]:
        if self._chunked:
            while size := self._chunk_size():
                yield self._exactly(size)
                self._line()  # the CRLF after each chunk
            while self._line() not in _BLANK:  # trailers
                pass
        elif self._length is not None:
            yield self._exactly(self._length)
        else:
            while data := self._file.read1(65536):
                yield data

    def read(self) -> bytes:
        return b"".join(self._pieces())

    def __iter__(self) -> Iterator[bytes]:
        pending = b""
        for piece in self._pieces():
            *lines, pending = (pending + piece).split(b"\n")
            for line in lines:
                yield line + b"\n"
        if pending:
            yield pending

    def close(self) -> None:
        """Close the connection (the answer's reader and the socket)."""
        self._file.close()
        self._sock.close()


def request(sock: socket.socket, method: str, target: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> Response:
    """Send one request on a connected socket and read the answer's head."""
    lines = [f"{method} {target} HTTP/1.1", "Host: lms", "Connection: close",
             *(f"{name}: {value}" for name, value in (headers or {}).items())]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    return Response(sock)
