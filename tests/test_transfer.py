"""lms/store/transfer.py against a real HTTP server serving the bundled model file: the sha256 it returns is the
file's, whatever way the bytes arrived (in one go, after a dropped connection, on top of a part file, from a
server that ignores Range, through a redirect, chunked), by both ways of moving them (spliced in the kernel, and
copied through a buffer as over TLS)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lms.store import transfer
from lms.store.catalog import bundled_model_file
from lms.store.transfer import TransferError, fetch
from tests.hf_server import FakeHub

REPO_ID = "lms-test/Transfer-GGUF"
NAME = "model.gguf"


@pytest.fixture(autouse=True, params=["splice", "copy"])
def way(request, monkeypatch):
    if request.param == "copy":
        monkeypatch.setattr(transfer, "_spliceable", lambda response, sock: False)
    return request.param


@pytest.fixture(scope="module")
def model() -> tuple[Path, str]:
    path = bundled_model_file()
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def hub(model):
    with FakeHub() as fake:
        fake.add_repo(REPO_ID, {NAME: model[0]}, tags=["gguf"])
        yield fake


def url_of(hub: FakeHub) -> str:
    return f"{hub.url}/{REPO_ID}/resolve/main/{NAME}"


def fetched(url: str, part: Path, size: int) -> tuple[str, list[int]]:
    positions: list[int] = []
    digest = fetch(url, {}, part, size, lambda position, received: positions.append(position))
    return digest, positions


def test_a_whole_file_with_its_sha256_and_progress(hub, model, tmp_path):
    path, sha = model
    part = tmp_path / "model.gguf.part"
    digest, positions = fetched(url_of(hub), part, path.stat().st_size)
    assert digest == sha
    assert part.read_bytes() == path.read_bytes()
    assert positions[0] == 0 and positions[-1] == path.stat().st_size
    assert positions == sorted(positions) and len(positions) > 3


def test_a_dropped_connection_continues_with_a_range(hub, model, tmp_path):
    path, sha = model
    size = path.stat().st_size
    hub.interrupt(REPO_ID, NAME, after_bytes=size // 3)
    digest, _ = fetched(url_of(hub), tmp_path / "model.gguf.part", size)
    assert digest == sha
    hub.wait_idle()
    ranges = [request.range for request in hub.requests if request.path.endswith(NAME)]
    assert ranges == [None, f"bytes={size // 3}-"]
    assert hub.bytes_served(REPO_ID, NAME) == size  # nothing fetched twice


def test_a_part_file_is_continued_and_hashed_whole(hub, model, tmp_path):
    path, sha = model
    size = path.stat().st_size
    part = tmp_path / "model.gguf.part"
    part.write_bytes(path.read_bytes()[: size // 2])
    digest, positions = fetched(url_of(hub), part, size)
    assert digest == sha and positions[0] == size // 2
    hub.wait_idle()
    assert hub.bytes_served(REPO_ID, NAME) == size - size // 2


def test_a_complete_part_is_only_hashed(hub, model, tmp_path):
    path, sha = model
    part = tmp_path / "model.gguf.part"
    part.write_bytes(path.read_bytes())
    assert fetched(url_of(hub), part, path.stat().st_size)[0] == sha
    assert hub.requests == []


def test_a_part_longer_than_the_file_starts_over(hub, model, tmp_path):
    path, sha = model
    part = tmp_path / "model.gguf.part"
    part.write_bytes(path.read_bytes() + b"trailing garbage")
    assert fetched(url_of(hub), part, path.stat().st_size)[0] == sha
    assert part.stat().st_size == path.stat().st_size


def test_a_corrupted_body_gives_another_sha256(hub, model, tmp_path):
    path, sha = model
    hub.corrupt(REPO_ID, NAME)
    digest, _ = fetched(url_of(hub), tmp_path / "model.gguf.part", path.stat().st_size)
    assert digest != sha and len(digest) == 64


class _PlainServer(ThreadingHTTPServer):
    """Ignores Range (answers 200 with the whole file) and redirects /old to /file, as some mirrors do."""

    def __init__(self, body: bytes):
        self.body = body
        self.ranges: list[str | None] = []
        self.stall_once = False  # send half the body, then nothing until the client gives up
        self.chunked = False
        super().__init__(("127.0.0.1", 0), _PlainHandler)


class _PlainHandler(BaseHTTPRequestHandler):
    server: _PlainServer

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/old":
            self.send_response(302)
            self.send_header("Location", "/file")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/file":
            self.send_error(404)
            return
        self.server.ranges.append(self.headers.get("Range"))
        if self.server.chunked:
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            body = memoryview(self.server.body)
            for start in range(0, len(body), 300_000):
                piece = body[start:start + 300_000]
                self.wfile.write(b"%x\r\n" % len(piece) + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.body)))
        self.end_headers()
        if self.server.stall_once:
            self.server.stall_once = False
            self.wfile.write(self.server.body[: len(self.server.body) // 2])
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True
            return
        self.wfile.write(self.server.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def plain_server(model):
    server = _PlainServer(model[0].read_bytes())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_a_server_ignoring_range_restarts_the_part_and_its_hash(plain_server, model, tmp_path):
    path, sha = model
    size = path.stat().st_size
    part = tmp_path / "model.gguf.part"
    part.write_bytes(b"\0" * (size // 4))  # wrong bytes: they must not count, since the server starts over
    host, port = plain_server.server_address[:2]
    digest, positions = fetched(f"http://{host}:{port}/old", part, size)
    assert digest == sha and positions[0] == 0
    assert plain_server.ranges == [f"bytes={size // 4}-"]
    assert part.read_bytes() == path.read_bytes()


def test_a_stalled_connection_is_given_up_and_asked_again(plain_server, model, tmp_path, monkeypatch):
    path, sha = model
    monkeypatch.setattr(transfer, "TIMEOUT_SECONDS", 1)
    plain_server.stall_once = True
    host, port = plain_server.server_address[:2]
    started = time.monotonic()
    digest, _ = fetched(f"http://{host}:{port}/file", tmp_path / "model.gguf.part", path.stat().st_size)
    assert digest == sha
    first, second = plain_server.ranges
    resumed_at = int(second.removeprefix("bytes=").removesuffix("-"))
    assert first is None and 0 < resumed_at <= path.stat().st_size // 2  # asked again from what was written
    assert time.monotonic() - started < 3  # the kernel's receive timeout ended the wait, not the server


def test_a_chunked_body(plain_server, model, tmp_path):
    path, sha = model
    plain_server.chunked = True
    host, port = plain_server.server_address[:2]
    digest, _ = fetched(f"http://{host}:{port}/file", tmp_path / "model.gguf.part", path.stat().st_size)
    assert digest == sha


def test_a_file_system_without_splice_gets_the_rest_copied(plain_server, model, tmp_path, monkeypatch, way):
    path, sha = model
    splice, into_files = os.splice, []

    def refusing_files(source, destination, count, *args):
        if stat.S_ISREG(os.fstat(destination).st_mode):
            into_files.append(count)
            raise OSError(errno.EINVAL, "Invalid argument")
        return splice(source, destination, count, *args)

    monkeypatch.setattr(os, "splice", refusing_files)
    host, port = plain_server.server_address[:2]
    digest, _ = fetched(f"http://{host}:{port}/file", tmp_path / "model.gguf.part", path.stat().st_size)
    assert digest == sha and part_bytes(tmp_path) == path.read_bytes()
    assert len(into_files) == (1 if way == "splice" else 0)  # tried once, then copying for the rest
    assert plain_server.ranges[0] is None and len(plain_server.ranges) == (2 if way == "splice" else 1)


def part_bytes(folder: Path) -> bytes:
    return (folder / "model.gguf.part").read_bytes()


def test_a_missing_file_is_a_transfer_error_with_its_status(plain_server, tmp_path):
    host, port = plain_server.server_address[:2]
    with pytest.raises(TransferError) as error:
        fetch(f"http://{host}:{port}/nothing", {}, tmp_path / "x.part", 10, lambda *_: None)
    assert error.value.status == 404
