"""LM Studio's own Python SDK (`lmstudio` 1.5.0 from PyPI), unchanged, against a real daemon and real models:
listing, JIT getOrLoad, respond and respond_stream with LM Studio's stats and stop reasons, cancel, loading and
unloading instances, model info, embeddings, tokenize, count_tokens and apply_prompt_template; plus raw frames
where the SDK hides what is on the wire (load progress, API tokens, the browser guard)."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import lmstudio
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL, TOOL_MODEL, VISION_MODEL, Lms, free_port

GUEST = {"authVersion": 1, "clientIdentifier": "raw-test-client", "clientPasskey": "raw-test-passkey"}


@pytest.fixture(scope="module")
def sdk(served):
    with lmstudio.Client(f"127.0.0.1:{served.port}") as client:
        yield client


def ws_url(lms: Lms, namespace: str) -> str:
    return f"ws://127.0.0.1:{lms.port}/{namespace}"


def frame(ws) -> dict:
    return json.loads(ws.recv(timeout=120))


@contextmanager
def authenticated(lms: Lms, namespace: str, creds: dict = GUEST):
    with connect(ws_url(lms, namespace), open_timeout=10) as ws:
        ws.send(json.dumps(creds))
        assert frame(ws) == {"success": True}
        yield ws


def refusal(lms: Lms, creds: dict) -> dict:
    with connect(ws_url(lms, "llm"), open_timeout=10) as ws:
        ws.send(json.dumps(creds))
        return frame(ws)


def test_lists_downloaded_and_loaded_models(sdk):
    downloaded = {m.model_key: m.type for m in sdk.list_downloaded_models()}
    assert downloaded[CHAT_MODEL] == "llm" and downloaded[EMBEDDING_MODEL] == "embedding"
    assert CHAT_MODEL in [m.identifier for m in sdk.llm.list_loaded()]
    assert CHAT_MODEL in [m.identifier for m in sdk.list_loaded_models()]
    assert all(m.type == "llm" for m in sdk.llm.list_downloaded())


def test_the_default_client_configured_with_a_host(served):
    lmstudio.configure_default_client(f"127.0.0.1:{served.port}")
    assert CHAT_MODEL in [m.identifier for m in lmstudio.list_loaded_models("llm")]
    assert lmstudio.llm(CHAT_MODEL).respond("Hi", config={"maxTokens": 4}).content


def test_model_handle_info_and_context_length(sdk):
    model = sdk.llm.model(CHAT_MODEL)
    assert model.identifier == CHAT_MODEL
    info = model.get_info()
    assert info.model_key == CHAT_MODEL and info.identifier == CHAT_MODEL
    assert model.get_context_length() == info.context_length > 0
    assert model.get_load_config().context_length == info.context_length


def test_respond_gives_content_and_lm_studio_stats(sdk):
    result = sdk.llm.model(CHAT_MODEL).respond("Say hello.", config={"maxTokens": 8, "temperature": 0})
    assert isinstance(result.content, str) and result.content
    stats = result.stats
    assert stats.stop_reason in ("eosFound", "maxPredictedTokensReached")
    assert 0 < stats.predicted_tokens_count <= 8 and stats.prompt_tokens_count > 0
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count
    assert stats.tokens_per_second > 0 and stats.time_to_first_token_sec > 0
    assert result.model_info.model_key == CHAT_MODEL


def test_max_tokens_stops_with_lm_studios_reason(sdk):
    result = sdk.llm.model(CHAT_MODEL).respond("Count from 1 to 100, comma separated.",
                                               config={"maxTokens": 3, "temperature": 0})
    assert result.stats.stop_reason == "maxPredictedTokensReached" and result.stats.predicted_tokens_count == 3


def test_respond_stream_fragments_make_the_content(sdk):
    stream = sdk.llm.model(CHAT_MODEL).respond_stream("Say hello.", config={"maxTokens": 8, "temperature": 0})
    fragments = [fragment.content for fragment in stream]
    result = stream.result()
    assert len(fragments) >= 1 and "".join(fragments) == result.content
    assert result.stats.predicted_tokens_count >= 1


def test_complete_runs_the_prompt_raw(sdk):
    """complete() overrides the prompt template: the text goes to the model as it is, not as a chat turn (which
    SmolLM2's template would wrap in its default system prompt, some thirty tokens)."""
    result = sdk.llm.model(CHAT_MODEL).complete("The capital of France is", config={"maxTokens": 4})
    assert result.content and 0 < result.stats.prompt_tokens_count < 12
    assert result.stats.predicted_tokens_count <= 4


def test_a_chat_with_a_system_prompt(sdk):
    chat = lmstudio.Chat("You answer in one word.")
    chat.add_user_message("What colour is the sky?")
    result = sdk.llm.model(CHAT_MODEL).respond(chat, config={"maxTokens": 8, "temperature": 0})
    assert result.content and result.stats.prompt_tokens_count > 10


def test_cancel_mid_stream_ends_user_stopped(sdk):
    stream = sdk.llm.model(CHAT_MODEL).respond_stream("Write a very long story about a dragon.",
                                                      config={"maxTokens": 400, "temperature": 0.7})
    received = 0
    for _fragment in stream:
        received += 1
        if received == 2:
            stream.cancel()
    result = stream.result()
    assert result.stats.stop_reason == "userStopped"
    assert result.stats.predicted_tokens_count < 400


def test_structured_output_from_a_json_schema(sdk):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
              "required": ["city"], "additionalProperties": False}
    result = sdk.llm.model(CHAT_MODEL).respond("Name a city in France.", response_format=schema,
                                               config={"maxTokens": 40, "temperature": 0})
    assert isinstance(result.parsed, dict) and isinstance(result.parsed["city"], str)
    assert json.loads(result.content) == result.parsed


