"""Images named by requests: data URLs decoded, http(s) URLs fetched with limits.

Fetching is the daemon's (the worker has no network business): one deadline, a size cap, an image content type,
at most three redirects, at most MAX_IMAGES per request, and only public addresses unless allowed (lms.outbound:
each hop's host is resolved, checked, and connected to by the checked address).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from urllib.parse import urljoin, urlsplit

from lms.errors import LmsError
from lms.outbound import checked_address
from lms.pipeline.image_header import dimensions

MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 50_000_000  # a 48-megapixel photo passes; decoded, an image takes 3 bytes a pixel
FETCH_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
MAX_IMAGES = 16  # per request: each one is a fetch and a projector pass


def _invalid(message: str, param: str) -> LmsError:
    return LmsError.invalid(message, param, code="invalid_image")


def decode_data_url(url: str, param: str) -> bytes:
    header, _, payload = url.partition(",")
    media_type = header[5:].split(";")[0].strip().lower()
    if not media_type.startswith("image/"):
        raise _invalid(f"The data URL must hold an image, not {media_type or 'unknown data'}.", param)
    if ";base64" not in header.lower():
        raise _invalid("Image data URLs must be base64-encoded.", param)
    if len(payload) * 3 // 4 > MAX_IMAGE_BYTES:
        raise _invalid(f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB.", param)
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(f"The image data URL is not valid base64: {exc}", param) from exc


def _pinned(url: str, address: str) -> tuple[str, dict, dict]:
    """The URL with its host replaced by the checked address, and the Host header and TLS name that keep the
    request addressed to the original host."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    literal = f"[{address}]" if ":" in address else address
    pinned = parts._replace(netloc=f"{literal}:{port}").geturl()
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    if ":" in (parts.hostname or ""):
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    return pinned, {"Host": host}, ({"sni_hostname": parts.hostname} if parts.scheme == "https" else {})


async def fetch_image(url: str, param: str, allowed_hosts: set[str] = frozenset()) -> bytes:
    """GET an image: each hop's host checked (lms.outbound) and connected to by the checked address, one deadline
    for the whole fetch, a size cap, and errors that do not repeat what the remote server said."""
    import httpx

    try:
        async with asyncio.timeout(FETCH_TIMEOUT_SECONDS), httpx.AsyncClient(
                timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
            for _ in range(MAX_REDIRECTS + 1):
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise _invalid("Image URLs must be data:, http: or https: URLs.", param)
                port = parts.port or (443 if parts.scheme == "https" else 80)
                address = await checked_address(parts.hostname, port, allowed_hosts, what="an image",
                                                param=param, code="invalid_image")
                pinned, headers, extensions = _pinned(url, address)
                async with client.stream("GET", pinned, headers=headers, extensions=extensions) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if response.status_code != 200 or not kind.startswith("image/"):
                        raise _invalid("The image URL did not return an image.", param)
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_IMAGE_BYTES:
                            raise _invalid(f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB.",
                                           param)
                    return bytes(data)
    except (TimeoutError, httpx.TimeoutException):
        raise _invalid(f"Fetching the image took longer than {FETCH_TIMEOUT_SECONDS:.0f} s.", param) from None
    except httpx.HTTPError:
        raise _invalid("Fetching the image failed: the connection did not complete.", param) from None
    raise _invalid(f"Too many redirects fetching the image (more than {MAX_REDIRECTS}).", param)


def check_size(data: bytes, param: str) -> bytes:
    """Refuse an image that would take more memory decoded than any photo needs (see lms/pipeline/image_header)."""
    size = dimensions(data)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise _invalid(f"The image is {size[0]} x {size[1]} pixels; at most {MAX_IMAGE_PIXELS // 1_000_000} "
                       f"megapixels are taken.", param)
    return data


async def load_image(url: str, param: str, allowed_hosts: set[str] = frozenset()) -> bytes:
    data = decode_data_url(url, param) if url.startswith("data:") else await fetch_image(url, param, allowed_hosts)
    return check_size(data, param)
