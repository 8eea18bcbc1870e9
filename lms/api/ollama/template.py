"""The part of Go's text/template that Ollama prompt templates use in `/api/generate`'s `template` field:
`{{ .System }}`, `{{ .Prompt }}`, `{{ .Suffix }}`, `{{ .Response }}`, `{{ if .X }}...{{ else }}...{{ end }}` and the
`{{-`/`-}}` whitespace trims. Anything else (`range`, functions, `.Messages`) is refused by name: a prompt is
never rendered differently from what the client asked for."""

from __future__ import annotations

import re

from lms.errors import LmsError

ACTION = re.compile(r"\{\{(-\s)?\s*(.*?)\s*(\s-)?\}\}", re.DOTALL)
FIELD = re.compile(r"^\.(System|Prompt|Suffix|Response)$")


def _unsupported(action: str) -> LmsError:
    return LmsError.invalid(f"The template action '{{{{ {action} }}}}' is not supported: templates may use "
                            ".System, .Prompt, .Suffix, .Response, if/else/end.", "template",
                            code="unsupported_template")


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", text) and ("action", body), with the trim markers applied to the text beside them."""
    tokens: list[tuple[str, str]] = []
    position, trim_next = 0, False
    for match in ACTION.finditer(template):
        text = template[position:match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        tokens.append(("text", text))
        tokens.append(("action", match.group(2)))
        position, trim_next = match.end(), bool(match.group(3))
    tail = template[position:]
    tokens.append(("text", tail.lstrip() if trim_next else tail))
    return tokens


def render(template: str, values: dict[str, str]) -> str:
    output, stack = [], []  # stack: whether each open `if` branch is being written
    for kind, body in _tokens(template):
        writing = all(stack)
        if kind == "text":
            if writing:
                output.append(body)
        elif body.startswith("/*") and body.endswith("*/"):
            continue  # a comment
        elif body.startswith("if "):
            field = FIELD.match(body[3:].strip())
            if not field:
                raise _unsupported(body)
            stack.append(bool(values.get(field.group(1))))
        elif body == "else":
            if not stack:
                raise _unsupported(body)
            stack[-1] = not stack[-1]
        elif body == "end":
            if not stack:
                raise _unsupported(body)
            stack.pop()
        elif field := FIELD.match(body):
            if writing:
                output.append(values.get(field.group(1), ""))
        else:
            raise _unsupported(body)
    if stack:
        raise LmsError.invalid("The template has an 'if' without its 'end'.", "template", code="unsupported_template")
    return "".join(output)