def test_structured_output_from_a_pydantic_model(sdk):
    from pydantic import BaseModel, Field

    class City(BaseModel):  # bounded strings: a 135M model may otherwise ramble inside one until maxTokens
        name: str = Field(max_length=16)
        country: str = Field(max_length=16)

    result = sdk.llm.model(CHAT_MODEL).respond("Name a city in France and its country.", response_format=City,
                                               config={"maxTokens": 60, "temperature": 0})
    assert City.model_validate(result.parsed) and set(result.parsed) == {"name", "country"}


def test_the_effective_prediction_and_load_config_come_back(sdk):
    result = sdk.llm.model(CHAT_MODEL).respond("Hi", config={"maxTokens": 4, "temperature": 0.3,
                                                             "stopStrings": ["\n\n"]})
    config = result.prediction_config
    assert (config.temperature, config.max_tokens, config.stop_strings) == (0.3, 4, ["\n\n"])
    assert config.top_k_sampling == 40 and config.top_p_sampling == 0.95  # the defaults that ran
    assert result.load_config.context_length == sdk.llm.model(CHAT_MODEL).get_context_length()


def test_a_preset_by_name_is_applied_under_the_clients_config(served, sdk):
    folder = served.home / "config-presets"
    folder.mkdir(exist_ok=True)
    (folder / "One Word.preset.json").write_text(json.dumps({"name": "One Word", "operation": {"fields": [
        {"key": "llm.prediction.temperature", "value": 0.05},
        {"key": "llm.prediction.topKSampling", "value": 5},
        {"key": "llm.prediction.systemPrompt", "value": "Reply with exactly one word."}]}}))
    plain = sdk.llm.model(CHAT_MODEL).respond("Colour of the sky?", config={"maxTokens": 4})
    result = sdk.llm.model(CHAT_MODEL).respond("Colour of the sky?", preset="one-word",
                                               config={"maxTokens": 4, "temperature": 0.2})
    assert (result.prediction_config.temperature, result.prediction_config.top_k_sampling) == (0.2, 5)
    assert result.stats.prompt_tokens_count != plain.stats.prompt_tokens_count  # the preset's system prompt
    with pytest.raises(lmstudio.LMStudioPresetNotFoundError):
        sdk.llm.model(CHAT_MODEL).respond("Hi", preset="no such preset", config={"maxTokens": 2})


