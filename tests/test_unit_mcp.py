"""The `mcp` tool of /v1/responses as data: validation, allowed_tools and approval filters, and how MCP items
reach the model."""

from __future__ import annotations

import pytest

from lms.api.errors import status_of
from lms.conversation.items import normalize_input, to_messages
from lms.conversation.mcp import McpToolset, parse_server
from lms.errors import LmsError
from lms.generation.chat_template import render
from lms.mcp.client import McpTool

URL = "http://127.0.0.1:9/mcp"
READ = McpTool("get_weather", "Weather", {"type": "object", "title": "get_weatherArguments"}, {"readOnlyHint": True})
WRITE = McpTool("delete_city", "Delete", {"type": "object"}, None)


def server(**options):
    return parse_server({"type": "mcp", "server_label": "w", "server_url": URL, **options}, "tools[0]")


def test_approval_defaults_to_always_and_follows_filters():
    assert server().needs_approval(READ) and server(require_approval="always").needs_approval(WRITE)
    assert not server(require_approval="never").needs_approval(WRITE)
    by_name = server(require_approval={"never": {"tool_names": ["get_weather"]}})
    assert not by_name.needs_approval(READ) and by_name.needs_approval(WRITE)
    read_only = server(require_approval={"never": {"read_only": True}})
    assert not read_only.needs_approval(READ) and read_only.needs_approval(WRITE)


def test_allowed_tools_as_list_or_filter():
    assert server().allows(READ) and server().allows(WRITE)
    named = server(allowed_tools=["get_weather"])
    assert named.allows(READ) and not named.allows(WRITE)
    read_only = server(allowed_tools={"read_only": True})
    assert read_only.allows(READ) and not read_only.allows(WRITE)


def test_headers_are_used_but_never_echoed():
    parsed = server(headers={"Authorization": "Bearer secret"})
    assert parsed.address.headers == (("Authorization", "Bearer secret"),)
    assert parsed.echo["headers"] is None and "secret" not in str(parsed.echo)


@pytest.mark.parametrize(("options", "param"), [
    ({"server_url": "file:///etc/passwd"}, "tools[0].server_url"),
    ({"allowed_tools": "get_weather"}, "tools[0].allowed_tools"),
    ({"require_approval": {"never": {"read_only": "yes"}}}, "tools[0].require_approval.never.read_only"),
    ({"headers": {"X-Key": 5}}, "tools[0].headers"),
])
def test_invalid_mcp_tools(options, param):
    with pytest.raises(LmsError) as bad:
        server(**options)
    assert status_of(bad.value) == 400 and bad.value.param == param


def test_model_sees_mcp_tools_without_schema_titles_and_mcp_choice_maps_to_functions():
    owner = server()
    toolset = McpToolset([owner], {"get_weather": (owner, READ), "delete_city": (owner, WRITE)})
    assert "title" not in toolset.function_tools()[0]["parameters"]
    assert toolset.choice({"server_label": "w", "name": "get_weather"}) == {"type": "function", "name": "get_weather"}
    assert toolset.choice({"server_label": "w"})["mode"] == "required"
    with pytest.raises(LmsError):
        toolset.choice({"server_label": "other"})


def test_mcp_items_become_calls_and_results_for_the_model():
    items = normalize_input([
        {"type": "message", "role": "user", "content": "Weather in Oslo?"},
        {"type": "mcp_list_tools", "server_label": "w", "tools": []},
        {"type": "mcp_call", "id": "mcp_1", "server_label": "w", "name": "get_weather",
         "arguments": '{"city": "Oslo"}', "output": "4 degrees"},
        {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "w", "name": "delete_city",
         "arguments": '{"city": "Oslo"}'},
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": False, "reason": "no"},
    ])
    messages = to_messages(items, None)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "get_weather" and messages[2]["content"] == "4 degrees"
    assert "declined" in messages[4]["content"] and "Reason: no" in messages[4]["content"]
    # templates receive the arguments as an object, as Hugging Face renders them
    template = "{% for m in messages %}{% for c in m.tool_calls or [] %}{{ c.function.arguments | tojson }}" \
               "{% endfor %}{% endfor %}"
    assert render(template, messages) == '{"city": "Oslo"}{"city": "Oslo"}'


def test_malformed_mcp_input_items():
    with pytest.raises(LmsError) as bad:
        normalize_input([{"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": "yes"}])
    assert bad.value.param == "input[0].approve"
