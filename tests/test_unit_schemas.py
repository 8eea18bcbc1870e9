"""Unit tests of the OpenAI-compatible request bodies, their translation to the internal request, and the
mapping of validation errors to OpenAI-shaped 400 errors."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from lms.api.errors import error_body, error_response, error_type, from_validation, status_of
from lms.api.openai.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from lms.errors import LmsError
from lms.generation.request import IMAGE_MARKER, GenerationRequest, Sampling
from lms.pipeline.pipeline import chat_request, completion_request

USER = {"role": "user", "content": "Hi"}


def request_of(body) -> GenerationRequest:
    """What the pipeline builds from a surface's body (before a model adds its template's needs)."""
    if isinstance(body, CompletionBody):
        return completion_request(body.to_input())
    return chat_request(body.to_input())[0]


def chat(**fields) -> ChatCompletionBody:
    return ChatCompletionBody.model_validate({"model": "m", "messages": [USER], **fields})


def validation_error(body_class, data: dict) -> LmsError:
    with pytest.raises(ValidationError) as caught:
        body_class.model_validate(data)
    return from_validation(caught.value)


# --- validation errors -> LmsError (lms/api/errors.py) -----------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"temperature": 3}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"n": 2}, "n"),
    ({"n": 0}, "n"),
    ({"logit_bias": {"hello": 1}}, "logit_bias"),
    ({"logit_bias": {"42": 101}}, "logit_bias"),
    ({"max_tokens": -2}, "max_tokens"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"ttl": 0}, "ttl"),
    ({"stop": [str(i) for i in range(17)]}, "stop"),
    ({"temperature": "warm"}, "temperature"),
])
def test_bad_chat_parameter_is_a_400_invalid_value_naming_the_parameter(fields, param):
    error = validation_error(ChatCompletionBody, {"model": "m", "messages": [USER], **fields})

    assert status_of(error) == 400
    assert error.param == param
    assert error.code == "invalid_value"
    assert error_type(error) == "invalid_request_error"
    assert error.message.startswith(f"Invalid value for '{param}': ")


def test_missing_messages_is_a_missing_required_parameter():
    error = validation_error(ChatCompletionBody, {"model": "m"})

    assert (status_of(error), error.param, error.code) == (400, "messages", "missing_required_parameter")
    assert error.message == "'messages' is required"


def test_empty_messages_is_an_invalid_value():
    error = validation_error(ChatCompletionBody, {"model": "m", "messages": []})

    assert (status_of(error), error.param, error.code) == (400, "messages", "invalid_value")


def test_a_bad_role_names_the_nested_location():
    error = validation_error(ChatCompletionBody, {"messages": [USER, {"role": "robot", "content": "beep"}]})

    assert (error.param, error.code) == ("messages.1.role", "invalid_value")


def test_a_message_without_role_is_missing_a_required_parameter():
    error = validation_error(ChatCompletionBody, {"messages": [{"content": "no role"}]})

    assert (error.param, error.code) == ("messages.0.role", "missing_required_parameter")


def test_several_problems_are_counted_in_the_message():
    error = validation_error(ChatCompletionBody, {"messages": [USER], "temperature": 3, "top_p": 2, "n": 5})

    assert error.message.endswith("(and 2 more problems)")


def test_missing_prompt_in_a_completion():
    error = validation_error(CompletionBody, {"model": "m"})

    assert (status_of(error), error.param, error.code) == (400, "prompt", "missing_required_parameter")


def test_missing_input_in_an_embedding():
    error = validation_error(EmbeddingBody, {"model": "m"})

    assert (status_of(error), error.param, error.code) == (400, "input", "missing_required_parameter")


def test_bad_encoding_format_in_an_embedding():
    error = validation_error(EmbeddingBody, {"input": "x", "encoding_format": "int8"})

    assert (error.param, error.code) == ("encoding_format", "invalid_value")


def test_error_response_has_the_openai_error_shape():
    error = validation_error(ChatCompletionBody, {"messages": [USER], "temperature": 3})

    response = error_response(error)

    assert response.status_code == 400
    assert json.loads(response.body) == {"error": {"message": error.message, "type": "invalid_request_error",
                                                   "param": "temperature", "code": "invalid_value"}}


def test_error_body_shape():
    assert error_body("m", "t") == {"error": {"message": "m", "type": "t", "param": None, "code": None}}


# --- valid bodies and to_request() ---------------------------------------------------------------------------


def test_extra_fields_are_ignored():
    body = chat(user="someone", parallel_tool_calls=False, n=1)

    assert body.n == 1


def test_minimal_chat_request_uses_default_sampling():
    request = request_of(chat())

    assert isinstance(request, GenerationRequest)
    assert request.messages == [{"role": "user", "content": "Hi"}]
    assert request.sampling == Sampling()
    assert request.max_tokens is None
    assert request.stop == []
    assert request.json_schema is None and request.json_object is False
    assert request.tools is None


def test_sampling_parameters_are_carried_over():
    sampling = request_of(chat(temperature=0, top_p=0.5, top_k=7, min_p=0.1, repeat_penalty=1.3, presence_penalty=-1,
                    frequency_penalty=1, seed=42, logit_bias={"15": -100, "-1": 5})).sampling

    assert sampling == Sampling(temperature=0, top_p=0.5, top_k=7, min_p=0.1, repeat_penalty=1.3,
                                presence_penalty=-1, frequency_penalty=1, seed=42,
                                logit_bias={"15": -100, "-1": 5})


def test_a_stop_string_becomes_a_list():
    assert request_of(chat(stop="\n")).stop == ["\n"]
    assert request_of(chat(stop=["a", "b"])).stop == ["a", "b"]
    assert request_of(chat(stop=None)).stop == []


@pytest.mark.parametrize(("max_tokens", "expected"), [(-1, None), (None, None), (0, 0), (64, 64)])
def test_max_tokens(max_tokens, expected):
    assert request_of(chat(max_tokens=max_tokens)).max_tokens == expected


def test_max_completion_tokens_overrides_max_tokens():
    assert request_of(chat(max_tokens=100, max_completion_tokens=5)).max_tokens == 5
    assert request_of(chat(max_completion_tokens=7)).max_tokens == 7
    assert request_of(chat(max_tokens=100, max_completion_tokens=-1)).max_tokens == 100


def test_json_schema_response_format_sets_the_schema():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}

    request = request_of(chat(response_format={"type": "json_schema",
                                    "json_schema": {"name": "reply", "strict": True, "schema": schema}}))

    assert request.json_schema == schema
    assert request.json_object is False


def test_json_schema_response_format_without_schema_is_a_400():
    with pytest.raises(LmsError) as caught:
        request_of(chat(response_format={"type": "json_schema"}))

    assert (status_of(caught.value), caught.value.param) == (400, "response_format.json_schema")
    assert caught.value.code == "missing_required_parameter"


def test_json_object_response_format_sets_json_object():
    request = request_of(chat(response_format={"type": "json_object"}))

    assert request.json_object is True
    assert request.json_schema is None


def test_text_response_format_changes_nothing():
    request = request_of(chat(response_format={"type": "text"}))

    assert request.json_object is False and request.json_schema is None


def test_unknown_response_format_type_is_rejected():
    error = validation_error(ChatCompletionBody, {"messages": [USER], "response_format": {"type": "yaml"}})

    assert (error.param, error.code) == ("response_format.type", "invalid_value")


def test_developer_role_becomes_system():
    request = request_of(chat(messages=[{"role": "developer", "content": "Rules"}, USER]))

    assert request.messages[0] == {"role": "system", "content": "Rules"}


def test_text_content_parts_are_joined():
    request = request_of(chat(messages=[{"role": "user", "content": [{"type": "text", "text": "Hello, "},
                                                          {"type": "text", "text": "world"},
                                                          {"type": "text"}]}]))

    assert request.messages == [{"role": "user", "content": "Hello, world"}]


def test_an_image_content_part_becomes_a_marker_and_a_url():
    body = chat(messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])

    assert request_of(body).messages[0]["content"] == "What is this?" + IMAGE_MARKER
    assert body.messages[0].image_urls() == ["data:image/png;base64,AAAA"]


def test_an_audio_content_part_is_a_400():
    body = chat(messages=[{"role": "user", "content": [{"type": "input_audio", "text": "x"}]}])

    with pytest.raises(LmsError) as caught:
        request_of(body)

    assert (status_of(caught.value), caught.value.param, caught.value.code) == (400, "messages", "unsupported_content")
    assert error_type(caught.value) == "invalid_request_error"


def test_tool_messages_keep_their_extra_fields_and_missing_content_becomes_empty():
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = request_of(chat(messages=[USER, {"role": "assistant", "content": None, "tool_calls": [tool_call]},
                             {"role": "tool", "tool_call_id": "call_1", "content": "42"}],
                   tools=[{"type": "function", "function": {"name": "f"}}]))

    assert request.messages[1] == {"role": "assistant", "content": "", "tool_calls": [tool_call]}
    assert request.messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    assert request.tools == [{"type": "function", "function": {"name": "f", "description": "",
                                                               "parameters": {"type": "object"}}}]


def test_include_usage_follows_stream_options():
    assert chat().include_usage is False
    assert chat(stream=True, stream_options={"include_usage": True}).include_usage is True


def test_request_survives_the_json_round_trip_to_a_worker():
    request = request_of(chat(stop="x", seed=3, response_format={"type": "json_object"}))

    assert GenerationRequest.from_dict(json.loads(json.dumps(request.to_dict()))) == request


def test_completion_request_from_a_string_prompt():
    request = request_of(CompletionBody.model_validate({"prompt": "Once upon", "max_tokens": -1, "stop": "\n",
                                             "temperature": 0.2}))

    assert request.prompt == "Once upon"
    assert request.messages is None
    assert request.max_tokens is None
    assert request.stop == ["\n"]
    assert request.sampling.temperature == 0.2


def test_completion_prompt_list_of_one_is_unwrapped():
    assert request_of(CompletionBody.model_validate({"prompt": ["only one"]})).prompt == "only one"


@pytest.mark.parametrize("prompt", [["one", "two"], []])
def test_completion_prompt_list_of_other_length_is_a_400(prompt):
    with pytest.raises(LmsError) as caught:
        request_of(CompletionBody.model_validate({"prompt": prompt}))

    assert (status_of(caught.value), caught.value.param, caught.value.code) == (400, "prompt", "invalid_value")


def test_completion_validates_shared_sampling_parameters():
    error = validation_error(CompletionBody, {"prompt": "x", "temperature": 3})

    assert (status_of(error), error.param, error.code) == (400, "temperature", "invalid_value")


# --- EmbeddingBody.inputs() ----------------------------------------------------------------------------------


def test_embedding_inputs_from_a_string_and_a_list():
    assert EmbeddingBody.model_validate({"input": "hello"}).inputs() == ["hello"]
    assert EmbeddingBody.model_validate({"input": ["a", "b"]}).inputs() == ["a", "b"]


@pytest.mark.parametrize("value", [[], [""], ["ok", ""], ""])
def test_embedding_inputs_rejects_empty_input(value):
    body = EmbeddingBody.model_validate({"input": value})

    with pytest.raises(LmsError) as caught:
        body.inputs()

    assert (status_of(caught.value), caught.value.param, caught.value.code) == (400, "input", "invalid_value")


def test_embedding_dimensions_must_be_positive():
    error = validation_error(EmbeddingBody, {"input": "x", "dimensions": 0})

    assert (error.param, error.code) == ("dimensions", "invalid_value")


@pytest.mark.parametrize("key", ["--5", "²"])
def test_logit_bias_keys_that_are_not_integers_are_rejected(key):
    with pytest.raises(ValidationError):
        chat(logit_bias={key: 1})