def test_reasoning_comes_as_reasoning_fragments(sdk, thinking):
    stream = sdk.llm.model(thinking).respond_stream("What is the capital of France?",
                                                    config={"maxTokens": 24, "temperature": 0})
    fragments = list(stream)
    result = stream.result()
    reasoning = [f for f in fragments if f.reasoning_type == "reasoning"]
    assert reasoning and "".join(f.content for f in fragments) == result.content
    assert "<think>" not in result.content


def test_an_image_through_prepare_image(tmp_path, sdk):
    from tests.test_unit_images import png

    path = tmp_path / "dot.png"
    path.write_bytes(png(32, 32))
    image = sdk.prepare_image(path)
    assert image.file_type == "image" and image.size_bytes == path.stat().st_size
    model = sdk.llm.model(VISION_MODEL)
    text_only = model.respond("What is in the picture?", config={"maxTokens": 4})
    chat = lmstudio.Chat()
    chat.add_user_message("What is in the picture?", images=[image])
    with_image = model.respond(chat, config={"maxTokens": 4})
    assert with_image.stats.prompt_tokens_count == text_only.stats.prompt_tokens_count + 16  # the projector's
    with pytest.raises(lmstudio.LMStudioServerError, match="vision"):
        sdk.llm.model(CHAT_MODEL).respond(chat, config={"maxTokens": 4})


def test_a_long_prompt_reports_its_progress(sdk):
    seen = []
    prompt = " ".join(f"Item {n} is a small grey stone on the beach." for n in range(150))  # ~1,800 tokens
    sdk.llm.model(CHAT_MODEL).respond(prompt + " How many items?", config={"maxTokens": 2},
                                      on_prompt_processing_progress=seen.append)
    assert any(0 < p < 1 for p in seen) and seen == sorted(seen) and seen[-1] == 1.0


def test_pings_are_answered_and_a_client_that_goes_away_stops_its_prediction(served):
    with authenticated(served, "llm") as ws:
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "predict", "channelId": 1, "creationParameter": {
            "modelSpecifier": {"type": "query", "query": {"identifier": CHAT_MODEL}},
            "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Tell a long story."}]}]},
            "predictionConfigStack": {"layers": [{"layerName": "apiOverride", "config": {"fields": [
                {"key": "llm.prediction.maxPredictedTokens", "value": {"checked": True, "value": 3000}}]}}]}}}))
        while frame(ws)["message"]["type"] != "fragment":
            pass
        assert ws.ping().wait(timeout=2)  # pings are answered while the model generates
    for _ in range(50):
        status = {m["identifier"]: m["status"] for m in served.json("ps")}[CHAT_MODEL]
        if status == "idle":
            break
        time.sleep(0.2)
    assert status == "idle"


def test_apply_prompt_template_options(sdk):
    model = sdk.llm.model(TOOL_MODEL)
    chat = lmstudio.Chat()
    chat.add_user_message("Weather in Paris?")
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                             "parameters": {"type": "object", "properties": {
                                                 "city": {"type": "string"}}}}}
    plain = model.apply_prompt_template(chat)
    with_tools = model.apply_prompt_template(chat, opts={"toolDefinitions": [tool]})
    assert "get_weather" not in plain and "get_weather" in with_tools


def test_act_runs_a_python_tool_between_rounds(sdk):
    asked = []

    def get_weather(location: str) -> str:
        """Get the current weather for a location (a city and state, e.g. San Francisco, CA)."""
        asked.append(location)
        return "64F and foggy"

    rounds = []
    model = sdk.llm.model(TOOL_MODEL)
    result = model.act("What's the weather like in San Francisco?", [get_weather], max_prediction_rounds=2,
                       config={"temperature": 0, "maxTokens": 60}, on_prediction_completed=rounds.append)
    assert result.rounds == 2 and asked and "San Francisco" in asked[0]
    assert rounds[0].stats.stop_reason == "toolCalls" and "<tool_call>" not in rounds[0].content


