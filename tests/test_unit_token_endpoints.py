"""The pure parts of the token endpoints and of /api/v1/chat's invalid tool calls: llama-server's piece shape,
the tokenize answer, the schema check of a call's arguments and the invalid_tool_call items."""

from __future__ import annotations

import pytest

from lms.api.native.chat import _output_item, context_length_of, invalid_arguments
from lms.api.tokenize import tokens_answer
from lms.errors import LmsError
from runtimes.worker import detokenize, piece_value, tokenize

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city"]}


def test_piece_is_text_or_bytes():
    assert piece_value(b" world") == " world"
    assert piece_value("🦙".encode()[:2]) == list("🦙".encode()[:2])
    assert piece_value(b"") == ""


def test_tokens_answer_shapes():
    assert tokens_answer({"tokens": [1, 2]}, False) == {"tokens": [1, 2]}
    assert tokens_answer({"tokens": [1, 2], "pieces": ["a", [240]]}, True) == {
        "tokens": [{"id": 1, "piece": "a"}, {"id": 2, "piece": [240]}]}


class _Engine:
    name = "fake"

    def tokenize(self, text: str, add_special: bool = False) -> list[int]:
        return ([0] if add_special else []) + [ord(c) for c in text]

    def token_pieces(self, tokens):
        return [b"\xf0" if t == 0 else chr(t).encode() for t in tokens]

    def detokenize(self, tokens):
        return "".join(chr(t) for t in tokens)


class _PromptOnly:
    name = "prompt-only"

    def tokenize(self, text: str) -> list[int]:
        return [1, *map(ord, text)]


def test_worker_tokenize_options():
    engine = _Engine()
    assert tokenize(engine, {"text": "ab"}) == {"tokens": [97, 98]}
    assert tokenize(engine, {"text": "ab", "add_special": True, "with_pieces": True}) == {
        "tokens": [0, 97, 98], "pieces": [[240], "a", "b"]}
    assert detokenize(engine, {"tokens": [104, 105]}) == "hi"
    with pytest.raises(LmsError) as error:
        detokenize(engine, {"tokens": [1, "2"]})
    assert error.value.param == "tokens"
    with pytest.raises(LmsError) as error:
        tokenize(_PromptOnly(), {"text": "a", "add_special": False})
    assert error.value.code == "model_not_supported"
    with pytest.raises(LmsError) as error:
        tokenize(_PromptOnly(), {"text": "a", "with_pieces": True})
    assert error.value.param == "with_pieces"
    with pytest.raises(LmsError):
        detokenize(_PromptOnly(), {"tokens": [1]})


def test_invalid_arguments_against_the_schema():
    assert invalid_arguments(SCHEMA, '{"city": "Oslo", "days": 3}') is None
    assert invalid_arguments(None, '{"anything": 1}') is None
    assert "not valid JSON" in invalid_arguments(SCHEMA, '{"city": ')
    assert "not a JSON object" in invalid_arguments(SCHEMA, "[1]")
    assert "'city' is a required property" in invalid_arguments(SCHEMA, '{"days": 3}')
    assert "at 'days'" in invalid_arguments(SCHEMA, '{"city": "Oslo", "days": "three"}')
    assert invalid_arguments({"type": "nonsense"}, "{}") is None  # a schema we cannot read refuses nothing


def test_invalid_tool_call_items():
    unknown = {"type": "function_call", "name": "launch", "arguments": '{"x": 1}', "call_id": "call_1"}
    assert _output_item(unknown, set()) == {
        "type": "invalid_tool_call", "reason": "The model called a tool that this request does not offer: 'launch'.",
        "metadata": {"type": "invalid_name", "tool_name": "launch", "arguments": {"x": 1}}}
    refused = {"type": "mcp_call", "id": "mcp_1", "name": "get_weather", "arguments": '{"days": 3}',
               "server_label": "weather", "output": None, "error": {"message": "bad"}}
    item = _output_item(refused, {"weather"}, {"mcp_1": "The arguments do not match."})
    assert item == {"type": "invalid_tool_call", "reason": "The arguments do not match.",
                    "metadata": {"type": "invalid_arguments", "tool_name": "get_weather", "arguments": {"days": 3},
                                 "provider_info": {"type": "plugin", "plugin_id": "mcp/weather"}}}
    assert _output_item(refused, {"weather"})["type"] == "tool_call"  # a call the server itself failed


def test_context_length_of():
    assert context_length_of({}) is None
    assert context_length_of({"context_length": 4096}) == 4096
    for bad in (0, -1, "4096", True, 1.5):
        with pytest.raises(LmsError):
            context_length_of({"context_length": bad})
