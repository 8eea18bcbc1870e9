"""Rendering a model's own Jinja chat template (from its GGUF metadata) the way Hugging Face does."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from lms.errors import LmsError

# Used when a model ships no template: ChatML is what most small instruct models were tuned on.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    pass


def _raise(message: str):
    raise TemplateError(message)


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    return env.from_string(source)


def _tojson(value, indent=None, ensure_ascii=False, **_):
    import json

    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)


def flatten_content(content) -> str:
    """Content may be a string or OpenAI content parts; templates of text models expect a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def _with_parsed_arguments(call: dict) -> dict:
    """OpenAI clients send a call's arguments as a JSON string; templates (as Hugging Face renders them) expect
    the object, and would otherwise show the model its own call as an escaped string."""
    import json

    function = call.get("function") or {}
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return call
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return call
    return {**call, "function": {**function, "arguments": parsed}}


def render(template: str | None, messages: list[dict], *, bos_token: str = "", eos_token: str = "",
           tools: list[dict] | None = None, add_generation_prompt: bool = True, **extra) -> str:
    normalized = []
    for message in messages:
        message = dict(message)
        message["content"] = flatten_content(message.get("content"))
        if message.get("tool_calls"):
            message["tool_calls"] = [_with_parsed_arguments(call) for call in message["tool_calls"]]
        normalized.append(message)
    try:
        return _compile(template or CHATML).render(
            messages=normalized, bos_token=bos_token, eos_token=eos_token, tools=tools,
            add_generation_prompt=add_generation_prompt, **extra,
        )
    except TemplateError:
        raise
    except Exception as exc:  # a template bug must become a clear request error, not a crash
        raise TemplateError(f"the model's chat template failed: {exc}") from exc


def render_request(template: str | None, request, *, bos_token: str, eos_token: str) -> str:
    """A generation request's messages and tools under a model's chat template (what every engine feeds its
    tokenizer); a template that fails is the request's 400 `invalid_prompt`. The request's template options may
    replace the BOS and EOS text (LM Studio's applyPromptTemplate can omit them)."""
    options = dict(request.template_options or {})
    bos_token, eos_token = options.pop("bos_token", bos_token), options.pop("eos_token", eos_token)
    try:
        return render(template, request.messages or [], bos_token=bos_token, eos_token=eos_token,
                      tools=request.tools, **options)
    except TemplateError as exc:
        raise LmsError.invalid(str(exc), "messages", code="invalid_prompt") from exc
