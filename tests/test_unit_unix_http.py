"""The CLI's HTTP reader for the daemon's unix socket (lms/unix_http.py), against canned answers on a real socket:
each way a body can be sized, a stream read line by line, and an answer cut short."""

from __future__ import annotations

import socket
import threading

import pytest

from lms import unix_http


def answer_with(raw: bytes) -> tuple[unix_http.Response, bytes]:
    """Send one request on a socket pair whose other end answers `raw` and closes; (the response, the request)."""
    ours, theirs = socket.socketpair()
    received = []

    def serve() -> None:
        received.append(theirs.recv(65536))
        theirs.sendall(raw)
        theirs.close()

    server = threading.Thread(target=serve)
    server.start()
    response = unix_http.request(ours, "POST", "/lms/x", b'{"a": 1}', {"Content-Type": "application/json"})
    server.join()
    return response, received[0]


def test_a_body_sized_by_content_length_and_the_request_sent():
    response, request = answer_with(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n"
                                    b'{"b":2}')
    assert request.startswith(b"POST /lms/x HTTP/1.1\r\n")
    assert b"Content-Length: 8\r\n" in request and request.endswith(b'\r\n\r\n{"a": 1}')
    assert (response.status, response.headers["content-type"]) == (200, "application/json")
    assert response.read() == b'{"b":2}'
    response.close()


def test_a_chunked_stream_is_read_line_by_line_across_chunk_boundaries():
    chunks = [b"data: {\"n\"", b": 1}\n\nda", b"ta: [DONE]\n\n"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    response, _ = answer_with(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + body)
    assert list(response) == [b'data: {"n": 1}\n', b"\n", b"data: [DONE]\n", b"\n"]


def test_a_body_that_runs_until_the_connection_closes_and_an_error_status():
    response, _ = answer_with(b"HTTP/1.1 404 Not Found\r\n\r\n{\"error\": {\"message\": \"no\"}}")
    assert response.status == 404
    assert response.read() == b'{"error": {"message": "no"}}'


@pytest.mark.parametrize("raw", [b"", b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
                                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
                                 b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", b"SSH-2.0\r\n\r\n"])
def test_an_answer_cut_short_or_not_http_raises_connection_error(raw):
    with pytest.raises(ConnectionError):
        response, _ = answer_with(raw)
        response.read()
