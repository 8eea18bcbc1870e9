"""Remote MCP tools on /v1/responses, end to end: a real MCP server (tests/mcp_server.py, made with the `mcp`
package) on 127.0.0.1, the daemon as its client, the Qwen2.5-Coder fixture choosing and using its tools, and the
official `openai` client parsing every item and event."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from openai.types.responses import (
    ResponseMcpCallArgumentsDeltaEvent,
    ResponseMcpCallCompletedEvent,
    ResponseMcpCallInProgressEvent,
    ResponseMcpListToolsCompletedEvent,
    ResponseMcpListToolsInProgressEvent,
)

from tests.conftest import CHAT_MODEL, TOOL_MODEL, Lms, free_port

SERVER_SCRIPT = Path(__file__).with_name("mcp_server.py")


class McpServer:
    """tests/mcp_server.py in its own process; `url` is where the daemon reaches it."""

    def __init__(self, transport: str = "streamable-http", port: int | None = None, *extra: str):
        self.transport, self.port, self.extra = transport, port or free_port(), extra
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    def start(self, *extra: str) -> McpServer:
        self.process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), str(self.port), self.transport,
                                         *(extra or self.extra)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the test MCP server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def mcp_lms(tmp_path_factory, tool_model_gguf):
    instance = Lms(home=tmp_path_factory.mktemp("mcp") / "home", port=free_port(),
                   settings={"LMS_MCP_CALL_TIMEOUT_SECONDS": "3", "LMS_MCP_CONNECT_TIMEOUT_SECONDS": "5",
                             "LMS_ALLOWED_FETCH_HOSTS": "127.0.0.1"})  # the test MCP servers are local
    instance.link_model(tool_model_gguf, "Qwen", "Qwen2.5-Coder-0.5B-Instruct-GGUF")
    status = instance.json("server", "start", "-p", str(instance.port), "--allow-remote-mcp")
    assert status["allow_remote_mcp"] is True
    instance.run("load", TOOL_MODEL, "-y")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def mcp_client(mcp_lms):
    return openai.OpenAI(base_url=mcp_lms.base_url + "/v1", api_key="lm-studio", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def weather():
    server = McpServer().start()
    yield server
    server.stop()


def mcp_tool(url: str, **options) -> dict:
    return {"type": "mcp", "server_label": "weather", "server_url": url, **options}


def ask(client, url: str, question: str = "What's the weather in Paris?", *, tool: dict | None = None, **options):
    return client.responses.create(model=TOOL_MODEL, input=question, tools=[tool or mcp_tool(url)], temperature=0,
                                   max_output_tokens=60, **options)


def items(response, kind: str) -> list:
    return [item for item in response.output if item.type == kind]


def test_remote_mcp_is_refused_until_enabled(client, weather):
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ask(client, weather.url)
    assert refused.value.status_code == 403
    assert "--allow-remote-mcp" in refused.value.message and "allow_remote_mcp" in refused.value.message


def test_discovers_calls_and_answers_with_the_result(mcp_client, weather):
    response = ask(mcp_client, weather.url, tool=mcp_tool(weather.url, require_approval="never",
                                                           allowed_tools=["get_weather"]))
    assert response.status == "completed"
    listing = response.output[0]
    assert listing.type == "mcp_list_tools" and listing.server_label == "weather"
    assert [tool.name for tool in listing.tools] == ["get_weather"]
    assert listing.tools[0].input_schema["required"] == ["location"]
    call = items(response, "mcp_call")[0]
    assert call.name == "get_weather" and "Paris" in call.arguments and call.status == "completed"
    assert call.output == "The weather in Paris: 21 degrees Celsius and sunny." and call.error is None
    final = response.output[-1]
    assert final.type == "message" and "21" in response.output_text
    assert response.tools[0].type == "mcp" and response.tools[0].headers is None
    # Both generations are counted, and the second reused the first one's prompt.
    assert response.usage.input_tokens_details.cached_tokens > 0


def test_streams_mcp_events_in_order(mcp_client, weather):
    tool = mcp_tool(weather.url, require_approval="never", allowed_tools=["get_weather"])
    events = list(mcp_client.responses.create(model=TOOL_MODEL, input="What's the weather in Paris?", tools=[tool],
                                              temperature=0, max_output_tokens=60, tool_choice={
                                                  "type": "mcp", "server_label": "weather", "name": "get_weather"},
                                              max_tool_calls=1, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    listing = kinds.index("response.mcp_list_tools.in_progress")
    assert kinds[listing - 1:listing + 3] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                                              "response.mcp_list_tools.completed", "response.output_item.done"]
    call = kinds.index("response.mcp_call.in_progress")
    assert kinds[call - 1:call + 5] == ["response.output_item.added", "response.mcp_call.in_progress",
                                        "response.mcp_call_arguments.delta", "response.mcp_call_arguments.done",
                                        "response.mcp_call.completed", "response.output_item.done"]
    typed = {type(event) for event in events}
    assert {ResponseMcpListToolsInProgressEvent, ResponseMcpListToolsCompletedEvent, ResponseMcpCallInProgressEvent,
            ResponseMcpCallArgumentsDeltaEvent, ResponseMcpCallCompletedEvent} <= typed
    delta = next(event for event in events if event.type == "response.mcp_call_arguments.delta")
    done = next(e for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_call")
    assert delta.delta == done.item.arguments and "21 degrees" in done.item.output
    final = events[-1].response
    assert [item.type for item in final.output][:2] == ["mcp_list_tools", "mcp_call"]
    assert final.output[-1].type == "message"


def test_approval_is_asked_then_the_approved_call_runs(mcp_client, weather):
    tool = mcp_tool(weather.url, allowed_tools=["get_weather"])  # require_approval defaults to always
    first = ask(mcp_client, weather.url, tool=tool)
    assert not items(first, "mcp_call")
    [request] = items(first, "mcp_approval_request")[:1]
    assert request.name == "get_weather" and request.server_label == "weather" and "Paris" in request.arguments

    approved = mcp_client.responses.create(
        model=TOOL_MODEL, previous_response_id=first.id, tools=[tool], temperature=0, max_output_tokens=60,
        max_tool_calls=1, input=[{"type": "mcp_approval_response", "approve": True,
                                  "approval_request_id": request.id}])
    call = approved.output[0]
    assert call.type == "mcp_call" and call.approval_request_id == request.id
    assert call.output == "The weather in Paris: 21 degrees Celsius and sunny."
    assert not items(approved, "mcp_list_tools")  # the conversation already holds the same list
    assert approved.output[-1].type == "message" and "21" in approved.output_text

    declined = mcp_client.responses.create(
        model=TOOL_MODEL, previous_response_id=first.id, tools=[tool], temperature=0, max_output_tokens=40,
        input=[{"type": "mcp_approval_response", "approve": False, "approval_request_id": request.id}])
    assert declined.status == "completed" and not items(declined, "mcp_call")


def test_allowed_tools_and_approval_filters(mcp_client, weather):
    tool = mcp_tool(weather.url, allowed_tools={"tool_names": ["get_time"]},
                    require_approval={"never": {"read_only": True}})
    response = ask(mcp_client, weather.url, "What time is it in Oslo?", tool=tool,
                   tool_choice={"type": "mcp", "server_label": "weather"}, max_tool_calls=1)
    assert [t.name for t in items(response, "mcp_list_tools")[0].tools] == ["get_time"]
    [call] = items(response, "mcp_call")
    assert call.name == "get_time" and call.output.startswith("It is 10:42 in")  # read-only: no approval asked

    crash = mcp_tool(weather.url, allowed_tools=["crash"], require_approval={"never": {"read_only": True}})
    asked = ask(mcp_client, weather.url, "Restart the weather station.", tool=crash,
                tool_choice={"type": "mcp", "server_label": "weather", "name": "crash"}, max_tool_calls=1)
    assert [item.name for item in items(asked, "mcp_approval_request")] == ["crash"] and not items(asked, "mcp_call")


def test_a_server_that_dies_mid_call_fails_the_call_not_the_daemon(mcp_client):
    server = McpServer().start()
    try:
        tool = mcp_tool(server.url, require_approval="never")
        response = ask(mcp_client, server.url, "Restart the weather station.", tool=tool,
                       tool_choice={"type": "mcp", "server_label": "weather", "name": "crash"}, max_tool_calls=1)
        [call] = items(response, "mcp_call")
        assert call.status == "failed" and call.output is None
        assert call.error.type in ("mcp_protocol_error", "http_error") and server.url in call.error.message
        assert response.status == "completed" and response.output[-1].type == "message"
        assert server.process.wait(timeout=10) == 17

        with pytest.raises(openai.APIStatusError) as unreachable:
            ask(mcp_client, server.url, tool=tool)
        assert unreachable.value.status_code == 424 and unreachable.value.code == "mcp_connection_error"
        assert "weather" in unreachable.value.message

        server.start("--extra-tool")  # the restarted server has one more tool, and the daemon sees it
        listing = items(ask(mcp_client, server.url, tool=tool, tool_choice="none"), "mcp_list_tools")[0]
        assert "get_tide" in [t.name for t in listing.tools]
    finally:
        server.stop()


def test_a_hanging_tool_fails_at_the_call_timeout(mcp_client, weather):
    started = time.monotonic()
    response = ask(mcp_client, weather.url, "Get the long-range forecast.",
                   tool=mcp_tool(weather.url, require_approval="never", allowed_tools=["stall"]),
                   tool_choice={"type": "mcp", "server_label": "weather", "name": "stall"}, max_tool_calls=1)
    [call] = items(response, "mcp_call")
    assert call.status == "failed" and call.error.type == "http_error" and call.error.code == 504
    assert "3 s" in call.error.message
    assert time.monotonic() - started < 60
    # the server still answers other calls meanwhile
    assert items(ask(mcp_client, weather.url, "What time is it in Oslo?",
                     tool=mcp_tool(weather.url, require_approval="never", allowed_tools=["get_time"]),
                     tool_choice={"type": "mcp", "server_label": "weather"}, max_tool_calls=1), "mcp_call")[0].output


def test_sse_transport(mcp_client):
    server = McpServer("sse").start()
    try:
        response = ask(mcp_client, server.url, "What time is it in Oslo?",
                       tool=mcp_tool(server.url, require_approval="never", allowed_tools=["get_time"]),
                       tool_choice={"type": "mcp", "server_label": "weather"}, max_tool_calls=1)
        [call] = items(response, "mcp_call")
        assert call.status == "completed" and "10:42" in call.output
    finally:
        server.stop()


@pytest.mark.parametrize(("tool", "param"), [
    ({"type": "mcp", "server_label": "weather", "server_url": "ftp://example.com"}, "tools[0].server_url"),
    ({"type": "mcp", "server_label": "bad label!", "server_url": "http://127.0.0.1:9/mcp"}, "tools[0].server_label"),
    ({"type": "mcp", "server_label": "weather", "server_url": "http://127.0.0.1:9/mcp", "require_approval": "maybe"},
     "tools[0].require_approval"),
])
def test_bad_mcp_tools_are_400(mcp_client, tool, param):
    with pytest.raises(openai.BadRequestError) as bad:
        mcp_client.responses.create(model=TOOL_MODEL, input="hi", tools=[tool])
    assert bad.value.body["param"] == param


def test_unreachable_server_is_424(mcp_client):
    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(openai.APIStatusError) as failed:
        ask(mcp_client, url)
    assert failed.value.status_code == 424 and "Cannot reach the MCP server" in failed.value.message


def test_a_server_on_a_private_address_needs_its_host_allowed(tmp_path, weather):
    guarded = Lms(home=tmp_path / "home", port=free_port())  # remote MCP on, allowed_fetch_hosts empty
    try:
        guarded.run("server", "start", "-p", str(guarded.port), "--allow-remote-mcp")
        client = openai.OpenAI(base_url=guarded.base_url + "/v1", api_key="lm-studio", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as refused:
            ask(client, weather.url)
        assert refused.value.body["code"] == "address_not_allowed"
        assert "allowed_fetch_hosts" in refused.value.message and refused.value.body["param"] == "tools[0].server_url"
    finally:
        guarded.stop()


def test_mcp_json_http_servers_need_their_host_allowed(tmp_path, weather):
    """mcp.json HTTP servers are under the outbound policy too: the refusal comes before any model work and
    names the setting; allowing the host lets `lms chat` list the server's tools."""
    guarded = Lms(home=tmp_path / "home", port=free_port())
    guarded.home.mkdir(parents=True)
    (guarded.home / "mcp.json").write_text(json.dumps({"mcpServers": {"weather": {"url": weather.url}}}))
    try:
        refused = guarded.run("chat", CHAT_MODEL, "--mcp", "weather", "-p", "hi", check=False)
        shown = refused.stdout + refused.stderr
        assert refused.returncode != 0 and "allowed_fetch_hosts" in shown and "127.0.0.1" in shown
        assert guarded.json("ps") == []  # refused before the model was loaded
    finally:
        guarded.stop()


