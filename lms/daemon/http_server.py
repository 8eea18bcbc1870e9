"""The public HTTP server, started and stopped at run time by `lms server start|stop`."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import socket
from dataclasses import dataclass

import uvicorn

from lms.api.app import build_public_app
from lms.errors import LmsError

log = logging.getLogger("lms.server")
# LM Studio's well-known API ports, in the order its SDKs probe them when given no host (lms.Client()).
SDK_DISCOVERY_PORTS = (41343, 52993, 16141, 39414, 22931)
HTTP_PROTOCOL = "httptools" if importlib.util.find_spec("httptools") else "h11"  # C parser: less CPU per event


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _endpoint_lines(app) -> list[str]:
    lines = []
    for route in app.routes:
        methods = sorted(getattr(route, "methods", None) or {"WS"} - {"HEAD"})
        lines += [f"->\t{method}\t{route.path}" for method in methods if method != "HEAD"]
    return lines


def _listen(bind: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((bind, port))
    except OSError as exc:
        sock.close()
        raise LmsError.conflict(f"Cannot listen on {bind}:{port}: {exc.strerror or exc}",
                                code="port_in_use") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _discovery_socket() -> socket.socket | None:
    """A loopback listener on the first free of LM Studio's well-known ports; None when all are taken (another
    server holds them: the SDKs then need the host given)."""
    for candidate in SDK_DISCOVERY_PORTS:
        try:
            return _listen("127.0.0.1", candidate)
        except LmsError:
            continue
    log.warning("LM Studio's well-known API ports are all taken: SDK clients must be given this server's address")
    return None


@dataclass
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task
    port: int
    bind: str
    cors: bool
    allow_remote_mcp: bool = False
    cors_origins: tuple[str, ...] = ()
    ollama_port: int | None = None
    sdk_port: int | None = None  # where LM Studio's SDKs find the server with no host given (loopback only)
    ui: bool = True  # the dashboard at /ui


class HTTPServerController:
    def __init__(self, state):
        self.state = state
        self.running: RunningServer | None = None

    def status(self) -> dict:
        if self.running is None:
            return {"running": False}
        try:
            token_required = self.state.authenticator.required()
        except LmsError:
            token_required = True  # an unreadable token file refuses every request
        return {"running": True, "port": self.running.port, "bind": self.running.bind, "cors": self.running.cors,
                "cors_origins": list(self.running.cors_origins), "allow_remote_mcp": self.running.allow_remote_mcp,
                "token_required": token_required, "ollama_port": self.running.ollama_port,
                "sdk_port": self.running.sdk_port, "ui": self.running.ui,
                "allowed_hosts": [h.strip() for h in self.state.settings.allowed_hosts.split(",") if h.strip()]}

    async def start(self, port: int, bind: str, cors: bool, allow_remote_mcp: bool = False,
                    cors_origins: tuple[str, ...] = (), no_auth: bool = False, ollama_port: int | None = None,
                    ui: bool = True) -> dict:
        if not is_loopback(bind) and not self.state.authenticator.required() and not no_auth:
            raise LmsError.forbidden(
                f"Refusing to serve the API on {bind} without an API token: anyone on the network could use it. "
                "Create one with `lms server token create NAME` and start again, or pass --no-auth to serve it "
                "open.", "bind", code="token_required")
        allow_remote_mcp = allow_remote_mcp or self.state.settings.allow_remote_mcp
        if self.running:
            wanted = RunningServer(self.running.server, self.running.task, port, bind, cors, allow_remote_mcp,
                                   cors_origins, ollama_port, self.running.sdk_port, ui)
            if wanted == self.running:
                return self.status()
            await self.stop()
        sock = _listen(bind, port)
        sockets = [sock]
        if ollama_port is not None:
            try:
                sockets.append(_listen(bind, ollama_port))
            except LmsError:
                sock.close()
                raise
        port = sock.getsockname()[1]
        ollama_port = sockets[1].getsockname()[1] if ollama_port is not None else None
        sdk_port = port if port in SDK_DISCOVERY_PORTS else None
        if sdk_port is None and ollama_port not in SDK_DISCOVERY_PORTS:
            sdk_socket = _discovery_socket()
            if sdk_socket is not None:
                sockets.append(sdk_socket)
                sdk_port = sdk_socket.getsockname()[1]
        from lms.daemon.control import remote_control_routes  # the control module starts this server

        app = build_public_app(self.state, bind=bind, cors=cors, cors_origins=cors_origins,
                               allow_remote_mcp=allow_remote_mcp, control_routes=remote_control_routes(), ui=ui)
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=2, ws="websockets-sansio", http=HTTP_PROTOCOL)
        server = uvicorn.Server(config)
        # _serve, not serve: the daemon owns signal handling, not this (second) server.
        task = asyncio.create_task(server._serve(sockets=sockets))
        for _ in range(100):
            if server.started or task.done():
                break
            await asyncio.sleep(0.02)
        if task.done():
            raise LmsError.internal(f"The HTTP server failed to start: {task.exception()}")
        self.running = RunningServer(server, task, port, bind, cors, allow_remote_mcp, cors_origins, ollama_port,
                                     sdk_port, ui)
        log.info("Success! HTTP server listening on %s:%d%s%s", bind, port, " (CORS enabled)" if cors else "",
                 " (remote MCP allowed)" if allow_remote_mcp else "")
        if ollama_port is not None:
            log.info("Ollama's API (and every other route) is also served on %s:%d", bind, ollama_port)
        if sdk_port is not None and sdk_port != port:
            log.info("LM Studio's SDKs find this server on 127.0.0.1:%d (no host needed)", sdk_port)
        if ui:
            log.info("Dashboard: http://%s:%d/ui", "127.0.0.1" if bind in ("0.0.0.0", "::") else bind, port)
        log.info("Supported endpoints:\n%s", "\n".join(_endpoint_lines(app)))
        if self.state.settings.jit_loading:
            log.info("Just-in-time model loading active.")
        log.info("Server started.")
        return self.status()

    async def stop(self) -> dict:
        running, self.running = self.running, None
        if running is None:
            raise LmsError.conflict("The server is not running.", code="server_not_running")
        running.server.should_exit = True
        await running.task
        log.info("Stopped the HTTP server on port %d", running.port)
        return {"running": False, "port": running.port}
