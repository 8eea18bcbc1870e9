"""A `predict` channel's creation parameter as the pipeline's ChatInput: the chat history (text, tool calls and
their results) and the collapsed prediction config stack (limits, sampling, stop strings, structured output,
tools, preset). With a Jinja prompt template override (what the SDKs' complete() sends) it is a raw
CompletionInput instead: the history rendered through the client's template."""

from __future__ import annotations

import json
from collections.abc import Mapping

from lms import presets
from lms.api.lmstudio import frames
from lms.api.lmstudio.file_store import StoredFile
from lms.errors import Kind, LmsError
from lms.generation.chat_template import TemplateError, render
from lms.generation.request import IMAGE_MARKER, GenerationRequest
from lms.pipeline.inputs import ChatInput, CompletionInput

ROLES = ("system", "user", "assistant", "tool")
PREFIX = "llm.prediction."
FORMAT_PARAM = PREFIX + "structured"  # what output-format errors name
# KV keys whose value is a checkbox ({"checked", "value"}) -> the pipeline's sampling field
CHECKBOX_SAMPLING = {"topPSampling": "top_p", "minPSampling": "min_p", "repeatPenalty": "repeat_penalty"}
PLAIN_SAMPLING = {"temperature": "temperature", "topKSampling": "top_k"}


def messages_of(history, files: Mapping[str, StoredFile] | None = None) -> tuple[list[dict], list[str]]:
    """ChatHistoryData as the pipeline's chat messages, and the data URLs of the images its file parts name (each
    sits where IMAGE_MARKER is in its message's text). Files are the client's uploads, by identifier."""
    if not isinstance(history, dict) or not isinstance(history.get("messages"), list):
        raise LmsError.invalid("'history.messages' must be an array.", "history")
    messages: list[dict] = []
    image_urls: list[str] = []
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
            elif kind == "file" and role in ("user", "system"):
                texts.append(IMAGE_MARKER)
                image_urls.append(_image(part, files or {}, index))
            elif kind == "toolCallRequest" and role == "assistant":
                request = part.get("toolCallRequest") or {}
                calls.append({"id": request.get("id") or f"call_{index}_{len(calls)}", "type": "function",
                              "function": {"name": request.get("name"),
                                           "arguments": json.dumps(request.get("arguments") or {})}})
            elif kind == "toolCallResult" and role == "tool":
                messages.append({"role": "tool", "tool_call_id": part.get("toolCallId"),
                                 "content": str(part.get("content") or "")})
            else:
                raise LmsError.invalid(f"A {kind!r} part cannot be in a {role} message.", "history",
                                       code="unsupported_content")
        if role != "tool" and (texts or calls):
            entry = {"role": role, "content": "".join(texts)}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    if not messages:
        raise LmsError.invalid("The chat history is empty.", "history")
    return messages, image_urls


def _image(part: dict, files: Mapping[str, StoredFile], index: int) -> str:
    """The data URL of the uploaded image a file part names."""
    stored = files.get(part.get("identifier")) if isinstance(part.get("identifier"), str) else None
    if stored is None:
        raise LmsError.not_found(f"'history.messages[{index}]' names the file {part.get('identifier')!r}, which "
                                 "this client has not uploaded (files live as long as the client's connection).",
                                 "history", code="file_not_found")
    if stored.file_type != "image":
        raise LmsError.invalid(f"'{stored.name}' is a {stored.file_type} file; only images can be given to a model.",
                               "history", code="unsupported_content")
    return stored.data_url()


def function_tools(tools) -> list[dict]:
    """LM Studio's LLMTool list as normalized function tools ({name, description, parameters})."""
    normalized = []
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            normalized.append({"name": function["name"], "description": function.get("description") or "",
                               "parameters": function.get("parameters") or {"type": "object", "properties": {}}})
    return normalized


def _config(parameter: dict, under: dict | None = None) -> dict:
    """The prediction config stack collapsed (with a layer under the client's, such as a preset), keys without
    the `llm.prediction.` prefix."""
    stack = parameter.get("predictionConfigStack")
    layers = stack.get("layers") if isinstance(stack, dict) and isinstance(stack.get("layers"), list) else []
    fields = frames.collapse({"layers": ([under] if under else []) + layers})
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
    messages, images = messages_of(parameter.get("history"))
    if images:
        raise LmsError.invalid("A raw completion takes no images.", "history", code="unsupported_content")
    try:
        prompt = render(jinja["template"], messages,
                        bos_token=jinja.get("bosToken") or "", eos_token=jinja.get("eosToken") or "")
    except (TemplateError, ValueError, LookupError, TypeError) as exc:
        raise LmsError.invalid(f"The prompt template does not render: {exc}", "llm.prediction.promptTemplate") \
            from exc
    sampling, max_tokens, stop = _limits(config)
    stop += [s for s in template.get("stopStrings") or [] if isinstance(s, str) and s]
    return CompletionInput(model=model, prompt=prompt, sampling=sampling, max_tokens=max_tokens, stop=stop,
                           prompt_progress=True)


