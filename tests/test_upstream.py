"""An OpenAI-compatible upstream behind lms (`lms upstream add NAME URL`): the shared test daemon (`served`) is the
upstream, a second lms on another port is the front. The upstream's models are listed as NAME/<model> by every
surface of the front and served by it, streaming included; Responses state stays in the front; tool calls,
embeddings and errors come through in each surface's own shape. A small recording server stands in for an upstream
only where the point is what lms sends it (the API key)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import httpx
import openai
import pytest

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, TOOL_MODEL, _new_lms, free_port

UPSTREAM_CHAT = f"back/{CHAT_MODEL}"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def front(served, tmp_path_factory):
    instance = _new_lms(tmp_path_factory.mktemp("front") / "home")
    instance.run("server", "start", "-p", str(instance.port))
    added = instance.json("upstream", "add", "back", f"{served.base_url}/v1")
    assert added["url"] == f"{served.base_url}/v1"
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def front_client(front):
    return openai.OpenAI(base_url=front.base_url + "/v1", api_key="unused", max_retries=0, timeout=180)


def test_the_upstreams_models_are_listed_by_every_surface(front):
    listed = front.json("upstream", "ls")
    assert listed[0]["name"] == "back" and listed[0]["reachable"] is True
    assert {UPSTREAM_CHAT, f"back/{EMBEDDING_MODEL}", f"back/{TOOL_MODEL}"} <= set(listed[0]["models"])
    assert UPSTREAM_CHAT in [m["id"] for m in httpx.get(f"{front.base_url}/v1/models").json()["data"]]
    native = httpx.get(f"{front.base_url}/api/v1/models").json()["models"]
    assert {m["key"]: m["format"] for m in native}[UPSTREAM_CHAT] == "upstream"
    v0 = {m["id"]: m for m in httpx.get(f"{front.base_url}/api/v0/models").json()["data"]}
    assert v0[f"back/{EMBEDDING_MODEL}"]["type"] == "embeddings"  # from the upstream's native list
    assert f"{UPSTREAM_CHAT}:latest" in [m["name"] for m in httpx.get(f"{front.base_url}/api/tags").json()["models"]]
    assert UPSTREAM_CHAT in [m["modelKey"] for m in front.json("ls")]
    assert "Upstream (back)" in front.run("ls").stdout


def test_chat_and_completions_stream_through_the_front(front, front_client):
    answer = front_client.chat.completions.create(model=UPSTREAM_CHAT, max_tokens=12, temperature=0,
                                                  messages=[{"role": "user", "content": "Say hello."}])
    assert answer.choices[0].message.content and answer.model == UPSTREAM_CHAT
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    chunks = list(front_client.chat.completions.create(
        model=UPSTREAM_CHAT, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Say hello."}]))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content  # greedy: the same text, token by token
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[-1].usage.completion_tokens == answer.usage.completion_tokens
    # the prompt the upstream saw first is in its cache now, and its cached tokens reach the client
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens > 0
    text = front_client.completions.create(model=UPSTREAM_CHAT, prompt="The capital of France is", max_tokens=6,
                                           temperature=0)
    assert text.choices[0].text.strip()
    ps = {m["identifier"]: m for m in front.json("ps")}
    assert ps[UPSTREAM_CHAT]["location"] == "upstream" and ps[UPSTREAM_CHAT]["engine"]["name"] == "upstream"


def test_responses_state_stays_in_the_front(front, front_client, served):
    first = front_client.responses.create(model=UPSTREAM_CHAT, input="My name is Zorblax. Say OK.",
                                          max_output_tokens=16, temperature=0)
    assert first.output_text
    second = front_client.responses.create(model=UPSTREAM_CHAT, input="What is my name?", max_output_tokens=24,
                                           temperature=0, previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text
    # The chain is the front's: the upstream was sent the whole conversation and stored nothing under that id.
    assert httpx.get(f"{front.base_url}/v1/responses/{first.id}").status_code == 200
    assert httpx.get(f"{served.base_url}/v1/responses/{first.id}").status_code == 404
    assert second.usage.input_tokens > first.usage.input_tokens


def test_anthropic_ollama_and_native_surfaces(front):
    claude = anthropic.Anthropic(base_url=front.base_url, api_key="unused", max_retries=0, timeout=180)
    message = claude.messages.create(model=UPSTREAM_CHAT, max_tokens=12,
                                     messages=[{"role": "user", "content": "Say hello."}])
    assert message.content[0].text and message.stop_reason in ("end_turn", "max_tokens")
    with httpx.stream("POST", f"{front.base_url}/api/chat", timeout=180, json={
            "model": f"{UPSTREAM_CHAT}:latest", "messages": [{"role": "user", "content": "Say hello."}],
            "options": {"num_predict": 12}}) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200 and lines[-1]["done"] is True
    assert "".join(line["message"]["content"] for line in lines).strip()
    native = httpx.post(f"{front.base_url}/api/v1/chat", timeout=180,
                        json={"model": UPSTREAM_CHAT, "input": "Say hello.", "max_output_tokens": 12}).json()
    assert native["output"][0]["content"] and native["stats"]["total_output_tokens"] > 0


def test_tool_calls_come_back_as_tool_calls(front, front_client):
    model = f"back/{TOOL_MODEL}"
    answer = front_client.chat.completions.create(
        model=model, temperature=0, tools=[WEATHER_TOOL], tool_choice="required",
        messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    call = answer.choices[0].message.tool_calls[0]
    assert answer.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    response = front_client.responses.create(
        model=model, temperature=0, tool_choice="required", input="What is the weather in Paris?",
        tools=[{"type": "function", **WEATHER_TOOL["function"]}])
    assert [item.type for item in response.output] == ["function_call"]
    assert response.output[0].name == "get_weather"


def test_embeddings_match_the_upstreams_own(front, served):
    body = {"model": EMBEDDING_MODEL, "input": ["a cat sat on the mat", "stock markets fell"]}
    direct = httpx.post(f"{served.base_url}/v1/embeddings", json=body, timeout=120).json()
    through = httpx.post(f"{front.base_url}/v1/embeddings", json={**body, "model": f"back/{EMBEDDING_MODEL}"},
                         timeout=120).json()
    assert [d["embedding"] for d in through["data"]] == [d["embedding"] for d in direct["data"]]
    assert through["usage"]["prompt_tokens"] == direct["usage"]["prompt_tokens"] > 0


def test_errors_keep_their_shape_and_never_hang(front, front_client):
    with pytest.raises(openai.NotFoundError) as missing:
        front_client.chat.completions.create(model="back/no-such-model", max_tokens=4,
                                             messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in str(missing.value)
    with pytest.raises(openai.BadRequestError):  # the upstream's own refusal, as a 400
        front_client.chat.completions.create(model=UPSTREAM_CHAT, max_tokens=4, temperature=-3,
                                             messages=[{"role": "user", "content": "hi"}])
    refused = front.run("upstream", "add", "nowhere", f"http://127.0.0.1:{free_port()}/v1", check=False)
    assert refused.returncode == 1 and "cannot be reached" in refused.stderr
    assert "nowhere" not in [u["name"] for u in front.json("upstream", "ls")]
    bad = front.run("upstream", "add", "bad/name", "http://127.0.0.1:1/v1", check=False)
    assert bad.returncode == 1 and "no '/'" in bad.stderr


class Recorder(BaseHTTPRequestHandler):
    """An OpenAI-shaped server that wants one API key and remembers the Authorization headers it got."""

    seen: list[str] = []
    key = "sk-upstream-secret"

    def log_message(self, *_args) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append(self.headers.get("Authorization", ""))
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._answer(401, {"error": {"message": "Invalid API key", "type": "invalid_request_error"}})
        if self.path == "/v1/models":
            return self._answer(200, {"object": "list", "data": [{"id": "remote-model", "object": "model"}]})
        return self._answer(404, {"error": {"message": "not found"}})


@pytest.fixture
def recorder():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.seen = []
    yield server
    server.shutdown()
    server.server_close()


def test_the_api_key_comes_from_the_named_variable_and_is_never_stored(front, recorder):
    url = f"http://127.0.0.1:{recorder.server_address[1]}/v1"
    wrong = front.run("upstream", "add", "keyed", url, "--api-key-env", "UPSTREAM_KEY", check=False)
    assert wrong.returncode == 1 and "UPSTREAM_KEY is not set" in wrong.stderr
    front.settings["UPSTREAM_KEY"] = "sk-wrong"
    try:
        refused = front.run("upstream", "add", "keyed", url, "--api-key-env", "UPSTREAM_KEY", check=False)
        assert refused.returncode == 1 and "Invalid API key" in refused.stderr
        front.settings["UPSTREAM_KEY"] = Recorder.key
        added = front.json("upstream", "add", "keyed", url, "--api-key-env", "UPSTREAM_KEY")
    finally:
        front.settings.pop("UPSTREAM_KEY")
    assert added["models"] == ["keyed/remote-model"] and added["apiKeyEnv"] == "UPSTREAM_KEY"
    assert f"Bearer {Recorder.key}" in Recorder.seen
    stored = (front.home / "upstreams.json").read_text()
    assert "UPSTREAM_KEY" in stored and Recorder.key not in stored
    # An upstream that goes away is a 503 that names it, at once: nothing waits on it.
    recorder.shutdown()
    recorder.server_close()
    gone = httpx.post(f"{front.base_url}/v1/chat/completions", timeout=60, json={
        "model": "keyed/remote-model", "messages": [{"role": "user", "content": "hi"}]})
    assert gone.status_code == 503 and gone.json()["error"]["code"] == "upstream_unreachable"
    assert "keyed" in gone.json()["error"]["message"]
    removed = front.json("upstream", "rm", "keyed")
    assert removed["removed"] == "keyed"
    assert "keyed/remote-model" not in [m["id"] for m in httpx.get(f"{front.base_url}/v1/models").json()["data"]]


def test_a_removed_upstream_leaves_every_list(front, front_client, served):
    front_client.chat.completions.create(model=UPSTREAM_CHAT, max_tokens=2,
                                         messages=[{"role": "user", "content": "hi"}])
    removed = front.json("upstream", "rm", "back")
    assert UPSTREAM_CHAT in removed["detached"]
    assert UPSTREAM_CHAT not in [m["id"] for m in httpx.get(f"{front.base_url}/v1/models").json()["data"]]
    assert UPSTREAM_CHAT not in [m["identifier"] for m in front.json("ps")]
    with pytest.raises(openai.NotFoundError):
        front_client.chat.completions.create(model=UPSTREAM_CHAT, max_tokens=2,
                                             messages=[{"role": "user", "content": "hi"}])
    front.json("upstream", "add", "back", f"{served.base_url}/v1")  # as the module started
