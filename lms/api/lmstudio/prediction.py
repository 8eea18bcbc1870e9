"""A `predict` channel's creation parameter as the pipeline's ChatInput: the chat history (text, tool calls and
their results) and the collapsed prediction config stack (limits, sampling, stop strings, structured output,
tools, preset). With a Jinja prompt template override (what the SDKs' complete() sends) it is a raw
CompletionInput instead: the history rendered through the client's template."""

from __future__ import annotations

import json

from lms.api.lmstudio import frames
from lms.errors import LmsError
from lms.generation.chat_template import TemplateError, render
from lms.pipeline.inputs import ChatInput, CompletionInput

ROLES = ("system", "user", "assistant", "tool")
PREFIX = "llm.prediction."
# KV keys whose value is a checkbox ({"checked", "value"}) -> the pipeline's sampling field
CHECKBOX_SAMPLING = {"topPSampling": "top_p", "minPSampling": "min_p", "repeatPenalty": "repeat_penalty"}
PLAIN_SAMPLING = {"temperature": "temperature", "topKSampling": "top_k"}


def messages_of(history) -> list[dict]:
    """ChatHistoryData as the pipeline's chat messages."""
    if not isinstance(history, dict) or not isinstance(history.get("messages"), list):
        raise LmsError.invalid("'history.messages' must be an array.", "history")
    messages: list[dict] = []
    for index, message in enumerate(history["messages"]):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise LmsError.invalid(f"'history.messages[{index}].role' must be one of {', '.join(ROLES)}.",
                                   "history")
        texts, calls = [], []
        for part in message.get("content") or []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text") or ""))
            elif kind == "toolCallRequest" and role == "assistant":
                request = part.get("toolCallRequest") or {}
                calls.append({"id": request.get("id") or f"call_{index}_{len(calls)}", "type": "function",
                              "function": {"name": request.get("name"),
                                           "arguments": json.dumps(request.get("arguments") or {})}})
            elif kind == "toolCallResult" and role == "tool":
                messages.append({"role": "tool", "tool_call_id": part.get("toolCallId"),
                                 "content": str(part.get("content") or "")})
            else:
                raise LmsError.invalid(f"A {kind!r} part in a {role} message is not supported by this server yet "
                                       "(files and images need the files namespace).", "history",
                                       code="unsupported_content")
        if role != "tool" and (texts or calls):
            entry = {"role": role, "content": "".join(texts)}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    if not messages:
        raise LmsError.invalid("The chat history is empty.", "history")
    return messages


def _tools(value) -> list[dict]:
    if not isinstance(value, dict) or value.get("type") != "toolArray":
        return []
    tools = []
    for tool in value.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            tools.append({"name": function["name"], "description": function.get("description") or "",
                          "parameters": function.get("parameters") or {"type": "object", "properties": {}}})
    return tools


def _config(parameter: dict) -> dict:
    fields = frames.collapse(parameter.get("predictionConfigStack"))
    return {key[len(PREFIX):]: value for key, value in fields.items() if key.startswith(PREFIX)}


def _limits(config: dict) -> tuple[dict, int | None, list[str]]:
    """Sampling, the token limit and the stop strings of a collapsed prediction config."""
    sampling = {field: config[key] for key, field in PLAIN_SAMPLING.items()
                if isinstance(config.get(key), (int, float)) and not isinstance(config.get(key), bool)}
    sampling |= {field: frames.checkbox(config.get(key)) for key, field in CHECKBOX_SAMPLING.items()
                 if frames.checkbox(config.get(key)) is not None}
    max_tokens = frames.checkbox(config.get("maxPredictedTokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise LmsError.invalid("'maxTokens' must be a positive integer.", "llm.prediction.maxPredictedTokens")
    stop = [s for s in config.get("stopStrings") or [] if isinstance(s, str) and s]
    return sampling, max_tokens, stop


def completion_input(parameter: dict, model: str) -> CompletionInput | None:
    """The raw completion a prompt template override asks for; None when the prediction is a chat turn."""
    config = _config(parameter)
    template = config.get("promptTemplate")
    if template is None:
        return None
    jinja = template.get("jinjaPromptTemplate") if isinstance(template, dict) else None
    if not isinstance(template, dict) or template.get("type") != "jinja" or not isinstance(jinja, dict) \
            or not isinstance(jinja.get("template"), str):
        raise LmsError.invalid("Only a Jinja prompt template override is supported.", "llm.prediction.promptTemplate",
                               code="unsupported_config")
    try:
        prompt = render(jinja["template"], messages_of(parameter.get("history")),
                        bos_token=jinja.get("bosToken") or "", eos_token=jinja.get("eosToken") or "")
    except (TemplateError, ValueError, LookupError, TypeError) as exc:
        raise LmsError.invalid(f"The prompt template does not render: {exc}", "llm.prediction.promptTemplate") \
            from exc
    sampling, max_tokens, stop = _limits(config)
    stop += [s for s in template.get("stopStrings") or [] if isinstance(s, str) and s]
    return CompletionInput(model=model, prompt=prompt, sampling=sampling, max_tokens=max_tokens, stop=stop)


def chat_input(parameter: dict, model: str) -> ChatInput:
    """The ChatInput of a predict channel, for the model the specifier resolved to."""
    config = _config(parameter)
    sampling, max_tokens, stop = _limits(config)
    structured = config.get("structured") if isinstance(config.get("structured"), dict) else {}
    json_schema = structured.get("jsonSchema") if structured.get("type") == "json" else None
    grammar = structured.get("gbnfGrammar") if structured.get("type") == "gbnf" else None
    preset = parameter.get("fuzzyPresetIdentifier")
    return ChatInput(model=model, messages=messages_of(parameter.get("history")), sampling=sampling,
                     max_tokens=max_tokens, stop=stop, json_schema=json_schema,
                     grammar=grammar if isinstance(grammar, str) else None, format_param="llm.prediction.structured",
                     tools=_tools(config.get("tools")), preset=preset if isinstance(preset, str) and preset else None)