def test_act_with_two_python_tools_over_several_rounds(sdk):
    calls = []

    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        calls.append(("weather", city))
        return "18C and sunny"

    def get_time(city: str) -> str:
        """Get the current local time in a city."""
        calls.append(("time", city))
        return "14:05"

    result = sdk.llm.model(TOOL_MODEL).act("What is the weather in Paris? Then tell me the local time in Paris.",
                                           [get_weather, get_time], max_prediction_rounds=3,
                                           config={"temperature": 0, "maxTokens": 80})
    assert result.rounds >= 2 and {name for name, _city in calls} == {"weather", "time"}
    assert all(city == "Paris" for _name, city in calls)


def test_a_draft_model_reports_lm_studios_draft_stats(sdk):
    stats = sdk.llm.model(CHAT_MODEL).respond("Write a short story about a cat.", config={
        "draftModel": CHAT_MODEL, "temperature": 0, "maxTokens": 24}).stats
    assert stats.used_draft_model_key == CHAT_MODEL and stats.accepted_draft_tokens_count > 0
    assert stats.total_draft_tokens_count == stats.accepted_draft_tokens_count + stats.rejected_draft_tokens_count \
        + stats.ignored_draft_tokens_count


def test_an_unknown_model_raises_the_sdks_error(sdk):
    with pytest.raises(lmstudio.LMStudioServerError, match="no/such-model"):
        sdk.llm.model("no/such-model")
    with pytest.raises(lmstudio.LMStudioServerError, match="embedding model"):
        sdk.embedding.model(CHAT_MODEL)  # an LLM in the embedding namespace: domain mismatch


def test_get_or_load_sends_load_progress_then_embeddings(served, sdk):
    """A JIT load over raw frames (startLoading, loadProgress, loadSuccess before channelClose) and unloads;
    then the SDK's own getOrLoad loads the model again and embeds one string and a batch."""
    with authenticated(served, "embedding") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listLoaded", "callId": 1}))
        loaded = frame(ws)["result"]
        for number, instance in enumerate(loaded, start=2):  # start from nothing loaded
            ws.send(json.dumps({"type": "rpcCall", "endpoint": "unloadModel", "callId": number,
                                "parameter": {"identifier": instance["identifier"]}}))
            assert frame(ws) == {"type": "rpcResult", "callId": number}
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "getOrLoad", "channelId": 1, "creationParameter": {
            "identifier": EMBEDDING_MODEL, "loadTtlMs": 600000,
            "loadConfigStack": {"layers": [{"layerName": "apiOverride", "config": {"fields": []}}]}}}))
        messages = []
        while (received := frame(ws))["type"] == "channelSend":
            messages.append(received["message"])
        assert received == {"type": "channelClose", "channelId": 1}
        kinds = [m["type"] for m in messages]
        assert kinds[0] == "startLoading" and kinds[-1] == "loadSuccess"
        assert set(kinds[1:-1]) == {"loadProgress"} and messages[-2]["progress"] == 1.0
        info = messages[-1]["info"]
        assert info["type"] == "embedding" and info["ttlMs"] == 600000 and info["instanceReference"]
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "unloadModel", "callId": 99,
                            "parameter": {"identifier": "never-loaded"}}))
        error = frame(ws)
        assert error["type"] == "rpcError" and error["error"]["displayData"]["code"] == "generic.identifierNotFound"
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "unloadModel", "callId": 100,
                            "parameter": {"identifier": info["identifier"]}}))
        assert frame(ws) == {"type": "rpcResult", "callId": 100}
    assert sdk.embedding.list_loaded() == []
    model = sdk.embedding.model(EMBEDDING_MODEL)  # the SDK's own getOrLoad loads it again (JIT)
    assert [m.identifier for m in sdk.embedding.list_loaded()] == [model.identifier]
    vector = model.embed("a cat")
    assert len(vector) == 384 and abs(sum(x * x for x in vector) - 1) < 1e-3
    batch = model.embed(["a cat", "a dog"])
    assert len(batch) == 2 and batch[0] == pytest.approx(vector, abs=1e-5)