def chat_input(parameter: dict, model: str, files: Mapping[str, StoredFile] | None = None) -> ChatInput:
    """The ChatInput of a predict channel, for the model the specifier resolved to: the named preset's fields as
    a layer under the client's (LM Studio's order), collapsed; `files` are the client's uploads."""
    preset = parameter.get("fuzzyPresetIdentifier")
    config = _config(parameter, preset_layer(preset) if isinstance(preset, str) and preset else None)
    messages, image_urls = messages_of(parameter.get("history"), files)
    system_prompt = config.get("systemPrompt")
    if isinstance(system_prompt, str) and system_prompt and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    sampling, max_tokens, stop = _limits(config)
    structured = config.get("structured") if isinstance(config.get("structured"), dict) else {}
    json_schema = structured.get("jsonSchema") if structured.get("type") == "json" else None
    grammar = structured.get("gbnfGrammar") if structured.get("type") == "gbnf" else None
    tools = config.get("tools") if isinstance(config.get("tools"), dict) else {}
    draft = config.get("speculativeDecoding.draftModel")
    return ChatInput(model=model, messages=messages, image_urls=image_urls, image_param="history", sampling=sampling,
                     max_tokens=max_tokens, stop=stop, json_schema=json_schema,
                     grammar=grammar if isinstance(grammar, str) else None, format_param=FORMAT_PARAM,
                     tools=function_tools(tools.get("tools") if tools.get("type") == "toolArray" else None),
                     draft_model=draft if isinstance(draft, str) and draft else None,
                     truncate=config.get("contextOverflowPolicy") in ("rollingWindow", "truncateMiddle"),
                     prompt_progress=True)


def preset_layer(name: str) -> dict:
    """A saved preset (lms.presets, found with LM Studio's loose matching of names) as a KV config layer; LM
    Studio's presetNotFound when none matches."""
    available = presets.available()
    wanted = _loose(name)
    match = next((p for p in available if p == name), None) or \
        next((p for p in available if _loose(p) == wanted), None)
    if match is None:
        sample = [{"identifier": p, "name": p} for p in available[:5]]
        raise frames.ProtocolError(
            f"No preset matches '{name}' (there are: {', '.join(available) or 'none'}).", Kind.NOT_FOUND,
            {"code": "generic.presetNotFound", "specifiedFuzzyPresetIdentifier": name,
             "availablePresetsSample": sample, "totalAvailablePresets": len(available)},
            code="preset_not_found", param="fuzzyPresetIdentifier")
    preset = presets.load(match)
    fields = {PREFIX + key: value for key, value in config_fields(preset.sampling).items()}
    if preset.system_prompt:
        fields[PREFIX + "systemPrompt"] = preset.system_prompt
    if preset.response_format and preset.response_format.get("type") == "json_schema":
        schema = (preset.response_format.get("json_schema") or {}).get("schema") or {}
        fields[PREFIX + "structured"] = {"type": "json", "jsonSchema": schema}
    return {"layerName": "preset", "config": frames.kv_config(fields)}


def _loose(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def config_fields(sampling: dict) -> dict:
    """Sampling and limits by the pipeline's names (temperature, top_p, ..., max_tokens, stop) as LM Studio's
    prediction config values, keys without the `llm.prediction.` prefix."""
    fields: dict = {}
    for key, name in PLAIN_SAMPLING.items():
        if sampling.get(name) is not None:
            fields[key] = sampling[name]
    for key, name in CHECKBOX_SAMPLING.items():
        if sampling.get(name) is not None:
            fields[key] = {"checked": True, "value": sampling[name]}
    if "max_tokens" in sampling:
        limit = sampling["max_tokens"]
        fields["maxPredictedTokens"] = {"checked": limit is not None, "value": limit or 0}
    if sampling.get("stop") is not None:
        fields["stopStrings"] = list(sampling["stop"])
    return fields


def effective_config(request: GenerationRequest) -> dict:
    """The prediction config that ran (defaults, preset and the client's layers applied), as a KVConfig."""
    sampling = {name: getattr(request.sampling, name) for name in (*PLAIN_SAMPLING.values(),
                                                                  *CHECKBOX_SAMPLING.values())}
    fields = {PREFIX + key: value for key, value in
              config_fields(sampling | {"max_tokens": request.max_tokens, "stop": request.stop}).items()}
    if request.format_param == FORMAT_PARAM and request.json_schema is not None:  # not a forced tool call's
        fields[PREFIX + "structured"] = {"type": "json", "jsonSchema": request.json_schema}
    elif request.grammar:
        fields[PREFIX + "structured"] = {"type": "gbnf", "gbnfGrammar": request.grammar}
    if request.draft_model:
        fields[PREFIX + "speculativeDecoding.draftModel"] = request.draft_model
    return frames.kv_config(fields)