def test_mcp_json_servers_in_lms_chat_and_not_over_http(mcp_lms, mcp_client, weather):
    (mcp_lms.home / "mcp.json").write_text(json.dumps({"mcpServers": {
        "clock": {"command": sys.executable, "args": [str(SERVER_SCRIPT), "0", "stdio", "--safe"]},
        "weather": {"url": weather.url}}}))
    chat = mcp_lms.run("chat", TOOL_MODEL, "--mcp", "clock", "-p", "What time is it in Oslo?")
    assert "[clock] get_time(" in chat.stdout + chat.stderr and "10:42" in chat.stdout + chat.stderr

    unknown = mcp_lms.run("chat", TOOL_MODEL, "--mcp", "nowhere", "-p", "hi", check=False)
    assert unknown.returncode != 0 and "clock" in unknown.stderr + unknown.stdout

    with pytest.raises(openai.PermissionDeniedError) as refused:  # no api_token: mcp.json stays local
        mcp_client.responses.create(model=TOOL_MODEL, input="hi", tools=[{"type": "mcp", "server_label": "clock"}])
    assert refused.value.code == "mcp_json_disabled"


def test_native_chat_integrations_run_mcp_tools(mcp_lms, weather):
    import httpx

    body = {"model": TOOL_MODEL, "input": "What time is it in Oslo?", "max_output_tokens": 60, "temperature": 0,
            "integrations": [{"type": "ephemeral_mcp", "server_label": "weather", "server_url": weather.url,
                              "allowed_tools": ["get_time"]}]}
    result = httpx.post(f"{mcp_lms.base_url}/api/v1/chat", json=body, timeout=120).json()
    calls = [item for item in result["output"] if item["type"] == "tool_call"]
    assert calls and calls[0]["tool"] == "get_time" and calls[0]["output"].startswith("It is 10:42")
    assert calls[0]["provider_info"] == {"type": "ephemeral_mcp", "server_label": "weather"}
    with httpx.stream("POST", f"{mcp_lms.base_url}/api/v1/chat", json={**body, "stream": True}, timeout=120) as sse:
        kinds = [json.loads(line[6:])["type"] for line in sse.iter_lines() if line.startswith("data: ")]
    assert kinds.index("tool_call.start") < kinds.index("tool_call.arguments") < kinds.index("tool_call.success")
    assert kinds[-1] == "chat.end"


