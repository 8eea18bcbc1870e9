"""The one path from an API surface to a model and back.

Every surface translates its request into a ChatInput or a CompletionInput and calls the pipeline, which
- resolves the model (loading it just in time, with the request's idle TTL) and applies a named preset,
- prepares the conversation: tools for the template (or described in a system message, or forced by grammar),
  tool calls shown as text to templates that know none, images fetched and checked against the model's vision,
- builds the typed GenerationRequest (sampling, limits, output format, reasoning, logprobs, draft model),
- starts it, primed: a failure before the first event (context too long, bad grammar) raises here, and with
  `truncate` the oldest turns are dropped until the conversation fits,
- and parses the engine's text into reasoning, content and tool calls (lms.pipeline.parse).
What comes back is a Generation: the loaded model and its parsed events, or `collect()` for one Outcome.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace

from lms import presets
from lms.errors import LmsError
from lms.generation.request import IMAGE_MARKER, GenerationRequest, Sampling
from lms.generation.tools import (
    ToolPlan,
    describe_tools_if_needed,
    plan_tools,
    render_tool_calls_as_text,
    template_knows_tool_calls,
)
from lms.manager.models import LoadedModel, ModelManager
from lms.pipeline.images import MAX_IMAGES, load_image
from lms.pipeline.inputs import ChatInput, CompletionInput
from lms.pipeline.outcome import Outcome, collect, primed
from lms.pipeline.parse import ParseOptions, parse_events


@dataclass
class Generation:
    model: LoadedModel
    events: AsyncIterator[dict]  # parsed events (chat) or engine events (completion); see lms.pipeline.parse
    request: GenerationRequest

    async def collect(self) -> Outcome:
        return await collect(self.events)


def check_tool_choice(tools: list[dict], choice) -> None:
    names = {tool["name"] for tool in tools}
    named = choice.get("name") if isinstance(choice, dict) and choice.get("type") == "function" else None
    if isinstance(choice, dict) and choice.get("type") == "function" and (not isinstance(named, str)
                                                                          or named not in names):
        raise LmsError.invalid(f"tool_choice names an unknown function {choice.get('name')!r}.", "tool_choice")
    if choice == "required" and not tools:
        raise LmsError.invalid("tool_choice 'required' needs tools.", "tool_choice")


def with_preset(chat: ChatInput) -> ChatInput:
    """The preset's system prompt, sampling, limits and output format, where the request gave none."""
    if not chat.preset:
        return chat
    preset = presets.load(chat.preset)
    given = preset.sampling
    sampling = {key: given[key] for key in given if key not in ("max_tokens", "stop")} | chat.sampling
    messages = chat.messages
    if preset.system_prompt and not any(message["role"] == "system" for message in messages):
        messages = [{"role": "system", "content": preset.system_prompt}, *messages]
    chat = replace(chat, messages=messages, sampling=sampling, preset=None,
                   max_tokens=chat.max_tokens if chat.max_tokens is not None else given.get("max_tokens"),
                   stop=chat.stop or list(given.get("stop") or []))
    fmt = preset.response_format
    if fmt and not (chat.json_schema or chat.json_object or chat.grammar):
        if fmt.get("type") == "json_object":
            chat = replace(chat, json_object=True)
        elif fmt.get("type") == "json_schema":
            chat = replace(chat, json_schema=(fmt.get("json_schema") or {}).get("schema") or {})
    return chat


def drop_oldest_turn(messages: list[dict]) -> list[dict] | None:
    """For truncation: the conversation without its oldest turn (never a system message, an image-bearing one
    or the last message); None when nothing can go."""
    for index, message in enumerate(messages[:-1]):
        if message["role"] != "system" and IMAGE_MARKER not in (message.get("content") or ""):
            return messages[:index] + messages[index + 1:]
    return None


