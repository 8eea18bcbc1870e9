"""Remote MCP tools on /v1/responses: the `mcp` tool type, its approval policy, its tool lists and its items.

A request's `{"type": "mcp", "server_label", "server_url", ...}` tool names a server; the daemon connects to it
(lms/mcp/client.py), lists its tools (an `mcp_list_tools` item), offers the allowed ones to the model as
functions, and runs the model's calls of them (`mcp_call` items), or first asks the client
(`mcp_approval_request`, answered by an `mcp_approval_response` input item in the next request).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.mcp.client import McpError, McpPool, McpTool, ServerAddress

REMOTE_MCP_OFF = ("Remote MCP servers are turned off on this server. Start it with `lms server start "
                  "--allow-remote-mcp`, or set \"allow_remote_mcp\": true in LMS_HOME/settings.json (or "
                  "LMS_ALLOW_REMOTE_MCP=1) and restart the daemon, to let requests call the MCP servers they name.")
MCP_JSON_OFF = ("The servers of mcp.json are not available to this request: over HTTP they need \"allow_mcp_json\": "
                "true in LMS_HOME/settings.json (LMS_ALLOW_MCP_JSON=1, then restart the daemon) and a token with "
                "the 'admin' scope (`lms server token create NAME --scope admin`); `lms chat --mcp NAME` can "
                "always use them.")
_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")



def _tool_filter(value, param: str) -> tuple[set[str] | None, bool | None]:
    """An allowed_tools or approval filter: a list of names, or {"tool_names": [...], "read_only": bool}."""
    if value is None:
        return None, None
    if isinstance(value, list):
        value = {"tool_names": value}
    if not isinstance(value, dict):
        raise LmsError.invalid(f"'{param}' must be a list of tool names or a filter object", param)
    names, read_only = value.get("tool_names"), value.get("read_only")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise LmsError.invalid(f"'{param}.tool_names' must be a list of strings", f"{param}.tool_names")
    if read_only is not None and not isinstance(read_only, bool):
        raise LmsError.invalid(f"'{param}.read_only' must be a boolean", f"{param}.read_only")
    return (set(names) if names is not None else None), read_only


def _matches(tool: McpTool, names: set[str] | None, read_only: bool | None) -> bool:
    if names is None and read_only is None:
        return False
    return (names is None or tool.name in names) and (read_only is None or tool.read_only == read_only)


@dataclass
class RemoteServer:
    label: str
    address: ServerAddress
    echo: dict  # the tool as the response resource shows it: no headers, they may hold credentials
    allowed: tuple[set[str] | None, bool | None] = (None, None)
    always: tuple[set[str] | None, bool | None] = (None, None)
    never: tuple[set[str] | None, bool | None] = (None, None)
    approval: str = "always"  # "always", "never" or "filter"
    local: bool = False  # a server of mcp.json, named by its label alone

    def allows(self, tool: McpTool) -> bool:
        names, read_only = self.allowed
        return (names is None and read_only is None) or _matches(tool, names, read_only)

    def needs_approval(self, tool: McpTool) -> bool:
        """OpenAI's rule: approval is asked for unless the policy says never (for this tool)."""
        if self.approval != "filter":
            return self.approval == "always"
        if _matches(tool, *self.never):
            return False
        return True


