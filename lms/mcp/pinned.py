"""HTTP for MCP connections that goes only where the outbound policy allows (lms.outbound), and to the address
that was checked.

The MCP SDK's transports take an `httpx2.AsyncClient`; its transport here sends every request to the checked
address of the request's host (`AddressPins`): the URL's host becomes that address, while the `Host` header
and, over TLS, the server name (SNI and certificate check, httpcore's `sni_hostname`) stay the original host's.
So a name that resolves to a public address when checked and to 127.0.0.1 a moment later (DNS rebinding) is
still reached at the public one, and a redirect to another host is checked before anything is sent to it.
"""

from __future__ import annotations

import httpx2

from lms.outbound import AddressPins, default_port


class PinnedTransport(httpx2.AsyncBaseTransport):
    def __init__(self, pins: AddressPins, inner: httpx2.AsyncBaseTransport | None = None):
        self.pins = pins
        # trust_env off: a proxy from the environment would make its own connection, by name
        self._inner = inner or httpx2.AsyncHTTPTransport(trust_env=False)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        address = await self.pins.address(url.host, url.port or default_port(url.scheme))
        extensions = dict(request.extensions)
        if url.scheme == "https":
            extensions["sni_hostname"] = url.host
        # A copy, not the request itself: the client and the SDK judge redirects by the URL they asked for.
        pinned = httpx2.Request(request.method, url.copy_with(host=address), headers=request.headers,
                                stream=request.stream, extensions=extensions)
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


def pinned_client(pins: AddressPins, *, headers: dict[str, str] | None = None,
                  timeout: httpx2.Timeout | None = None, auth: httpx2.Auth | None = None) -> httpx2.AsyncClient:
    """An AsyncClient whose every connection goes through `pins` (also the SDK's `httpx_client_factory`)."""
    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, trust_env=False,
                              transport=PinnedTransport(pins))
