"""The LM Studio SDK protocol's frame layer: frames, errors, KV config stacks, identities, and one socket's
dispatch (auth frame, rpc and channel frames, unknown endpoints, keep-alive) on an app with no models."""

from __future__ import annotations

import asyncio
import base64
import json
from types import SimpleNamespace

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from lms.api.auth import RequireToken
from lms.api.lmstudio import frames
from lms.api.lmstudio import models as lmstudio_models
from lms.api.lmstudio.file_store import ClientFiles
from lms.api.lmstudio.identity import TOKEN_INVALID, TOKEN_REQUIRED, Identities, authenticate, passkey_mismatch
from lms.api.lmstudio.models import find, instance_reference, load_settings, resolve_loaded
from lms.api.lmstudio.prediction import chat_input, completion_input, effective_config, messages_of
from lms.api.lmstudio.routes import lmstudio_routes
from lms.errors import Kind, LmsError
from lms.generation.request import IMAGE_MARKER
from lms.pipeline.pipeline import chat_request
from lms.tokens import Authenticator, TokenStore

AUTH = {"authVersion": 1, "clientIdentifier": "7f2b13fa-85d3-42dc-875b-b91b7e68a83f", "clientPasskey": "secret"}


def test_decode_takes_json_objects_only():
    assert frames.decode('{"type":"keepAlive"}') == {"type": "keepAlive"}
    for bad in ("[1]", "nope", None, '"text"'):
        with pytest.raises(frames.FrameError):
            frames.decode(bad)


def test_credentials_of_the_auth_frame():
    assert frames.credentials(AUTH) == frames.Credentials(AUTH["clientIdentifier"], "secret")
    assert frames.credentials({**AUTH, "authVersion": 2}) is None
    assert frames.credentials({**AUTH, "clientIdentifier": ""}) is None
    assert frames.credentials({**AUTH, "clientPasskey": "x" * 257}) is None
    assert frames.credentials({"type": "rpcCall"}) is None


def test_server_frames():
    assert frames.rpc_result(3) == {"type": "rpcResult", "callId": 3}  # void: no result key
    assert frames.rpc_result(3, None) == {"type": "rpcResult", "callId": 3, "result": None}
    assert frames.channel_send(1, {"type": "x"}) == {"type": "channelSend", "channelId": 1, "message": {"type": "x"}}
    assert frames.channel_close(1) == {"type": "channelClose", "channelId": 1}
    assert frames.communication_warning("w") == {"type": "communicationWarning", "warning": "w"}
    assert json.loads(frames.encode({"a": "é"})) == {"a": "é"}


def test_errors_carry_display_data():
    error = frames.ProtocolError("gone", Kind.NOT_FOUND, {"code": "generic.specificModelUnloaded"}, code="c")
    assert frames.serialize_error(error) == {"title": "gone", "rootTitle": "gone",
                                             "errorData": {"kind": "not_found", "code": "c"},
                                             "displayData": {"code": "generic.specificModelUnloaded"}}
    assert "displayData" not in frames.serialize_error(LmsError.invalid("bad", "x"))
    assert frames.serialize_error(KeyError("k"))["title"] == "Internal error: KeyError"
    warning, error = frames.unknown_endpoint("channel", "llm", "nope")
    assert warning["kind"] == "channelEndpointUnknown" and "nope" in error.message


def test_kv_stacks_collapse_later_layers_winning():
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [{"key": "a", "value": 1},
                                                                          {"key": "b", "value": 2}]}},
                        {"layerName": "preset", "config": {"fields": [{"key": "a", "value": 3}]}}]}
    assert frames.collapse(stack) == {"a": 3, "b": 2}
    assert frames.collapse(None) == {} and frames.collapse({"layers": [None, {"config": None}]}) == {}
    assert frames.checkbox({"checked": True, "value": 8}) == 8
    assert frames.checkbox({"checked": True, "value": False}) is None
    assert frames.checkbox({"checked": False, "value": 8}) is None
    assert frames.checkbox(0.5) == 0.5 and frames.checkbox(False) is None
    assert frames.kv_config({"k": 1}) == {"fields": [{"key": "k", "value": 1}]}


def test_guest_identities_first_come_first_served_and_counted():
    identities = Identities()
    first = frames.Credentials("client", "one")
    identities.admit(first)
    identities.admit(first)  # the client's second socket
    with pytest.raises(LmsError) as refused:
        identities.admit(frames.Credentials("client", "two"))
    assert refused.value.message == passkey_mismatch("client")
    identities.release("client")
    identities.release("client")  # the last socket went: the identifier is free again
    identities.admit(frames.Credentials("client", "two"))


