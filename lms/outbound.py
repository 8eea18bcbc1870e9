"""Where lms may connect on a request's behalf (image URLs, remote MCP servers): public addresses only.

A request could otherwise make the daemon reach this machine's own services, the local network or a cloud
metadata endpoint. Loopback, private (RFC 1918), link-local, CGNAT, unique-local IPv6, NAT64, multicast, reserved
and metadata addresses are refused unless the URL's host is listed in the `allowed_fetch_hosts` setting (a user
with an MCP server on localhost lists `localhost` or `127.0.0.1` there). A host name is resolved once and every
address it has must pass; callers then connect to the checked address, so a second lookup cannot rebind it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket

from lms.errors import LmsError

# Metadata services outside the link-local range: Alibaba Cloud, AWS's IPv6 endpoint, Oracle's legacy one.
METADATA_ADDRESSES = {ipaddress.ip_address(a) for a in ("100.100.100.200", "fd00:ec2::254", "192.0.0.192")}
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _unwrapped(ip: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped or NAT64 IPv6 address: it is the one actually reached."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def metadata_or_link_local(address: str) -> bool:
    """Never reachable, whatever is allowed: cloud metadata and link-local addresses hand out credentials."""
    ip = _unwrapped(ipaddress.ip_address(address.split("%")[0]))
    return ip.is_link_local or ip in METADATA_ADDRESSES


def private(address: str) -> bool:
    """Not a public address: reachable only from this machine or its networks."""
    ip = _unwrapped(ipaddress.ip_address(address.split("%")[0]))
    return (metadata_or_link_local(address) or ip.is_loopback or ip.is_private or ip.is_multicast
            or ip.is_unspecified or ip.is_reserved or (isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT))


def refusal(host: str, what: str, param: str | None, code: str) -> LmsError:
    return LmsError.invalid(f"Refusing to connect to {host} for {what}: it is not a public address. If it is "
                            "yours, add it to the allowed_fetch_hosts setting.", param, code=code)


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` has, in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


async def checked_address(host: str, port: int, allowed_hosts: set[str] | frozenset[str], *, what: str,
                          param: str | None, code: str) -> str:
    """The address to connect to for `host`, once every address it resolves to has passed the policy."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise LmsError.invalid(f"Cannot resolve {host} for {what}: {exc.strerror or exc}", param, code=code) from None
    allowed = host.lower() in allowed_hosts
    if not addresses or any(metadata_or_link_local(a) or (private(a) and not allowed) for a in addresses):
        raise refusal(host, what, param, code)
    return addresses[0]


class AddressPins:
    """The checked address of every host one client connects to: the first use of a host resolves and checks it,
    every later request (a reconnection, a redirect back to it) goes to that same address, and a host not seen
    before (a redirect elsewhere) is checked before anything is sent to it."""

    def __init__(self, allowed_hosts: set[str] | frozenset[str], *, what: str, code: str = "address_not_allowed"):
        self.allowed_hosts, self.what, self.code = allowed_hosts, what, code
        self._addresses: dict[tuple[str, int], str] = {}

    async def address(self, host: str, port: int) -> str:
        key = (host.lower(), port)
        if key not in self._addresses:
            self._addresses[key] = await checked_address(host, port, self.allowed_hosts, what=self.what, param=None,
                                                         code=self.code)
        return self._addresses[key]


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
