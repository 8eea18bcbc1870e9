"""The daemon's MCP client: connections to MCP servers, built on the official `mcp` SDK.

One long-lived connection per server (address and headers), held open by its own task because the SDK's
transports are context managers bound to the task that enters them. Requests from any task use the session
and race against the connection's end, so a server that dies fails its calls at once and one that hangs fails
them at the timeout: nothing waits forever. The tool list is read when a connection opens; every later use
pings first, so a server that restarted gets a new connection and its tool list is read again.

An HTTP server's host must pass the outbound policy (lms.outbound: public addresses only, unless the host is in
`allowed_fetch_hosts`), checked within the connect deadline; the connection then goes to the checked address
(lms/mcp/pinned.py). Resolving the name, connecting, initializing and listing tools share one deadline. The pool
keeps at most `max_connections` open, closing the least recently used first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lms.errors import LmsError
from lms.outbound import AddressPins, default_port

log = logging.getLogger("lms.mcp")


@dataclass(frozen=True)
class ServerAddress:
    """Where an MCP server is: a URL (streamable HTTP, or SSE when the path ends in /sse) or a command (stdio)."""

    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    # Hosts this server may be at although their addresses are not public (the allowed_fetch_hosts setting)
    allowed_hosts: frozenset[str] = frozenset()

    @property
    def transport(self) -> str:
        if self.command:
            return "stdio"
        return "sse" if self.url.rstrip("/").endswith("/sse") else "streamable-http"

    def describe(self) -> str:
        return self.url or " ".join((self.command, *self.args))


@dataclass
class McpTool:
    name: str
    description: str | None
    input_schema: dict
    annotations: dict | None = None

    @property
    def read_only(self) -> bool:
        return bool((self.annotations or {}).get("readOnlyHint"))

    def listing(self) -> dict:
        """The tool as an `mcp_list_tools` item lists it."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema,
                "annotations": self.annotations}


class McpError(Exception):
    """A failed MCP operation. `error` has the shape of OpenAI's McpToolCallError (http_error,
    mcp_protocol_error or mcp_tool_execution_error)."""

    def __init__(self, message: str, error: dict):
        super().__init__(message)
        self.message, self.error = message, error


def _http_error(code: int, message: str) -> McpError:
    return McpError(message, {"type": "http_error", "code": code, "message": message})


def _root_cause(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _as_mcp_error(exc: BaseException, address: ServerAddress) -> McpError:
    from mcp.shared.exceptions import MCPError

    exc = _root_cause(exc)
    where = address.describe()
    if isinstance(exc, McpError):
        return exc
    if isinstance(exc, MCPError):
        message = f"The MCP server at {where} failed the request: {exc.message}"
        return McpError(message, {"type": "mcp_protocol_error", "code": exc.code, "message": message})
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status:
        return _http_error(status, f"The MCP server at {where} answered HTTP {status}.")
    detail = str(exc) or type(exc).__name__
    return _http_error(502, f"Cannot reach the MCP server at {where}: {detail}")


@dataclass
class CallResult:
    text: str
    content: list[dict] = field(default_factory=list)


def _result_text(result) -> CallResult:
    parts = [part.model_dump(mode="json", exclude_none=True) for part in result.content]
    texts = [part["text"] for part in parts if part.get("type") == "text"]
    if texts:
        text = "\n".join(texts)
    elif result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False)
    else:
        text = json.dumps(parts, ensure_ascii=False)
    return CallResult(text, parts)


class McpConnection:
    def __init__(self, address: ServerAddress, connect_timeout: float):
        self.address = address
        self.connect_timeout = connect_timeout
        self.tools: list[McpTool] = []
        self.server_name: str | None = None
        self.pins = AddressPins(address.allowed_hosts, what="an MCP server") if address.url else None
        self.in_use = 0  # requests running on it: the pool closes idle connections first
        self._session = None
        self._ended = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def alive(self) -> bool:
        return self._session is not None and not self._ended.is_set()

    async def open(self) -> None:
        """Check the server's address, connect, initialize and list its tools, all within `connect_timeout`.
        An address the policy refuses raises the policy's LmsError (it names allowed_fetch_hosts)."""
        try:
            async with asyncio.timeout(self.connect_timeout):
                if self.pins is not None:
                    parts = urlsplit(self.address.url)
                    await self.pins.address(parts.hostname, parts.port or default_port(parts.scheme))
                ready: asyncio.Future = asyncio.get_running_loop().create_future()
                self._task = asyncio.create_task(self._hold(ready), name=f"mcp {self.address.describe()}")
                await asyncio.shield(ready)
        except LmsError:
            raise
        except TimeoutError:
            await self.close(grace_seconds=0)  # it never got ready: nothing to end politely
            raise _http_error(504, f"The MCP server at {self.address.describe()} did not answer within "
                                   f"{self.connect_timeout:g} s.") from None
        except asyncio.CancelledError:
            await self.close(grace_seconds=0)
            raise
        except BaseException as exc:
            await self.close(grace_seconds=0)
            raise _as_mcp_error(exc, self.address) from None

    async def _hold(self, ready: asyncio.Future) -> None:
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(read, write))
                initialized = await session.initialize()
                self.server_name = initialized.server_info.name
                self.tools = await _list_tools(session)
                self._session = session
                ready.set_result(None)
                await self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - the connection's end is reported to its waiters
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.info("MCP connection to %s ended: %s", self.address.describe(), _root_cause(exc))
        finally:
            self._session = None
            self._ended.set()

    def _transport(self, stack: contextlib.AsyncExitStack):
        address = self.address
        if address.transport == "stdio":
            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(command=address.command, args=list(address.args),
                                           env=dict(address.env) or None)
            return stdio_client(params)
        from lms.mcp.pinned import pinned_client

        if address.transport == "sse":
            from mcp.client.sse import sse_client

            return sse_client(address.url, headers=dict(address.headers), timeout=self.connect_timeout,
                              httpx_client_factory=lambda **options: pinned_client(self.pins, **options))
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = pinned_client(self.pins, headers=dict(address.headers),
                             timeout=httpx2.Timeout(self.connect_timeout, read=None))
        stack.push_async_callback(http.aclose)
        return streamable_http_client(address.url, http_client=http)

    async def request(self, operation: Callable[[Any], Awaitable], timeout: float, what: str):
        """Run `operation(session)`; fail when the connection ends or the timeout passes first."""
        if not self.alive:
            raise _http_error(502, f"The connection to the MCP server at {self.address.describe()} is closed.")
        work = asyncio.ensure_future(operation(self._session))
        ended = asyncio.ensure_future(self._ended.wait())
        self.in_use += 1
        try:
            done, _ = await asyncio.wait({work, ended}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.in_use -= 1
            ended.cancel()
        if work in done:
            try:
                return work.result()
            except Exception as exc:
                raise _as_mcp_error(exc, self.address) from None
        work.cancel()
        if not done:
            raise _http_error(504, f"The MCP server at {self.address.describe()} did not finish {what} within "
                                   f"{timeout:g} s.")
        raise _http_error(502, f"The MCP server at {self.address.describe()} closed the connection during {what}.")

    async def close(self, grace_seconds: float = 3) -> None:
        """End the session, giving the server `grace_seconds` to see it end before the task is cancelled."""
        self._closing.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace_seconds)
            except (TimeoutError, Exception):
                self._task.cancel()