def parse_server(tool: dict, param: str) -> RemoteServer:
    label = tool.get("server_label")
    if not isinstance(label, str) or not _LABEL.match(label):
        raise LmsError.invalid(f"'{param}.server_label' must be 1 to 64 letters, digits, '-' or '_'",
                               f"{param}.server_label")
    url = tool.get("server_url")
    if tool.get("connector_id") and not url:
        raise LmsError.invalid("Connectors are not available on a local server; give a server_url.",
                               f"{param}.connector_id", code="unsupported_parameter")
    if url is None:
        return _local_server(tool, label, param)
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise LmsError.invalid(f"'{param}.server_url' must be an http(s) URL", f"{param}.server_url")
    headers = dict(tool.get("headers") or {})
    if tool.get("authorization"):
        headers.setdefault("Authorization", f"Bearer {tool['authorization']}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise LmsError.invalid(f"'{param}.headers' must map header names to strings", f"{param}.headers")
    server = RemoteServer(label, ServerAddress(url=url, headers=tuple(sorted(headers.items()))), echo={
        "type": "mcp", "server_label": label, "server_url": url, "server_description": tool.get("server_description"),
        "allowed_tools": tool.get("allowed_tools"), "require_approval": tool.get("require_approval"),
        "headers": None})
    return _with_policies(server, tool, param)


def _local_server(tool: dict, label: str, param: str) -> RemoteServer:
    """An mcp tool with no server_url names a server of LMS_HOME/mcp.json."""
    from lms.mcp.config import McpConfigError, local_servers

    try:
        servers = local_servers()
    except McpConfigError as exc:
        raise LmsError.invalid(str(exc), param, code="invalid_mcp_json") from None
    if label not in servers:
        known = ", ".join(sorted(servers)) or "none"
        raise LmsError.invalid(f"'{param}' has no server_url and mcp.json has no server '{label}' (it has: {known})",
                   f"{param}.server_url")
    server = RemoteServer(label, servers[label], local=True, echo={
        "type": "mcp", "server_label": label, "server_url": None, "allowed_tools": tool.get("allowed_tools"),
        "require_approval": tool.get("require_approval"), "headers": None})
    return _with_policies(server, tool, param)


def _with_policies(server: RemoteServer, tool: dict, param: str) -> RemoteServer:
    server.allowed = _tool_filter(tool.get("allowed_tools"), f"{param}.allowed_tools")
    policy = tool.get("require_approval")
    if policy is None or policy in ("always", "never"):
        server.approval = policy or "always"
    elif isinstance(policy, dict):
        server.approval = "filter"
        server.always = _tool_filter(policy.get("always"), f"{param}.require_approval.always")
        server.never = _tool_filter(policy.get("never"), f"{param}.require_approval.never")
    else:
        raise LmsError.invalid(f"'{param}.require_approval' must be 'always', 'never' or a filter object",
                   f"{param}.require_approval")
    return server


@dataclass
class McpToolset:
    """The MCP tools one response may use: the model sees them as functions, by their own names."""

    servers: list[RemoteServer] = field(default_factory=list)
    tools: dict[str, tuple[RemoteServer, McpTool]] = field(default_factory=dict)
    listings: list[dict] = field(default_factory=list)  # mcp_list_tools items this response adds

    def function_tools(self) -> list[dict]:
        # Schemas made from Python signatures carry a title like "get_weatherArguments" that small models
        # mistake for the function's name; the title is only an annotation, so the model does not see it.
        return [{"type": "function", "name": tool.name, "description": tool.description,
                 "parameters": {k: v for k, v in tool.input_schema.items() if k != "title"}, "strict": None}
                for _, tool in self.tools.values()]

    def server(self, label: str) -> RemoteServer | None:
        return next((s for s in self.servers if s.label == label), None)

    def choice(self, choice: dict):
        """tool_choice {"type": "mcp", "server_label", "name"?} as a function choice or allowed_tools."""
        server = self.server(choice.get("server_label"))
        if server is None:
            raise LmsError.invalid(f"tool_choice names an unknown MCP server {choice.get('server_label')!r}",
                       "tool_choice.server_label")
        names = [name for name, (owner, _) in self.tools.items() if owner is server]
        if choice.get("name"):
            if choice["name"] not in names:
                raise LmsError.invalid(f"MCP server '{server.label}' offers no allowed tool {choice['name']!r}",
                                       "tool_choice.name")
            return {"type": "function", "name": choice["name"]}
        return {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": n} for n in names]}


async def open_toolset(servers: list[RemoteServer], params: list[str], pool: McpPool, taken: set[str],
                       context: list[dict], fetch_hosts: set[str] = frozenset()) -> McpToolset:
    """Connect to each server and read its tools. A server that cannot be listed fails the request (424); an HTTP
    server (named by the request or in mcp.json) at an address that is not public is refused (lms.outbound) unless
    its host is allowed; the connection then goes to the address that was checked (lms/mcp/pinned.py)."""
    toolset = McpToolset(servers)
    for server, param in zip(servers, params):
        if server.address.url:  # the policy travels with the address, so a reconnection for a call applies it too
            server.address = dataclasses.replace(server.address, allowed_hosts=frozenset(fetch_hosts))
        try:
            tools = await pool.tools(server.address)
        except LmsError as exc:  # the outbound policy's refusal, which names allowed_fetch_hosts
            exc.param = param if server.local else f"{param}.server_url"
            raise
        except McpError as exc:
            raise LmsError.dependency(f"Error retrieving tool list from MCP server '{server.label}': {exc.message}",
                                      param, code="mcp_connection_error") from None
        allowed = [tool for tool in tools if server.allows(tool)]
        for tool in allowed:
            owner = toolset.tools.get(tool.name)
            if tool.name in taken or owner:
                other = f"MCP server '{owner[0].label}'" if owner else "a function tool"
                raise LmsError.invalid(f"Tool name '{tool.name}' of MCP server '{server.label}' is also offered by "
                                       f"{other}; narrow allowed_tools to tell them apart.", f"{param}.allowed_tools")
            toolset.tools[tool.name] = (server, tool)
        listing = [tool.listing() for tool in allowed]
        if not any(item.get("type") == "mcp_list_tools" and item.get("server_label") == server.label
                   and item.get("tools") == listing for item in context):
            toolset.listings.append({"id": new_id("mcpl_"), "type": "mcp_list_tools", "server_label": server.label,
                                     "tools": listing, "error": None})
    return toolset


def mcp_call_item(item_id: str, label: str, name: str, arguments: str, status: str, *, output: str | None = None,
                  error: dict | None = None, approval_request_id: str | None = None) -> dict:
    return {"id": item_id, "type": "mcp_call", "status": status, "server_label": label, "name": name,
            "arguments": arguments, "output": output, "error": error, "approval_request_id": approval_request_id}


def approval_request_item(label: str, name: str, arguments: str) -> dict:
    return {"id": new_id("mcpr_"), "type": "mcp_approval_request", "server_label": label, "name": name,
            "arguments": arguments}


def answered_approvals(input_items: list[dict], known: dict[str, dict]) -> list[tuple[dict, dict]]:
    """(approval request, approval response) for each mcp_approval_response in this request's input."""
    pairs = []
    for index, item in enumerate(input_items):
        if item["type"] != "mcp_approval_response":
            continue
        request = known.get(item["approval_request_id"])
        if request is None or request.get("type") != "mcp_approval_request":
            raise LmsError.invalid(f"No mcp_approval_request with id '{item['approval_request_id']}' was found for the "
                       f"mcp_approval_response at input position {index}.", f"input[{index}].approval_request_id")
        pairs.append((request, item))
    return pairs
