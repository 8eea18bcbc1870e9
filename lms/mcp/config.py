"""Local MCP servers from LMS_HOME/mcp.json, in LM Studio's (and Cursor's) format:

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"],
                  "env": {"DEBUG": "1"}},
        "weather": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}}}}
"""

from __future__ import annotations

import json
from pathlib import Path

from lms import config
from lms.mcp.client import ServerAddress


class McpConfigError(ValueError):
    pass


def mcp_json_path() -> Path:
    return config.home() / "mcp.json"


def _strings(value, what: str, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise McpConfigError(f"mcp.json: '{what}' of server '{name}' must map names to strings")
    return value


def _address(name: str, entry) -> ServerAddress:
    if not isinstance(entry, dict):
        raise McpConfigError(f"mcp.json: server '{name}' must be an object")
    url, command = entry.get("url") or entry.get("serverUrl"), entry.get("command")
    if url and isinstance(url, str):
        return ServerAddress(url=url, headers=tuple(sorted(_strings(entry.get("headers"), "headers", name).items())))
    if command and isinstance(command, str):
        args = entry.get("args") or []
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise McpConfigError(f"mcp.json: 'args' of server '{name}' must be a list of strings")
        env = _strings(entry.get("env"), "env", name)
        return ServerAddress(command=command, args=tuple(args), env=tuple(sorted(env.items())))
    raise McpConfigError(f"mcp.json: server '{name}' needs a 'command' (stdio) or a 'url' (HTTP)")


def local_servers(path: Path | None = None) -> dict[str, ServerAddress]:
    """The servers of mcp.json by name; none when the file does not exist."""
    path = path or mcp_json_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    config.restrict_to_owner(path)  # its headers and env often hold API keys
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise McpConfigError(f"{path} is not valid JSON: {exc}") from None
    servers = document.get("mcpServers") if isinstance(document, dict) else None
    if not isinstance(servers, dict):
        raise McpConfigError(f"{path} needs an object 'mcpServers'")
    return {name: _address(name, entry) for name, entry in servers.items()}