class Pipeline:
    def __init__(self, manager: ModelManager):
        self.manager = manager

    async def model(self, name: str | None, ttl: int | None = None, context_length: int | None = None,
                    parallel: int | None = None, progress: Callable[[float], None] | None = None,
                    load_settings: dict | None = None) -> LoadedModel:
        """The model a request names, loaded just in time if need be (with these `load_settings`: the manager's
        load options, such as kv_cache_type); `progress` hears 0..1 of such a load."""
        return await self.manager.get_or_load(name, ttl, context_length, parallel, progress=progress,
                                              load_settings=load_settings)

    async def images(self, model: LoadedModel, urls: list[str], param: str) -> list[str]:
        """The images as base64, once the model is known to see them."""
        if urls and not model.entry.vision and not model.upstream:  # an upstream server judges for itself
            raise LmsError.invalid(f"Model '{model.identifier}' does not accept images: it has no vision projector "
                                   "(an mmproj file beside the model).", param, code="model_not_supported")
        if len(urls) > MAX_IMAGES:
            raise LmsError.invalid(f"A request may hold at most {MAX_IMAGES} images; this one has {len(urls)}.",
                                   param, code="too_many_images")
        allowed = self.manager.settings.fetch_hosts()
        return [base64.b64encode(await load_image(url, param, allowed)).decode() for url in urls]

    async def embed(self, model: LoadedModel, inputs: list[str], dimensions: int | None = None,
                    truncate: bool = False) -> dict:
        """{"embeddings": [[float]], "prompt_tokens": int} of the inputs, in order; with `dimensions`, each
        vector cut to its first dimensions and renormalized (Matryoshka-style), so it stays unit length; with
        `truncate`, an input longer than the context is cut to fit instead of refused."""
        result = await self.manager.embed(model, inputs, truncate)
        if dimensions:
            result["embeddings"] = [_unit(vector[:dimensions]) for vector in result["embeddings"]]
        return result

    async def count_tokens(self, model: LoadedModel, messages: list[dict]) -> int:
        """Prompt tokens of these messages under the model's chat template."""
        return await self.manager.count_tokens(model, GenerationRequest(messages=messages))

    async def tokenize(self, model: LoadedModel, text: str) -> list[int]:
        """The token ids of raw text under the model's tokenizer (no chat template)."""
        return (await self.manager.tokenize(model, text))["tokens"]

    async def tokens_of(self, model: LoadedModel, text: str, add_special: bool | None = None,
                        with_pieces: bool = False) -> dict:
        """{"tokens": [id]} of raw text (special tokens written in it parsed as such), with BOS/EOS as the model
        adds them to a prompt when `add_special` (the engine's prompt default when None); with `with_pieces`, also
        {"pieces": [text, or the bytes when they are not valid UTF-8 alone]}."""
        return await self.manager.tokenize(model, text, add_special, with_pieces)

    async def detokenize(self, model: LoadedModel, tokens: list[int]) -> str:
        """The text of token ids under the model's tokenizer (special tokens as their text)."""
        return await self.manager.detokenize(model, tokens)

    async def count_chat(self, chat: ChatInput, model: LoadedModel | None = None,
                         images: list[str] | None = None) -> int:
        """The prompt tokens `chat()` would report for the same input, without generating: the same preset,
        template tools or described tools, tool calls shown as text, template options and images, under the model's
        own template and tokenizer."""
        chat = with_preset(chat)
        model = model or await self.model(chat.model, chat.ttl)
        if model.entry.type != "llm":
            raise LmsError.invalid(f"'{model.identifier}' is an embedding model: it has no chat template.", "model",
                                   code="model_not_supported")
        if images is None:
            images = await self.images(model, chat.image_urls, chat.image_param)
        return await self.manager.count_tokens(model, self._prepared(chat, model, images)[0])

    def _prepared(self, chat: ChatInput, model: LoadedModel,
                  images: list[str]) -> tuple[GenerationRequest, ToolPlan, list[dict]]:
        """The typed request of a chat as the engine gets it, its tool plan, and its messages before tools are
        described in them (what truncation drops turns from)."""
        request, plan = chat_request(chat, images)
        template = model.entry.chat_template
        messages = chat.messages if template_knows_tool_calls(template) else render_tool_calls_as_text(chat.messages)
        request.messages = describe_tools_if_needed(messages, plan, template)
        return request, plan, messages

    async def render_prompt(self, model: LoadedModel, messages: list[dict], tools: list[dict] | None = None,
                            template_options: dict | None = None) -> str:
        """The messages under the model's chat template, as text, without generating."""
        return await self.manager.render_prompt(model, messages, tools, template_options)

    async def chat(self, chat: ChatInput, model: LoadedModel | None = None,
                   images: list[str] | None = None) -> Generation:
        """Start a chat generation. A surface that runs several generations over one conversation passes the
        model and the images it already has."""
        chat = with_preset(chat)
        model = model or await self.model(chat.model, chat.ttl)
        if images is None:
            images = await self.images(model, chat.image_urls, chat.image_param)
        if model.upstream:
            return await self._upstream_chat(chat, model, images)
        request, plan, messages = self._prepared(chat, model, images)
        template = model.entry.chat_template
        while True:
            request.messages = describe_tools_if_needed(messages, plan, template)
            try:
                events = await primed(self.manager.generate(model, request))
                break
            except LmsError as exc:
                fewer = drop_oldest_turn(messages) if chat.truncate and exc.code == "context_length_exceeded" else None
                if fewer is None:
                    raise
                messages = fewer
        options = ParseOptions(reasoning=chat.reasoning_effort != "none", tools=plan, template=template)
        return Generation(model, parse_events(events, options), request)

    async def _upstream_chat(self, chat: ChatInput, model: LoadedModel, images: list[str]) -> Generation:
        """A chat for an upstream server, which applies its template and parses its own output: the tools and the
        tool choice go as they are (no grammar), and its parsed events come back unchanged."""
        request, _plan = chat_request(chat, images)
        tools, choice = upstream_tools(chat.tools, chat.tool_choice)
        request = replace(request, tools=tools, tool_choice=choice, json_schema=chat.json_schema,
                          json_object=chat.json_object, format_param=chat.format_param)
        return Generation(model, await primed(self.manager.generate(model, request)), request)

    async def completion(self, completion: CompletionInput) -> Generation:
        """Start a raw completion: the prompt as it is, no template, the engine's text events as they come."""
        model = await self.model(completion.model, completion.ttl)
        request = completion_request(completion)
        return Generation(model, await primed(self.manager.generate(model, request)), request)