def test_tokenize_and_count_tokens_match_llama_cpps_tokenizer(sdk):
    import llama_cpp

    from lms.store.catalog import bundled_model_file

    vocab = llama_cpp.Llama(model_path=str(bundled_model_file()), vocab_only=True, verbose=False)
    model = sdk.llm.model(CHAT_MODEL)
    text = "Hello, world! Tokenize this."
    tokens = model.tokenize(text)
    assert list(tokens) == vocab.tokenize(text.encode(), add_bos=True, special=True)
    assert model.count_tokens(text) == len(tokens) > 0
    batch = model.tokenize(["a cat", text])
    assert len(batch) == 2 and list(batch[1]) == list(tokens)
    assert list(batch[0]) == vocab.tokenize(b"a cat", add_bos=True, special=True)


def test_apply_prompt_template_renders_the_models_chat_template(sdk, chat_model):
    model = sdk.llm.model(chat_model)
    chat = lmstudio.Chat("You are terse.")
    chat.add_user_message("What is the capital of France?")
    formatted = model.apply_prompt_template(chat)
    # SmolLM2's ChatML template: the system turn, the user turn, then the assistant's turn opened
    assert "<|im_start|>system\nYou are terse.<|im_end|>" in formatted
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in formatted
    assert formatted.rstrip().endswith("<|im_start|>assistant")
    assert model.count_tokens(formatted) > model.count_tokens("What is the capital of France?")


def test_tokenize_on_mlx_is_mlx_lms_tokenizer(sdk, mlx_model):
    model = sdk.llm.model(mlx_model)
    tokens = model.tokenize("Hello, world!")
    gguf = sdk.llm.model(CHAT_MODEL).tokenize("Hello, world!")
    assert list(tokens) == list(gguf)[-len(tokens):]  # the same vocabulary; llama.cpp may add a BOS first
    assert model.count_tokens("Hello, world!") == len(tokens) > 0


def test_embedding_models_tokenize_and_count(sdk):
    model = sdk.embedding.model(EMBEDDING_MODEL)
    tokens = model.tokenize("a cat sat")
    assert len(tokens) >= 3 and all(isinstance(t, int) for t in tokens)
    assert model.count_tokens("a cat sat") == len(tokens)
    assert [list(t) for t in model.tokenize(["a cat sat", "a dog"])][0] == list(tokens)


def test_apply_prompt_template_is_refused_raw_on_the_embedding_namespace(served):
    with authenticated(served, "embedding") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "applyPromptTemplate", "callId": 1, "parameter": {}}))
        assert frame(ws)["type"] == "communicationWarning"
        assert frame(ws)["type"] == "rpcError"
    with authenticated(served, "llm") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "tokenize", "callId": 2,
                            "parameter": {"specifier": {"type": "query", "query": {"identifier": CHAT_MODEL}}}}))
        error = frame(ws)
        assert error["type"] == "rpcError" and error["error"]["errorData"]["param"] == "inputString"


def test_load_new_instance_with_config_then_unload(served, sdk):
    model = sdk.llm.load_new_instance(CHAT_MODEL, "sdk-second", ttl=600, config={"contextLength": 1024})
    try:
        assert model.identifier == "sdk-second" and model.get_context_length() == 1024
        assert {m["identifier"]: m["ttlMs"] for m in served.json("ps")}["sdk-second"] == 600000
        assert "sdk-second" in [m.identifier for m in sdk.llm.list_loaded()]
        assert model.respond("Hi", config={"maxTokens": 4}).stats.predicted_tokens_count >= 1
    finally:
        sdk.llm.unload("sdk-second")
    assert "sdk-second" not in [m.identifier for m in sdk.llm.list_loaded()]


