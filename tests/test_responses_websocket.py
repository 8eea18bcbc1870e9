"""WebSocket mode of /v1/responses: events, connection-local state, errors."""

from __future__ import annotations

import json

from websockets.sync.client import connect

from tests.conftest import CHAT_MODEL


def turn(socket, model: str = CHAT_MODEL, **body) -> list[dict]:
    socket.send(json.dumps({"type": "response.create", "model": model, "max_output_tokens": 16, **body}))
    events = []
    while True:
        event = json.loads(socket.recv(timeout=120))
        events.append(event)
        if event["type"] in ("response.completed", "response.incomplete", "response.failed", "error"):
            return events


def ws_url(served) -> str:
    return served.base_url.replace("http://", "ws://") + "/v1/responses"


def test_events_match_the_http_stream(served, chat_model):
    with connect(ws_url(served)) as socket:
        events = turn(socket, chat_model, input="Say hello.")
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete")
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_store_false_continues_only_on_its_own_connection(served, chat_model):
    with connect(ws_url(served)) as socket:
        first = turn(socket, chat_model, input="The code word is cobalt.", store=False)[-1]["response"]
        second = turn(socket, chat_model, input="What is the code word?", previous_response_id=first["id"],
                      store=False)
        assert second[-1]["type"] in ("response.completed", "response.incomplete")
        assert second[-1]["response"]["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    with connect(ws_url(served)) as other:
        [error] = turn(other, input="And now?", previous_response_id=first["id"])
        assert error["type"] == "error" and error["status"] == 400
        assert error["error"]["code"] == "previous_response_not_found"
        recovered = turn(other, input="Hello again.")
        assert recovered[-1]["type"] in ("response.completed", "response.incomplete")


def test_failed_continuation_evicts_the_id(served):
    with connect(ws_url(served)) as socket:
        first = turn(socket, input="Remember: ember.", store=False)[-1]["response"]
        failed = turn(socket, previous_response_id=first["id"], input=[
            {"type": "function_call_output", "call_id": "call_missing", "output": "{}"}])
        assert failed[-1]["type"] == "error"
        again = turn(socket, previous_response_id=first["id"], input="Still there?")
        assert again[-1]["error"]["code"] == "previous_response_not_found"


def test_bad_messages_get_an_error_and_the_socket_stays_open(served):
    with connect(ws_url(served)) as socket:
        socket.send("not json")
        assert json.loads(socket.recv(timeout=30))["error"]["code"] == "invalid_json"
        socket.send(json.dumps({"type": "response.cancel"}))
        assert json.loads(socket.recv(timeout=30))["error"]["code"] == "invalid_message"
        socket.send(b"\xff\xfe not UTF-8")  # a binary frame: read as JSON like a text one
        assert json.loads(socket.recv(timeout=30))["error"]["code"] == "invalid_json"
        assert turn(socket, input="Hi")[-1]["type"] in ("response.completed", "response.incomplete")
        socket.send(json.dumps({"type": "response.create", "model": CHAT_MODEL, "input": "Hi",
                                "max_output_tokens": 4}).encode())
        while (event := json.loads(socket.recv(timeout=120)))["type"] not in ("response.completed",
                                                                               "response.incomplete"):
            assert event["type"] != "response.failed", event