def _unit(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def chat_request(chat: ChatInput, images: list[str] | None = None) -> tuple[GenerationRequest, ToolPlan]:
    """The typed request of one chat generation (messages as given), and its tool plan; forced tool calls take
    the output format's place."""
    check_tool_choice(chat.tools, chat.tool_choice)
    plan = plan_tools(chat.tools, chat.tool_choice, parallel=chat.parallel_tool_calls, max_calls=chat.max_tool_calls,
                      unknown_calls=chat.unknown_tool_calls)
    effort = chat.reasoning_effort
    request = GenerationRequest(
        messages=chat.messages, sampling=Sampling.overriding(**chat.sampling), max_tokens=chat.max_tokens,
        stop=chat.stop, grammar=chat.grammar, tools=plan.template_tools,
        json_schema=plan.json_schema if plan.forced else chat.json_schema,
        json_object=chat.json_object and not plan.forced,
        format_param="tools" if plan.forced else chat.format_param, logprobs=chat.logprobs,
        reasoning_start=None if effort == "none" else "detect",
        template_options={"enable_thinking": effort != "none"} | ({"reasoning_effort": effort} if effort else {}),
        images=list(images or []), draft_model=chat.draft_model,
        speculative=chat.speculative, persist=chat.persist, prompt_progress=chat.prompt_progress)
    return request, plan


def completion_request(completion: CompletionInput) -> GenerationRequest:
    return GenerationRequest(prompt=completion.prompt, sampling=Sampling.overriding(**completion.sampling),
                             max_tokens=completion.max_tokens, stop=completion.stop, grammar=completion.grammar,
                             draft_model=completion.draft_model,
                             speculative=completion.speculative, suffix=completion.suffix,
                             prompt_progress=completion.prompt_progress)


def upstream_tools(tools: list[dict], choice) -> tuple[list[dict] | None, str | dict | None]:
    """The request's tools and tool choice in OpenAI's chat shape, for an upstream server; `allowed_tools` narrows
    the tools sent to the allowed ones."""
    if not tools or choice == "none":
        return None, None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        names = {tool["name"] for tool in choice["tools"]}
        tools, choice = [t for t in tools if t["name"] in names], choice.get("mode") or "auto"
    wired = [{"type": "function", "function": {key: tool[key] for key in ("name", "description", "parameters",
                                                                             "strict") if tool.get(key) is not None}}
             for tool in tools]
    if isinstance(choice, dict) and choice.get("type") == "function":
        return wired, {"type": "function", "function": {"name": choice["name"]}}
    return wired, choice if choice in ("auto", "required") else "auto"