def test_load_config_parallel_sessions_over_raw_frames(served):
    with authenticated(served, "llm") as ws:
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "loadModel", "channelId": 1, "creationParameter": {
            "modelKey": CHAT_MODEL, "identifier": "two-slots", "loadConfigStack": {"layers": [
                {"layerName": "apiOverride", "config": {"fields": [
                    {"key": "llm.load.contextLength", "value": 1024},
                    {"key": "llm.load.numParallelSessions", "value": 2}]}}]}}}))
        while (received := frame(ws))["type"] == "channelSend":
            pass
        assert received == {"type": "channelClose", "channelId": 1}
        try:
            assert {m["identifier"]: m["parallel"] for m in served.json("ps")}["two-slots"] == 2
            ws.send(json.dumps({"type": "rpcCall", "endpoint": "getLoadConfig", "callId": 2, "parameter": {
                "specifier": {"type": "query", "query": {"identifier": "two-slots"}}}}))
            fields = {f["key"]: f["value"] for f in frame(ws)["result"]["fields"]}
            assert fields == {"llm.load.contextLength": 1024, "llm.load.numParallelSessions": 2}
        finally:
            ws.send(json.dumps({"type": "rpcCall", "endpoint": "unloadModel", "callId": 3,
                                "parameter": {"identifier": "two-slots"}}))
            assert frame(ws) == {"type": "rpcResult", "callId": 3}


def test_unknown_endpoints_get_a_warning_and_an_error(served):
    with authenticated(served, "llm") as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "noSuchEndpoint", "callId": 1}))
        assert frame(ws)["type"] == "communicationWarning"
        assert frame(ws)["type"] == "rpcError"


def test_a_foreign_origin_is_refused_on_sdk_namespaces(served):
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(served, "llm"), open_timeout=10, additional_headers={"Origin": "https://evil.example"})
    assert refused.value.response.status_code == 403


@pytest.fixture(scope="module")
def tokened(tmp_path_factory):
    """A daemon with an API token and no model loaded."""
    lms = Lms(home=tmp_path_factory.mktemp("sdk-tokens") / "home", port=free_port())
    lms.home.mkdir(parents=True)
    token = json.loads(lms.run("server", "token", "create", "app", "--json").stdout)["token"]
    lms.run("server", "start", "-p", str(lms.port))
    yield lms, token
    lms.stop()


def test_with_a_token_guests_are_refused_in_lm_studios_words(tokened):
    lms, token = tokened
    refused = refusal(lms, GUEST)
    assert refused["success"] is False
    assert refused["error"].startswith("An LM Studio API token is required to make requests to this server, "
                                       "but none was provided.")
    identifier, passkey = token.removeprefix("sk-lm-").split(":")
    wrong = refusal(lms, {**GUEST, "clientIdentifier": identifier, "clientPasskey": "x" * 20})
    assert wrong["success"] is False and "not valid" in wrong["error"]
    with authenticated(lms, "system", {**GUEST, "clientIdentifier": identifier, "clientPasskey": passkey}) as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "listDownloadedModels", "callId": 1}))
        assert frame(ws)["type"] == "rpcResult"
    with authenticated(lms, "llm", {**GUEST, "clientIdentifier": identifier, "clientPasskey": passkey}) as ws:
        ws.send(json.dumps({"type": "rpcCall", "endpoint": "unloadModel", "callId": 1,
                            "parameter": {"identifier": "anything"}}))
        error = frame(ws)  # an inference token may not unload (nor load), as over HTTP
        assert error["type"] == "rpcError" and error["error"]["errorData"]["code"] == "insufficient_scope"
        ws.send(json.dumps({"type": "channelCreate", "endpoint": "loadModel", "channelId": 1,
                            "creationParameter": {"modelKey": CHAT_MODEL}}))
        error = frame(ws)
        assert error["type"] == "channelError" and error["error"]["errorData"]["code"] == "insufficient_scope"


def test_the_sdk_without_a_token_cannot_use_a_server_that_needs_one(tokened):
    lms, _ = tokened
    # 1.5.0 cannot show a refusal (it crashes on the error string, as it does with LM Studio); 1.6 shows it
    with pytest.raises(ValueError, match="dictionary update sequence"):
        with lmstudio.Client(f"127.0.0.1:{lms.port}") as client:
            client.list_downloaded_models()
