"""Browser defences of the public API: a web page the user opens must not be able to drive the server.

- `Host` must name this server: a loopback name or address, the address it is bound to, any IP address when it is
  bound to all interfaces, or a host listed in the `allowed_hosts` setting. Anything else is 403: a page that
  rebinds its own DNS name to 127.0.0.1 (DNS rebinding) still sends its own name as the Host.
- `Origin`, when a browser sends one, must be the server's own origin or an allowed one (none by default; `--cors`
  allows every origin as LM Studio does; `--cors-origins a,b` a list). Anything else is 403, before any work.
Both hold for HTTP requests and WebSocket handshakes alike (a refused handshake is closed before it is accepted).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from lms.api.errors import refusal_response
from lms.errors import LmsError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


def _split_host(value: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or a bare name, lower-cased; (host, None) when there is no valid port."""
    parts = urlsplit(f"//{value}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class BrowserGuard:
    def __init__(self, app: ASGIApp, *, bind: str, allowed_hosts: set[str] = frozenset(), cors_all: bool = False,
                 cors_origins: set[str] = frozenset()):
        self.app, self.bind = app, bind.lower().strip("[]")
        self.allowed_hosts = {host.lower() for host in allowed_hosts}
        self.cors_all = cors_all
        self.cors_origins = {origin.lower().rstrip("/") for origin in cors_origins}

    def host_allowed(self, host: str) -> bool:
        name, _ = _split_host(host)
        if not name:
            return False
        if name in LOOPBACK_NAMES or name.endswith(".localhost") or name in self.allowed_hosts or name == self.bind:
            return True
        address = _ip(name)
        if address is None:
            return False  # a DNS name nobody allowed: what a rebinding page sends
        return address.is_loopback or self.bind in WILDCARD_BINDS

    def origin_allowed(self, origin: str, host: str) -> bool:
        if self.cors_all:
            return True
        origin = origin.lower().rstrip("/")
        if origin in self.cors_origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and _split_host(parts.netloc) == _split_host(host)  # same origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]}
        host, origin = headers.get("host", ""), headers.get("origin")
        refusal = None
        if not self.host_allowed(host):
            refusal = LmsError.forbidden(f"Host '{host}' is not allowed: lms answers requests addressed to this "
                                         "machine by a loopback name or address, or to a host listed in the "
                                         "allowed_hosts setting.", code="host_not_allowed")
        elif origin is not None and origin != "null" and not self.origin_allowed(origin, host):
            refusal = LmsError.forbidden(f"Origin '{origin}' is not allowed: start the server with --cors-origins "
                                         f"{origin} (or --cors for every website).", code="origin_not_allowed")
        elif origin == "null" and not self.cors_all:
            refusal = LmsError.forbidden("Requests from an opaque origin (a sandboxed page or a file) are not "
                                         "allowed without --cors.", code="origin_not_allowed")
        if refusal is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": refusal.code})
        else:
            await refusal_response(scope["path"], refusal)(scope, receive, send)