def test_tokens_are_checked_when_any_exist(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    authenticator = Authenticator(store)
    assert authenticate(authenticator, frames.Credentials("guest:x", "y")) is None  # no token: guests welcome
    _, secret = store.create("app")
    identifier, passkey = secret.removeprefix("sk-lm-").split(":")
    assert authenticate(authenticator, frames.Credentials(identifier, passkey)).name == "app"
    with pytest.raises(LmsError) as guest:
        authenticate(authenticator, frames.Credentials("guest:x", "y"))
    assert guest.value.message == TOKEN_REQUIRED
    with pytest.raises(LmsError) as wrong:
        authenticate(authenticator, frames.Credentials(identifier, "A" * 20))
    assert wrong.value.message == TOKEN_INVALID


def test_chat_history_and_config_become_a_chat_input():
    history = {"messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
        {"role": "user", "content": [{"type": "text", "text": "2+3?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": ""}, {"type": "toolCallRequest", "toolCallRequest": {
            "type": "function", "name": "add", "id": "call_1", "arguments": {"a": 2, "b": 3}}}]},
        {"role": "tool", "content": [{"type": "toolCallResult", "content": "5", "toolCallId": "call_1"}]}]}
    messages, images = messages_of(history)
    assert images == []
    assert messages[2]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": "5"}
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 8}},
        {"key": "llm.prediction.temperature", "value": 0.2},
        {"key": "llm.prediction.topPSampling", "value": {"checked": True, "value": 0.9}},
        {"key": "llm.prediction.topKSampling", "value": 20},
        {"key": "llm.prediction.minPSampling", "value": {"checked": False, "value": 0.1}},
        {"key": "llm.prediction.repeatPenalty", "value": {"checked": True, "value": 1.2}},
        {"key": "llm.prediction.somethingNewer", "value": {"x": 1}},
        {"key": "llm.prediction.stopStrings", "value": ["\n\n"]},
        {"key": "llm.prediction.structured", "value": {"type": "json", "jsonSchema": {"type": "object"}}}]}}]}
    chat = chat_input({"history": history, "predictionConfigStack": stack}, "m")
    assert (chat.max_tokens, chat.stop, chat.json_schema) == (8, ["\n\n"], {"type": "object"})
    assert chat.sampling == {"temperature": 0.2, "top_p": 0.9, "top_k": 20, "repeat_penalty": 1.2}
    with pytest.raises(LmsError) as missing:
        messages_of({"messages": [{"role": "user", "content": [{"type": "file", "identifier": "f"}]}]})
    assert missing.value.code == "file_not_found"


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16


def test_uploaded_files_are_kept_per_client_until_its_last_socket_closes():
    files = ClientFiles()
    files.attach("client-a")
    files.attach("client-a")
    image = files.add("client-a", "cat.png", PNG)
    note = files.add("client-a", "notes.md", b"# hi")
    assert (image.file_type, image.media_type, note.file_type) == ("image", "image/png", "text/plain")
    assert files.of("client-b") == {}
    history = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this? "}, {"type": "file", "identifier": image.identifier}]}]}
    messages, images = messages_of(history, files.of("client-a"))
    assert messages[0]["content"] == "What is this? " + IMAGE_MARKER
    assert images == ["data:image/png;base64," + base64.b64encode(PNG).decode()]
    with pytest.raises(LmsError) as not_an_image:
        messages_of({"messages": [{"role": "user", "content": [{"type": "file", "identifier": note.identifier}]}]},
                    files.of("client-a"))
    assert not_an_image.value.code == "unsupported_content"
    files.detach("client-a")
    assert image.identifier in files.of("client-a")
    files.detach("client-a")
    assert files.of("client-a") == {}