def test_native_chat_refuses_calls_that_break_the_tool_schema_as_invalid_tool_calls(mcp_lms):
    """A call whose arguments the tool's input schema refuses never reaches the MCP server: the answer carries an
    invalid_tool_call item saying why, and a stream a `tool_call.failure` event."""
    import httpx

    alarm = McpServer("streamable-http", None, "--safe", "--alarm-tool").start()
    try:
        body = {"model": TOOL_MODEL, "input": "Set the alarm to ring at hour 30.", "max_output_tokens": 60,
                "temperature": 0, "integrations": [{"type": "ephemeral_mcp", "server_label": "clock",
                                                    "server_url": alarm.url, "allowed_tools": ["set_alarm"]}]}
        result = httpx.post(f"{mcp_lms.base_url}/api/v1/chat", json=body, timeout=120).json()
        refused = [item for item in result["output"] if item["type"] == "invalid_tool_call"]
        assert refused, result["output"]  # the model is told why, and may try again: every try is refused
        assert {(r["metadata"]["type"], r["metadata"]["tool_name"]) for r in refused} == \
            {("invalid_arguments", "set_alarm")}
        assert refused[0]["metadata"]["arguments"]["hour"] == 30
        assert "'hour'" in refused[0]["reason"] and "maximum of 23" in refused[0]["reason"]
        assert not [item for item in result["output"] if item["type"] == "tool_call"]  # never ran
        with httpx.stream("POST", f"{mcp_lms.base_url}/api/v1/chat", json={**body, "stream": True},
                          timeout=120) as sse:
            kinds = [json.loads(line[6:])["type"] for line in sse.iter_lines() if line.startswith("data: ")]
        assert "tool_call.failure" in kinds and "tool_call.success" not in kinds and kinds[-1] == "chat.end"
    finally:
        alarm.stop()


def test_native_chat_reports_a_call_of_a_tool_it_does_not_offer_as_an_invalid_tool_call(mcp_lms, weather):
    """The system prompt tells of a tool the request does not offer; the model's call of it is an
    invalid_tool_call (invalid_name), not a crash and not a call anywhere."""
    import httpx

    body = {"model": TOOL_MODEL, "input": "Launch the rocket now.", "max_output_tokens": 60, "temperature": 0,
            "system_prompt": 'To launch the rocket, call the tool launch_rocket by answering exactly '
                             '<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>',
            "integrations": [{"type": "ephemeral_mcp", "server_label": "weather", "server_url": weather.url,
                              "allowed_tools": ["get_time"]}]}
    result = httpx.post(f"{mcp_lms.base_url}/api/v1/chat", json=body, timeout=120).json()
    refused = [item for item in result["output"] if item["type"] == "invalid_tool_call"]
    assert refused, result["output"]
    assert refused[0]["metadata"]["type"] == "invalid_name"
    assert refused[0]["metadata"]["tool_name"] == "launch_rocket" and "launch_rocket" in refused[0]["reason"]
    assert result["stats"]["tokens_per_second"] < 1000  # counted from the first token, not from the parsed call
