"""MCP connections under the outbound policy: the checked address is the one connected to (a second lookup
cannot rebind it), TLS keeps the original host name, redirects to another host are checked first, one deadline
covers resolving, connecting and initializing, and the pool keeps a bounded number of connections."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx2
import pytest

import lms.outbound as outbound
from lms.conversation.mcp import RemoteServer, open_toolset
from lms.errors import LmsError
from lms.mcp.client import McpError, McpPool, ServerAddress
from lms.mcp.pinned import PinnedTransport
from lms.outbound import AddressPins
from tests.test_mcp import McpServer

PUBLIC = "93.184.216.34"


@pytest.fixture(scope="module")
def weather():
    server = McpServer().start()
    yield server
    server.stop()


@pytest.fixture
def lookups(monkeypatch):
    """Names resolve through a table; every lookup is recorded."""
    table: dict[str, list[str]] = {}
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    monkeypatch.setattr(outbound, "resolve", resolve)
    return table, asked


def test_requests_go_to_the_checked_address_with_the_original_host_and_tls_name(lookups):
    table, asked = lookups
    table["mcp.example"] = [PUBLIC]
    seen = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append((str(request.url), request.headers["host"], request.extensions.get("sni_hostname")))
        return httpx2.Response(200, text="ok")

    async def two_requests():
        transport = PinnedTransport(AddressPins(frozenset(), what="an MCP server"), httpx2.MockTransport(answer))
        async with httpx2.AsyncClient(transport=transport) as client:
            response = await client.post("https://mcp.example/mcp", json={})
            table["mcp.example"] = ["127.0.0.1"]  # rebound after the check: not looked up again
            await client.post("https://mcp.example/mcp", json={})
        return response

    response = asyncio.run(two_requests())
    assert seen == [(f"https://{PUBLIC}/mcp", "mcp.example", "mcp.example")] * 2
    assert str(response.request.url) == "https://mcp.example/mcp"  # the client still sees what it asked for
    assert asked == ["mcp.example"]


def test_a_redirect_to_a_private_host_is_refused_before_anything_is_sent(lookups):
    table, _ = lookups
    table["mcp.example"], table["inside.example"] = [PUBLIC], ["10.0.0.7"]
    sent = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        sent.append(str(request.url))
        return httpx2.Response(307, headers={"location": "http://inside.example/admin"})

    async def follow():
        transport = PinnedTransport(AddressPins(frozenset(), what="an MCP server"), httpx2.MockTransport(answer))
        async with httpx2.AsyncClient(transport=transport, follow_redirects=True) as client:
            await client.get("http://mcp.example/mcp")

    with pytest.raises(LmsError) as refused:
        asyncio.run(follow())
    assert "allowed_fetch_hosts" in refused.value.message and refused.value.code == "address_not_allowed"
    assert sent == [f"http://{PUBLIC}/mcp"]


def test_the_connection_goes_to_the_address_that_was_checked(lookups, weather, monkeypatch):
    """After the check, the name is never resolved again: the system's resolver fails for it here, so listing
    tools works only if the connection uses the checked address. (The test server accepts only a loopback name
    in the Host header, hence `localhost`.)"""
    table, asked = lookups
    table["localhost"] = ["127.0.0.1"]
    system_lookup = socket.getaddrinfo

    def no_second_lookup(host, *args, **kwargs):
        if host in ("localhost", b"localhost"):
            raise socket.gaierror(socket.EAI_NONAME, "resolved again after the check")
        return system_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_second_lookup)
    address = ServerAddress(url=f"http://localhost:{weather.port}/mcp", allowed_hosts=frozenset({"localhost"}))

    async def list_twice():
        pool = McpPool(connect_timeout=10)
        try:
            first = await pool.tools(address)
            table["localhost"] = ["169.254.169.254"]  # what a rebinding attacker would switch to
            second = await pool.tools(address)
            return first, second
        finally:
            await pool.close_all()

    first, second = asyncio.run(list_twice())
    assert "get_weather" in [tool.name for tool in first] and first == second
    assert asked == ["localhost"]


def test_a_private_address_needs_its_host_allowed(weather):
    async def connect():
        pool = McpPool(connect_timeout=5)
        try:
            await pool.tools(ServerAddress(url=weather.url))
        finally:
            await pool.close_all()

    with pytest.raises(LmsError) as refused:
        asyncio.run(connect())
    assert refused.value.code == "address_not_allowed" and "allowed_fetch_hosts" in refused.value.message


def test_mcp_json_http_servers_are_checked_too(weather):
    local = RemoteServer("weather", ServerAddress(url=weather.url), echo={}, local=True)
    remote = RemoteServer("weather", ServerAddress(url=weather.url), echo={})

    async def open_with(server: RemoteServer, hosts: set[str]):
        pool = McpPool(connect_timeout=10)
        try:
            return await open_toolset([server], ["tools[0]"], pool, set(), [], hosts)
        finally:
            await pool.close_all()

    for server, param in ((local, "tools[0]"), (remote, "tools[0].server_url")):
        with pytest.raises(LmsError) as refused:
            asyncio.run(open_with(server, set()))
        assert refused.value.param == param and "allowed_fetch_hosts" in refused.value.message
    toolset = asyncio.run(open_with(local, {"127.0.0.1"}))
    assert "get_weather" in toolset.tools
    assert local.address.allowed_hosts == {"127.0.0.1"}  # calls that reconnect apply the same policy


def test_a_server_that_never_answers_fails_at_the_connect_deadline():
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections (the kernel does) and says nothing
    port = silent.getsockname()[1]

    async def connect():
        pool = McpPool(connect_timeout=1)
        try:
            await pool.tools(ServerAddress(url=f"http://127.0.0.1:{port}/mcp", allowed_hosts=frozenset({"127.0.0.1"})))
        finally:
            await pool.close_all()

    started = time.monotonic()
    try:
        with pytest.raises(McpError) as failed:
            asyncio.run(connect())
    finally:
        silent.close()
    assert failed.value.error["code"] == 504 and time.monotonic() - started < 5


def test_a_lookup_that_hangs_fails_at_the_connect_deadline(monkeypatch):
    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(60)
        return [PUBLIC]

    monkeypatch.setattr(outbound, "resolve", hang)

    async def connect():
        await McpPool(connect_timeout=0.5).tools(ServerAddress(url="http://slow-dns.example/mcp"))

    started = time.monotonic()
    with pytest.raises(McpError) as failed:
        asyncio.run(connect())
    assert failed.value.error["code"] == 504 and time.monotonic() - started < 3


def test_the_pool_keeps_at_most_its_limit_closing_the_least_recently_used(weather):
    allowed = frozenset({"127.0.0.1"})
    a, b, c = (ServerAddress(url=weather.url, headers=(("X-Client", name),), allowed_hosts=allowed)
               for name in "abc")

    async def use():
        pool = McpPool(connect_timeout=10, max_connections=2)
        try:
            first = await pool.connection(a)
            second = await pool.connection(b)
            await pool.connection(a)  # a is now the most recently used
            await pool.connection(c)
            return pool.open_count, first.alive, second.alive, len(pool._locks)
        finally:
            await pool.close_all()

    count, a_alive, b_alive, locks = asyncio.run(use())
    assert count == 2 and a_alive and not b_alive
    assert locks == 0  # no lock is kept for an address nobody is opening