def test_a_preset_is_a_layer_under_the_client_and_the_effective_config_is_echoed(tmp_path, monkeypatch):
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    (tmp_path / "config-presets").mkdir()
    (tmp_path / "config-presets" / "Terse Helper.preset.json").write_text(json.dumps({"name": "Terse Helper",
        "operation": {"fields": [{"key": "llm.prediction.systemPrompt", "value": "Answer in one word."},
                                 {"key": "llm.prediction.temperature", "value": 0.1},
                                 {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 5}},
                                 {"key": "llm.prediction.topKSampling", "value": 7}]}}))
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Sky colour?"}]}]}
    client = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.prediction.temperature", "value": 0.5}]}}]}
    chat = chat_input({"history": history, "predictionConfigStack": client,
                       "fuzzyPresetIdentifier": "terse-helper"}, "m")
    assert chat.messages[0] == {"role": "system", "content": "Answer in one word."}
    assert (chat.sampling, chat.max_tokens, chat.preset) == ({"temperature": 0.5, "top_k": 7}, 5, None)
    with pytest.raises(frames.ProtocolError) as missing:
        chat_input({"history": history, "fuzzyPresetIdentifier": "nope"}, "m")
    assert frames.serialize_error(missing.value)["displayData"] == {
        "code": "generic.presetNotFound", "specifiedFuzzyPresetIdentifier": "nope",
        "availablePresetsSample": [{"identifier": "Terse Helper", "name": "Terse Helper"}], "totalAvailablePresets": 1}
    request, _plan = chat_request(chat)
    echoed = {f["key"]: f["value"] for f in effective_config(request)["fields"]}
    assert echoed["llm.prediction.temperature"] == 0.5 and echoed["llm.prediction.topKSampling"] == 7
    assert echoed["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 5}
    assert echoed["llm.prediction.topPSampling"] == {"checked": True, "value": 0.95}  # the default, as it ran


def test_load_settings_from_a_load_config_stack():
    stack = {"layers": [{"layerName": "apiOverride", "config": {"fields": [
        {"key": "llm.load.contextLength", "value": 1024}, {"key": "llm.load.numParallelSessions", "value": 2},
        {"key": "llm.load.llama.acceleration.offloadRatio", "value": "max"}]}}]}
    assert load_settings("llm", stack) == {"context_length": 1024, "parallel": 2}
    assert load_settings("embedding", stack) == {}
    with pytest.raises(LmsError):
        load_settings("llm", {"layers": [{"layerName": "apiOverride", "config": {"fields": [
            {"key": "llm.load.contextLength", "value": "big"}]}}]})


@pytest.fixture
def app(tmp_path):
    store = TokenStore(tmp_path / "tokens.json")
    app = Starlette(routes=lmstudio_routes(), middleware=[Middleware(RequireToken, authenticator=Authenticator(store))])
    app.state.manager = SimpleNamespace(loaded={}, find_loaded=lambda _name: None)
    app.state.store = store
    return app


def test_a_socket_authenticates_then_answers_every_frame(app):
    with TestClient(app) as client, client.websocket_connect("/llm") as ws:
        ws.send_text(json.dumps(AUTH))
        assert ws.receive_json() == {"success": True}
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        assert ws.receive_json() == {"type": "rpcResult", "callId": 1, "result": []}
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "noSuchThing", "callId": 2}))
        assert ws.receive_json()["kind"] == "rpcEndpointUnknown"
        assert ws.receive_json()["type"] == "rpcError"
        ws.send_text(json.dumps({"type": "channelCreate", "endpoint": "noSuchChannel", "channelId": 1}))
        assert ws.receive_json()["kind"] == "channelEndpointUnknown"
        assert ws.receive_json()["type"] == "channelError"
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "getModelInfo", "callId": 3, "parameter": {
            "specifier": {"type": "query", "query": {"identifier": "x"}}, "throwIfNotFound": False}}))
        assert ws.receive_json() == {"type": "rpcResult", "callId": 3}
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "getModelInfo", "callId": 4, "parameter": {
            "specifier": {"type": "query", "query": {"identifier": "x"}}, "throwIfNotFound": True}}))
        error = ws.receive_json()
        assert error["type"] == "rpcError" and error["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"
        ws.send_text(json.dumps({"type": "keepAlive"}))
        assert ws.receive_json() == {"type": "keepAliveAck"}
        ws.send_text(json.dumps({"type": "signalSubscribe", "endpoint": "s", "subscribeId": 0}))
        assert ws.receive_json()["type"] == "signalError"
        ws.send_text("not json")
        assert ws.receive_json()["type"] == "communicationWarning"


def test_namespaces_not_served_still_answer(app):
    with TestClient(app) as client, client.websocket_connect("/plugins") as ws:
        ws.send_text(json.dumps(AUTH))
        assert ws.receive_json() == {"success": True}
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "registerDevelopmentPlugin", "callId": 1,
                                 "parameter": {}}))
        assert ws.receive_json()["type"] == "communicationWarning"
        assert ws.receive_json()["type"] == "rpcError"


def test_an_upload_is_an_image_handle_and_a_bad_one_an_rpc_error(app):
    with TestClient(app) as client, client.websocket_connect("/files") as ws:
        ws.send_text(json.dumps(AUTH))
        assert ws.receive_json() == {"success": True}
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 1, "parameter": {
            "name": "dot.png", "contentBase64": base64.b64encode(PNG).decode()}}))
        result = ws.receive_json()
        assert result["result"]["fileType"] == "image" and result["result"]["sizeBytes"] == len(PNG)
        assert result["result"]["identifier"] in app.state.lmstudio_files.of(AUTH["clientIdentifier"])
        ws.send_text(json.dumps({"type": "rpcCall", "endpoint": "uploadFileBase64", "callId": 2, "parameter": {
            "name": "x.png", "contentBase64": "not base64!"}}))
        error = ws.receive_json()
        assert error["type"] == "rpcError" and "base64" in error["error"]["title"]
    assert app.state.lmstudio_files.of(AUTH["clientIdentifier"]) == {}


