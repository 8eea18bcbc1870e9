"""Images named by requests: data URLs decoded, http(s) URLs fetched with limits.

Fetching is the daemon's (the worker has no network business): a time limit, a size cap, an image content type,
at most three redirects, and never a link-local or cloud-metadata address (each hop's host is resolved and
checked before it is contacted).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

from lms.errors import LmsError

MAX_IMAGE_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
# Metadata services that are not link-local: Alibaba Cloud, AWS's IPv6 endpoint, Oracle's legacy one.
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "192.0.0.192")}


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


def forbidden_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_link_local or ip in METADATA_ADDRESSES or ip.is_multicast or ip.is_unspecified


async def _check_host(url: str, param: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("Image URLs must be data:, http: or https: URLs.", param)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise _invalid(f"Cannot resolve the image host {parts.hostname}: {exc}", param) from exc
    if any(forbidden_address(info[4][0]) for info in infos):
        raise _invalid(f"Refusing to fetch an image from {parts.hostname}: link-local and cloud-metadata "
                       "addresses are not allowed.", param)


async def fetch_image(url: str, param: str) -> bytes:
    import httpx

    async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            await _check_host(url, param)
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise _invalid(f"Fetching the image failed with HTTP {response.status_code}.", param)
                    kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                    if not kind.startswith("image/"):
                        raise _invalid(f"The URL did not return an image (content type {kind or 'none'}).", param)
                    data = bytearray()
                    async for chunk in response.aiter_bytes():
                        data += chunk
                        if len(data) > MAX_IMAGE_BYTES:
                            raise _invalid(f"The image is larger than {MAX_IMAGE_BYTES // (1024 * 1024)} MiB.",
                                           param)
                    return bytes(data)
            except httpx.TimeoutException as exc:
                raise _invalid(f"Fetching the image timed out after {FETCH_TIMEOUT_SECONDS:.0f} s.", param) from exc
            except httpx.HTTPError as exc:
                raise _invalid(f"Fetching the image failed: {exc}", param) from exc
    raise _invalid(f"Too many redirects fetching the image (more than {MAX_REDIRECTS}).", param)


async def load_image(url: str, param: str) -> bytes:
    if url.startswith("data:"):
        return decode_data_url(url, param)
    return await fetch_image(url, param)