async def _list_tools(session) -> list[McpTool]:
    tools, cursor = [], None
    while True:
        if cursor:
            from mcp_types import PaginatedRequestParams

            page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
        else:
            page = await session.list_tools()
        for tool in page.tools:
            annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
            tools.append(McpTool(tool.name, tool.description, dict(tool.input_schema), annotations))
        cursor = page.next_cursor
        if not cursor:
            return tools


class McpPool:
    """The daemon's MCP connections, one per server address, opened on first use and reopened when needed; at
    most `max_connections` stay open (each holds a socket or a process), the least recently used closed first."""

    def __init__(self, connect_timeout: float = 10.0, call_timeout: float = 60.0, max_connections: int = 32):
        self.connect_timeout, self.call_timeout = connect_timeout, call_timeout
        self.max_connections = max_connections
        self._connections: OrderedDict[ServerAddress, McpConnection] = OrderedDict()  # least recently used first
        self._locks: dict[ServerAddress, tuple[asyncio.Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def _locked(self, address: ServerAddress) -> AsyncIterator[None]:
        """One opening per address at a time; a lock lives only while someone holds or waits for it, so
        addresses that were named once do not pile up."""
        lock, waiting = self._locks.setdefault(address, (asyncio.Lock(), [0]))
        waiting[0] += 1
        try:
            async with lock:
                yield
        finally:
            waiting[0] -= 1
            if not waiting[0]:
                self._locks.pop(address, None)

    async def connection(self, address: ServerAddress) -> McpConnection:
        async with self._locked(address):
            connection = self._connections.get(address)
            if connection is not None and connection.alive:
                try:  # a server that restarted no longer knows our session: reconnect and read its tools again
                    await connection.request(lambda session: session.send_ping(), self.connect_timeout, "a ping")
                    self._connections.move_to_end(address)
                    return connection
                except McpError:
                    pass
            if connection is not None:
                self._connections.pop(address, None)
                await connection.close()
            await self._shrink_to(self.max_connections - 1)
            connection = McpConnection(address, self.connect_timeout)
            await connection.open()
            self._connections[address] = connection
            await self._shrink_to(self.max_connections, keep=address)  # others may have opened meanwhile
            return connection

    async def _shrink_to(self, limit: int, keep: ServerAddress | None = None) -> None:
        """Close connections, idle ones first and the least recently used among them, until at most `limit`
        are open."""
        while len(self._connections) > max(limit, 0):
            candidates = [a for a in self._connections if a != keep]
            if not candidates:
                return
            idle = [a for a in candidates if not self._connections[a].in_use]
            oldest = (idle or candidates)[0]
            log.info("closing the MCP connection to %s: more than %d are open", oldest.describe(),
                     self.max_connections)
            await self._connections.pop(oldest).close()

    @property
    def open_count(self) -> int:
        return len(self._connections)

    async def tools(self, address: ServerAddress) -> list[McpTool]:
        return (await self.connection(address)).tools

    async def call(self, address: ServerAddress, name: str, arguments: dict) -> CallResult:
        """Call a tool; a tool that reports an error raises McpError with an mcp_tool_execution_error."""
        connection = await self.connection(address)
        result = await connection.request(lambda session: session.call_tool(name, arguments), self.call_timeout,
                                          f"the call of '{name}'")
        outcome = _result_text(result)
        if result.is_error:
            raise McpError(outcome.text or f"The MCP tool '{name}' failed.",
                           {"type": "mcp_tool_execution_error", "content": outcome.content})
        return outcome

    async def close_all(self) -> None:
        connections, self._connections = list(self._connections.values()), OrderedDict()
        await asyncio.gather(*(connection.close() for connection in connections), return_exceptions=True)
