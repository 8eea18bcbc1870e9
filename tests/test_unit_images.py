"""Image loading in the daemon: data URLs, fetching from a real local HTTP server, and the refusals."""

from __future__ import annotations

import asyncio
import base64
import http.server
import struct
import threading
import zlib

import pytest

from lms.api.errors import status_of
from lms.errors import LmsError
from lms.outbound import private
from lms.pipeline import images
from lms.pipeline.image_header import dimensions
from lms.pipeline.images import decode_data_url, load_image


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 2, height: int = 2, pixel: bytes = b"\xff\x00\x00") -> bytes:
    """An RGB PNG of one colour, compressed row by row (a large one costs little memory to make)."""
    row, packer = b"\x00" + pixel * width, zlib.compressobj(9)
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        routes = {
            "/heart.png": (200, "image/png", png()),
            "/page.html": (200, "text/html", b"<html></html>"),
            "/missing.png": (404, "text/plain", b"no"),
            "/huge.png": (200, "image/png", b"\x00" * 4096),
        }
        if self.path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data")
            self.end_headers()
            return
        if self.path == "/to-heart":
            self.send_response(302)
            self.send_header("Location", "/heart.png")
            self.end_headers()
            return
        status, kind, body = routes[self.path]
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def load(url: str, allowed: set[str] = frozenset({"127.0.0.1"})) -> bytes:
    return asyncio.run(load_image(url, "input", allowed))


def test_data_url_round_trip():
    data = png()
    assert decode_data_url("data:image/png;base64," + base64.b64encode(data).decode(), "input") == data


@pytest.mark.parametrize("url", ["data:text/plain;base64,aGk=", "data:image/png,rawbytes"])
def test_bad_data_urls_are_400(url):
    with pytest.raises(LmsError) as error:
        decode_data_url(url, "input")
    assert status_of(error.value) == 400 and error.value.code == "invalid_image"


def test_fetches_an_image_and_follows_a_redirect(image_server):
    assert load(image_server + "/heart.png") == png()
    assert load(image_server + "/to-heart") == png()


@pytest.mark.parametrize("path,message", [
    ("/page.html", "did not return an image"),
    ("/missing.png", "did not return an image"),  # what the server said is not repeated
    ("/to-metadata", "not a public address"),  # a redirect is checked like the first hop, allowed hosts or not
])
def test_refusals(image_server, path, message):
    with pytest.raises(LmsError) as error:
        load(image_server + path)
    assert status_of(error.value) == 400 and message in error.value.message
    assert error.value.code == "invalid_image"


def test_a_private_address_needs_its_host_allowed(image_server):
    with pytest.raises(LmsError) as error:
        load(image_server + "/heart.png", allowed=set())
    assert "allowed_fetch_hosts" in error.value.message
    with pytest.raises(LmsError):
        load(image_server.replace("127.0.0.1", "localhost") + "/heart.png")  # allowed by address, not by name


def test_size_cap(image_server, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(LmsError) as error:
        load(image_server + "/huge.png")
    assert "larger than" in error.value.message


@pytest.mark.parametrize("address,forbidden", [
    ("169.254.169.254", True), ("fe80::1", True), ("100.100.100.200", True), ("fd00:ec2::254", True),
    ("::ffff:169.254.169.254", True), ("127.0.0.1", True), ("10.0.0.8", True), ("192.168.1.1", True),
    ("172.16.0.1", True), ("100.64.0.1", True), ("fc00::1", True), ("::1", True), ("64:ff9b::a00:1", True),
    ("224.0.0.1", True), ("0.0.0.0", True), ("8.8.8.8", False), ("2606:4700::1111", False),
    ("64:ff9b::808:808", False),
])
def test_private_addresses(address, forbidden):
    assert private(address) is forbidden


def test_other_schemes_are_refused():
    with pytest.raises(LmsError):
        load("file:///etc/passwd")


def jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\xff\xd9"


def test_dimensions_are_read_from_the_header_alone():
    assert dimensions(png(5, 7)) == (5, 7)
    assert dimensions(b"GIF89a" + struct.pack("<HH", 640, 480) + b"\x00" * 10) == (640, 480)
    assert dimensions(b"BM" + b"\x00" * 16 + struct.pack("<ii", 300, -200) + b"\x00" * 30) == (300, 200)
    assert dimensions(jpeg_header(4000, 3000)) == (4000, 3000)
    assert dimensions(b"\x89PNG\r\n\x1a\n\x00") is None  # cut short
    assert dimensions(b"RIFF....WEBPVP8 ") is None  # not read here: the engine decides


def test_an_image_declaring_more_pixels_than_any_photo_is_refused_before_decoding():
    bomb = png(2, 2)[:16] + struct.pack(">II", 40_000, 40_000) + png(2, 2)[24:]  # 4.8 GB once decoded
    with pytest.raises(LmsError) as refused:
        load("data:image/png;base64," + base64.b64encode(bomb).decode())
    assert refused.value.code == "invalid_image" and "40000 x 40000" in refused.value.message
    photo = jpeg_header(8000, 6000)  # 48 megapixels: a phone's photo
    assert load("data:image/jpeg;base64," + base64.b64encode(photo).decode()) == photo
