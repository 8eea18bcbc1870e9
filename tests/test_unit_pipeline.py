"""Unit tests of the request pipeline (lms/pipeline) over the real manager and a fake worker: presets, tools for
templates that know them and ones that do not, forced calls, truncation, the vision check, parsing into tool
calls, and usage. What the worker receives is the typed request, after a JSON round trip."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lms.errors import Kind, LmsError
from lms.generation.request import GenerationRequest
from lms.manager.models import ModelManager
from lms.pipeline import ChatInput, CompletionInput, Pipeline
from lms.pipeline.pipeline import drop_oldest_turn
from lms.settings import Settings
from tests.fake_worker import Spawner, hello
from tests.gguf_files import CHATML_WITH_TOOLS, write_gguf

TOOLS_MODEL, PLAIN_MODEL = "pub/tools", "pub/plain"
PLAIN_TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
WEATHER = {"name": "weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LMS_HOME", str(tmp_path))
    for repo, template in (("Tools", CHATML_WITH_TOOLS), ("Plain", PLAIN_TEMPLATE)):  # a template per tool style
        write_gguf(tmp_path / "models" / "Pub" / f"{repo}-GGUF" / f"{repo.lower()}-Q4_K_M.gguf", chat_template=template)
    presets = tmp_path / "config-presets"
    presets.mkdir()
    (presets / "terse.preset.json").write_text(json.dumps(
        {"system_prompt": "Be terse.", "temperature": 0, "top_k": 5, "max_tokens": 5, "stop": ["\n\n"]}))
    return tmp_path


def run(chat: ChatInput, reply=hello):
    """Start and collect one chat; returns the outcome and every request the worker received."""
    async def scenario():
        spawner = Spawner(reply)
        pipeline = Pipeline(ModelManager(Settings(), spawn_worker=spawner))
        generation = await pipeline.chat(chat)
        outcome = await generation.collect()
        requests = [GenerationRequest.from_dict(payload["request"]) for worker in spawner.workers
                    for op, payload in worker.calls if op == "generate"]
        return outcome, requests

    return asyncio.run(scenario())


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_a_preset_fills_in_what_the_request_does_not_say():
    _, [request] = run(ChatInput(model=TOOLS_MODEL, messages=[user("Hi")], sampling={"temperature": 0.7},
                                 preset="terse"))
    assert request.messages[0] == {"role": "system", "content": "Be terse."}
    assert (request.sampling.temperature, request.sampling.top_k) == (0.7, 5)  # the request's own value wins
    assert (request.max_tokens, request.stop) == (5, ["\n\n"])


def test_a_preset_keeps_the_requests_own_system_message():
    _, [request] = run(ChatInput(model=TOOLS_MODEL, messages=[{"role": "system", "content": "Mine."}, user("Hi")],
                                 max_tokens=9, preset="terse"))
    assert [m["content"] for m in request.messages] == ["Mine.", "Hi"] and request.max_tokens == 9


def test_an_unknown_preset_is_not_found():
    with pytest.raises(LmsError) as caught:
        run(ChatInput(model=TOOLS_MODEL, messages=[user("Hi")], preset="nope"))
    assert (caught.value.kind, caught.value.code, caught.value.param) == (Kind.NOT_FOUND, "preset_not_found",
                                                                            "preset")


def test_tools_go_to_a_template_that_knows_them_and_are_described_to_one_that_does_not():
    _, [templated] = run(ChatInput(model=TOOLS_MODEL, messages=[user("Weather in Paris?")], tools=[WEATHER]))
    assert templated.tools[0]["function"]["name"] == "weather"
    assert templated.messages == [user("Weather in Paris?")]
    _, [described] = run(ChatInput(model=PLAIN_MODEL, messages=[user("Weather in Paris?")], tools=[WEATHER]))
    assert described.messages[0]["role"] == "system" and '"name": "weather"' in described.messages[0]["content"]


def test_a_forced_call_is_a_grammar_that_takes_the_output_formats_place():
    chat = ChatInput(model=PLAIN_MODEL, messages=[user("Weather in Paris?")], tools=[WEATHER],
                     tool_choice={"type": "function", "name": "weather"}, json_object=True)
    _, [request] = run(chat)
    assert request.format_param == "tools" and not request.json_object
    assert request.json_schema["properties"]["name"] == {"const": "weather"}
    assert request.messages == [user("Weather in Paris?")]  # the grammar holds the tool: no description


def test_an_unknown_function_in_tool_choice_is_invalid():
    with pytest.raises(LmsError) as caught:
        run(ChatInput(model=TOOLS_MODEL, messages=[user("Hi")], tools=[WEATHER],
                      tool_choice={"type": "function", "name": "nope"}))
    assert (caught.value.kind, caught.value.param) == (Kind.INVALID, "tool_choice")


def test_a_call_in_the_output_is_parsed_and_ends_the_turn_with_tool_calls():
    def call(_request):
        return [{"type": "text", "text": '<tool_call>\n{"name": "weather", "arguments": {"city": "Paris"}}\n'},
                {"type": "text", "text": "</tool_call>"},
                {"type": "done", "finish_reason": "stop", "stats": {},
                 "usage": {"prompt_tokens": 12, "completion_tokens": 20, "cached_tokens": 4}}]

    outcome, _ = run(ChatInput(model=PLAIN_MODEL, messages=[user("Weather in Paris?")], tools=[WEATHER]), call)
    assert outcome.finish_reason == "tool_calls" and outcome.text == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in outcome.tool_calls] == [("weather", {"city": "Paris"})]
    assert (outcome.usage.prompt_tokens, outcome.usage.cached_tokens, outcome.usage.total_tokens) == (12, 4, 32)


def too_long_beyond(limit: int):
    def reply(request: GenerationRequest):
        if len(request.messages) > limit:
            raise LmsError.invalid("The prompt does not fit.", "messages", code="context_length_exceeded")
        return hello(request)

    return reply


def test_truncation_drops_the_oldest_turns_until_the_conversation_fits():
    messages = [{"role": "system", "content": "S"}, user("one"), {"role": "assistant", "content": "two"},
                user("three")]
    outcome, requests = run(ChatInput(model=TOOLS_MODEL, messages=messages, truncate=True), too_long_beyond(2))
    assert [len(r.messages) for r in requests] == [4, 3, 2]
    assert requests[-1].messages == [{"role": "system", "content": "S"}, user("three")]
    assert outcome.text == "Hello"
    with pytest.raises(LmsError) as caught:
        run(ChatInput(model=TOOLS_MODEL, messages=messages), too_long_beyond(2))
    assert caught.value.code == "context_length_exceeded"


def test_truncation_never_drops_system_image_or_last_messages():
    marker = {"role": "user", "content": "<__lms_image__> what is this?"}
    assert drop_oldest_turn([{"role": "system", "content": "S"}, marker, user("last")]) is None
    assert drop_oldest_turn([user("old"), user("last")]) == [user("last")]


def test_images_need_a_model_that_sees():
    with pytest.raises(LmsError) as caught:
        run(ChatInput(model=TOOLS_MODEL, messages=[{"role": "user", "content": "<__lms_image__>"}],
                      image_urls=["data:image/png;base64,AAAA"]))
    assert (caught.value.kind, caught.value.code, caught.value.param) == (Kind.INVALID, "model_not_supported",
                                                                            "messages")


def test_a_completion_is_the_prompt_as_it_is():
    async def scenario():
        spawner = Spawner()
        pipeline = Pipeline(ModelManager(Settings(), spawn_worker=spawner))
        generation = await pipeline.completion(CompletionInput(model=PLAIN_MODEL, prompt="Once", max_tokens=3,
                                                               sampling={"seed": 7}))
        return await generation.collect(), generation.request

    outcome, request = asyncio.run(scenario())
    assert (request.prompt, request.messages, request.max_tokens, request.sampling.seed) == ("Once", None, 3, 7)
    assert outcome.text == "Hello" and outcome.usage.completion_tokens == 1


@pytest.mark.parametrize("name", ["/etc/passwd", "../settings", "a/b", "..", ".hidden", "x" * 200, ""])
def test_a_preset_name_cannot_reach_outside_config_presets(home, name):
    (home / "settings.json").write_text("{}")
    with pytest.raises(LmsError) as caught:
        run(ChatInput(model=TOOLS_MODEL, messages=[user("Hi")], preset=name or "\n"))
    assert (caught.value.kind, caught.value.code, caught.value.param) == (Kind.INVALID, "invalid_preset", "preset")


def test_tokenize_and_render_prompt_pass_through_to_the_models_worker():
    async def scenario():
        spawner = Spawner()
        pipeline = Pipeline(ModelManager(Settings(), spawn_worker=spawner))
        model = await pipeline.model("pub/tools")
        return (await pipeline.tokenize(model, "ok"), await pipeline.render_prompt(model, [user("Hi")]),
                [op for op, _ in spawner.workers[0].calls])

    tokens, text, ops = asyncio.run(scenario())

    assert tokens == [111, 107] and text == "<user>Hi<assistant>"
    assert ops == ["load", "tokenize", "render_prompt"]
