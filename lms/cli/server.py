"""lms server start|stop|status."""

from __future__ import annotations

import json
import os
import time
from typing import Annotated

import typer

from lms import config
from lms.cli.output import fail, info, print_json, warn

server_app = typer.Typer(help="Start, stop and inspect the HTTP server.", no_args_is_help=True)


def _greets(port: int, bind: str) -> bool:
    host = "127.0.0.1" if bind in ("0.0.0.0", "127.0.0.1", "localhost") else bind
    host = "[::1]" if host == "::" else f"[{host}]" if ":" in host else host
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/lmstudio-greeting", timeout=0.5) as response:
            return json.loads(response.read()).get("lmstudio") is True
    except (OSError, ValueError):
        return False


def _browsable(bind: str) -> str:
    """The host part of a URL a browser on this machine can open for a server bound to `bind`."""
    if bind in ("0.0.0.0", "::", ""):
        return "localhost"
    return f"[{bind}]" if ":" in bind else bind


@server_app.command("start")
def start(
    port: Annotated[int | None, typer.Option("-p", "--port", min=0, max=65535,
                                             help="Port to listen on (default: the last one used, else 1234).")] = None,
    bind: Annotated[str | None, typer.Option("--bind", help="Address to bind (default 127.0.0.1).")] = None,
    cors: Annotated[bool, typer.Option("--cors", help="Allow cross-origin requests from any website.")] = False,
    cors_origins: Annotated[str | None, typer.Option(
        "--cors-origins", help="Allow cross-origin requests from these origins only (comma-separated, e.g. "
                               "http://localhost:3000). Default: the cors_origins setting, else none.")] = None,
    allow_remote_mcp: Annotated[bool, typer.Option(
        "--allow-remote-mcp", help="Let /v1/responses requests call the remote MCP servers they name "
                                   "(tools of type \"mcp\"). Off by default.")] = False,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="Serve a non-loopback address without an API token (refused otherwise).")] = False,
    ollama_port: Annotated[int | None, typer.Option(
        "--ollama-port", min=0, max=65535,
        help="Also listen on this port (Ollama's is 11434), for clients that only know Ollama's address. Every "
             "route, Ollama's API included, is served on the main port too.")] = None,
    no_ui: Annotated[bool, typer.Option(
        "--no-ui", help="Do not serve the web dashboard (/ui); a browser opening / then gets Ollama's "
                        "answer.")] = False,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
):
    """Start the HTTP server (and the daemon, if it is not running), with the web dashboard at /ui."""
    from lms.client import ensure_daemon, this_machine_only
    from lms.daemon.http_server import is_loopback
    from lms.settings import Settings, SettingsError
    from lms.tokens import TokenStore

    this_machine_only("server start")
    try:
        settings = Settings.load()
    except SettingsError as exc:
        fail(str(exc))
    if port is None:
        port = config.read_json(config.server_config_path(), {}).get("port", settings.default_port)
    bind = bind or os.environ.get("LMS_SERVER_HOST") or settings.default_bind
    if not is_loopback(bind):
        warn("Server will accept connections from the network. Only use this if you know what you are doing!")
        if no_auth and not settings.api_token and not TokenStore().any():
            warn("--no-auth: anyone who can reach this address can use the API.")
    if cors:
        warn("CORS is enabled. This means any website you visit can use the LM Studio server.")
    if allow_remote_mcp:
        warn("Remote MCP is enabled: API clients can make this machine connect to any MCP server URL.")
    origins = [o.strip() for o in (cors_origins if cors_origins is not None else settings.cors_origins).split(",")
               if o.strip()]
    result = ensure_daemon().post("/lms/server/start", {"port": port, "bind": bind, "cors": cors,
                                                        "cors_origins": origins,
                                                        "allow_remote_mcp": allow_remote_mcp, "no_auth": no_auth,
                                                        "ollama_port": ollama_port, "ui": not no_ui})
    for _ in range(5):
        if _greets(result["port"], bind):
            break
        time.sleep(1)
    else:
        fail("Failed to verify the server is running. Please try to use another port.")
    if json_:
        print_json(result)
    else:
        info(f"Success! Server is now running on port {result['port']}")
        if result.get("ui"):
            info(f"Dashboard: http://{_browsable(bind)}:{result['port']}/ui")
        if result.get("ollama_port") is not None:
            info(f"Ollama's clients can use port {result['ollama_port']} as well.")


@server_app.command("stop")
def stop(json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False):
    """Stop the HTTP server. Requests in flight are ended."""
    from lms.client import connect, this_machine_only

    this_machine_only("server stop")
    client = connect()
    if client is None or not client.get("/lms/server/status")["running"]:
        fail("The server is not running.")
    result = client.post("/lms/server/stop")
    if json_:
        print_json({"running": False, "stopped": True, "port": result["port"]})
    else:
        info(f"Stopped the server on port {result['port']}.")


@server_app.command("status")
def status(json_: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False):
    """Say whether the HTTP server is running, and on which port."""
    from lms.cli.fast import server_status_json
    from lms.client import connect

    if json_:
        return server_status_json()
    client = connect()
    state = client.get("/lms/server/status") if client else {"running": False}
    if state["running"]:
        info(f"The server is running on port {state['port']}.")
    else:
        info("The server is not running.")


def register(app: typer.Typer) -> None:
    from lms.cli.token import token_app

    server_app.add_typer(token_app, name="token")
    app.add_typer(server_app, name="server")