def test_a_wrong_passkey_or_a_missing_token_is_refused_in_the_auth_frame(app):
    with TestClient(app) as client, client.websocket_connect("/system") as first:
        first.send_text(json.dumps(AUTH))
        assert first.receive_json() == {"success": True}
        with client.websocket_connect("/llm") as second:
            second.send_text(json.dumps({**AUTH, "clientPasskey": "other"}))
            assert second.receive_json() == {"success": False,
                                             "error": passkey_mismatch(AUTH["clientIdentifier"])}
    app.state.store.create("app")
    with TestClient(app) as client, client.websocket_connect("/llm") as ws:
        ws.send_text(json.dumps(AUTH))
        assert ws.receive_json() == {"success": False, "error": TOKEN_REQUIRED}


def test_a_prompt_template_override_is_a_raw_completion():
    template = {"type": "jinja", "stopStrings": ["END"], "jinjaPromptTemplate": {
        "template": "{% for message in messages %}{{ message['content'] }}{% endfor %}", "bosToken": "",
        "eosToken": ""}}
    stack = {"layers": [
        {"layerName": "apiOverride", "config": {"fields": [
            {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 4}}]}},
        {"layerName": "completeModeFormatting", "config": {"fields": [
            {"key": "llm.prediction.promptTemplate", "value": template}]}}]}
    history = {"messages": [{"role": "user", "content": [{"type": "text", "text": "The sky is"}]}]}
    completion = completion_input({"history": history, "predictionConfigStack": stack}, "m")
    assert (completion.prompt, completion.max_tokens, completion.stop) == ("The sky is", 4, ["END"])
    assert completion_input({"history": history, "predictionConfigStack": {"layers": []}}, "m") is None
    manual = {"layers": [{"layerName": "x", "config": {"fields": [
        {"key": "llm.prediction.promptTemplate", "value": {"type": "manual", "stopStrings": []}}]}}]}
    with pytest.raises(LmsError):
        completion_input({"history": history, "predictionConfigStack": manual}, "m")


def test_specifiers_resolve_by_identifier_key_reference_or_any():
    def loaded(identifier, key, kind, pid):
        entry = SimpleNamespace(type=kind, model_key=key, rel_path=f"{key}/file.gguf")
        return SimpleNamespace(identifier=identifier, entry=entry, worker=SimpleNamespace(pid=pid))

    chat, second, embed = loaded("a/chat", "a/chat", "llm", 1), loaded("two", "a/chat", "llm", 2), \
        loaded("e/mb", "e/mb", "embedding", 3)
    models = {m.identifier: m for m in (chat, second, embed)}
    manager = SimpleNamespace(loaded=models, find_loaded=lambda name: models.get(name) or next(
        (m for m in models.values() if m.entry.model_key == name), None))
    assert find(manager, "llm", {"type": "query", "query": {"identifier": "two"}}) is second
    assert find(manager, "llm", {"type": "query", "query": {"path": "a/chat/file.gguf"}}) is chat
    assert find(manager, "llm", {"type": "query", "query": {}}) is chat
    assert find(manager, "embedding", {"type": "query", "query": {"identifier": "a/chat"}}) is None
    reference = {"type": "instanceReference", "instanceReference": instance_reference(second)}
    assert find(manager, "llm", reference) is second
    del models["two"]  # unloaded: its reference matches nothing, with LM Studio's code
    with pytest.raises(LmsError) as gone:
        resolve_loaded(manager, "llm", reference)
    assert gone.value.display["code"] == "generic.specificModelUnloaded"


def test_load_progress_is_repeated_while_the_work_runs(monkeypatch):
    monkeypatch.setattr(lmstudio_models, "HEARTBEAT_SECONDS", 0.01)
    sent = []

    async def send(message):
        sent.append(message)

    async def work():
        await asyncio.sleep(0.1)
        return "loaded"

    channel = SimpleNamespace(send=send)
    assert asyncio.run(lmstudio_models._with_heartbeat(work(), channel, [0.25], "loadProgress")) == "loaded"
    assert len(sent) >= 3 and all(m == {"type": "loadProgress", "progress": 0.25} for m in sent)
