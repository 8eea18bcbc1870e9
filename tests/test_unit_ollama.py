"""Ollama's conventions on plain data: keep_alive durations, names, the Go template subset, body translation."""

from __future__ import annotations

import pytest

from lms.api.ollama.keep_alive import FOREVER, jit_ttl, keep_alive_seconds
from lms.api.ollama.names import query_of
from lms.api.ollama.schemas import ChatBody, GenerateBody
from lms.api.ollama.template import render
from lms.errors import LmsError
from lms.generation.request import IMAGE_MARKER


@pytest.mark.parametrize(("given", "seconds"), [
    (None, None), (0, 0), ("0", 0), (300, 300), (1.5, 1.5), ("5m", 300), ("1h30m", 5400), ("300ms", 0.3),
    ("90s", 90), ("-1", FOREVER), (-5, FOREVER), ("-1m", FOREVER), ("2.5h", 9000), ("120", 120),
])
def test_keep_alive_durations(given, seconds):
    assert keep_alive_seconds(given) == pytest.approx(seconds) if seconds is not None else \
        keep_alive_seconds(given) is None


@pytest.mark.parametrize("given", ["soon", "5 m", "m5", "", "1x", True, [1], {"m": 5}])
def test_bad_keep_alive_is_refused(given):
    with pytest.raises(LmsError) as refused:
        keep_alive_seconds(given)
    assert refused.value.param == "keep_alive"


def test_jit_ttl_follows_keep_alive():
    assert jit_ttl(None) == 300 and jit_ttl(0.2) == 1 and jit_ttl(90) == 90
    assert jit_ttl(FOREVER) is None and jit_ttl(0) is None


@pytest.mark.parametrize(("name", "query"), [
    ("huggingfacetb/smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"),
    ("huggingfacetb/smollm2-135m-instruct:latest", "huggingfacetb/smollm2-135m-instruct"),
    ("huggingfacetb/smollm2-135m-instruct:Q8_0", "huggingfacetb/smollm2-135m-instruct@q8_0"),
    ("hf.co/HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M", "huggingfacetb/smollm2-135m-instruct@q4_k_m"),
    ("https://huggingface.co/Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF", "qwen/qwen2.5-coder-0.5b-instruct"),
    ("smollm2", "smollm2"),
])
def test_ollama_names_map_to_catalog_queries(name, query):
    assert query_of(name) == query


def test_go_template_subset():
    template = ("{{- if .System }}<s>{{ .System }}</s>\n{{ end -}}\n<u>{{ .Prompt }}</u>{{ if .Suffix }}[{{ .Suffix }}]"
                "{{ else }}<a>{{ end }}{{/* comment */}}")
    assert render(template, {"System": "be brief", "Prompt": "hi"}) == "<s>be brief</s>\n<u>hi</u><a>"
    assert render(template, {"Prompt": "hi", "Suffix": "end"}) == "<u>hi</u>[end]"
    for bad in ["{{ range .Messages }}{{ end }}", "{{ .Messages }}", "{{ if .System }}x", "{{ end }}",
                "{{ if and .System .Prompt }}{{ end }}"]:
        with pytest.raises(LmsError) as refused:
            render(bad, {})
        assert refused.value.param == "template"


def test_chat_body_translation():
    body = ChatBody.model_validate({
        "model": "m", "format": "json", "think": False, "logprobs": True, "top_logprobs": 3,
        "options": {"num_predict": 20, "temperature": 0.2, "top_k": 5, "seed": 7, "stop": "END", "num_gpu": 99},
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "look", "images": ["aGk="]},
                     {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f",
                                                                                       "arguments": {"x": 1}}}]},
                     {"role": "tool", "tool_name": "f", "content": "42"}]})
    chat = body.to_input("m", None)
    assert chat.sampling == {"temperature": 0.2, "top_k": 5, "seed": 7} and chat.max_tokens == 20
    assert chat.stop == ["END"] and chat.json_object and chat.reasoning_effort == "none" and chat.logprobs == 3
    assert chat.messages[0]["content"] == IMAGE_MARKER + "look"
    assert chat.image_urls == ["data:image/*;base64,aGk="]
    call = chat.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert chat.messages[2]["tool_call_id"] == call["id"] and chat.messages[2]["name"] == "f"
    assert [tool["name"] for tool in chat.tools] == ["f"]
    assert ChatBody.model_validate({"model": "m", "options": {"num_predict": -1}}).to_input("m", None).max_tokens \
        is None
    assert ChatBody.model_validate({"model": "m", "think": "high"}).to_input("m", None).reasoning_effort == "high"
    schema = {"type": "object"}
    assert ChatBody.model_validate({"model": "m", "format": schema}).to_input("m", None).json_schema == schema
    with pytest.raises(LmsError):
        ChatBody.model_validate({"model": "m", "format": "yaml"}).to_input("m", None)


def test_generate_body_translation():
    body = GenerateBody.model_validate({"model": "m", "prompt": "p", "system": "s", "images": ["aGk="]})
    chat = body.chat_input("m", None)
    assert chat.messages == [{"role": "system", "content": "s"}, {"role": "user", "content": IMAGE_MARKER + "p"}]
    fill = GenerateBody.model_validate({"model": "m", "prompt": "a", "suffix": "b", "options": {"num_predict": 3}})
    completion = fill.completion_input("m", None, "a")
    assert completion.suffix == "b" and completion.max_tokens == 3
    with pytest.raises(LmsError):
        GenerateBody.model_validate({"model": "m", "prompt": "a", "format": "json"}).completion_input("m", None, "a")
