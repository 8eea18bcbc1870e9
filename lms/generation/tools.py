"""How a request's function tools and tool choice shape generation, for every API surface.

- `auto`: the tools go to the chat template and calls are parsed out of the model's own output format.
- `required`, a named function, or `allowed_tools` in required mode: a JSON-schema grammar forces a call
  object (or an array of them when parallel calls are allowed), so every model obeys, whatever its training.
- `none`: no tools reach the template; nothing is parsed as a call.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from lms.errors import LmsError


@dataclass
class ToolPlan:
    template_tools: list[dict] | None = None  # OpenAI chat-format tools for the chat template
    json_schema: dict | None = None  # set when calls are forced by grammar
    parse_calls: bool = False
    forced: bool = False
    allowed_names: set[str] | None = None
    max_calls: int | None = None
    # Calls in the model's own call markup (or a whole output that is one call object) naming a tool that was not
    # offered are calls too: /api/v1/chat answers them as invalid_tool_call; elsewhere they stay text.
    unknown_calls: bool = False


def chat_function_tools(tools: list | None) -> list[dict]:
    """Chat-format tools (`{"type": "function", "function": {name, description, parameters}}`, as OpenAI's chat
    API and Ollama take them) flattened to the shape every surface shares: {name, description, parameters}."""
    flat = []
    for index, tool in enumerate(tools or []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type", "function") != "function" \
                or not isinstance(function.get("name"), str) or not function["name"]:
            raise LmsError.invalid("Each tool must be {'type': 'function', 'function': {'name': ...}}.",
                                   f"tools[{index}]")
        flat.append({"name": function["name"], "description": function.get("description"),
                     "parameters": function.get("parameters"), "strict": function.get("strict")})
    return flat


def _call_schema(tool: dict) -> dict:
    parameters = tool.get("parameters") or {"type": "object", "properties": {}}
    return {"type": "object", "properties": {"name": {"const": tool["name"]}, "arguments": parameters},
            "required": ["name", "arguments"], "additionalProperties": False}


def forced_call_schema(tools: list[dict], parallel: bool) -> dict:
    one = _call_schema(tools[0]) if len(tools) == 1 else {"anyOf": [_call_schema(t) for t in tools]}
    if not parallel:
        return one
    return {"type": "array", "items": one, "minItems": 1}


def plan_tools(tools: list[dict], choice, *, parallel: bool = True, max_calls: int | None = None,
               unknown_calls: bool = False) -> ToolPlan:
    """`tools` are normalized function tools ({name, description, parameters}); `choice` is "auto", "none",
    "required", {"type": "function", "name"} or {"type": "allowed_tools", "mode", "tools": [{"name"}]}."""
    if not tools or choice == "none":
        return ToolPlan()
    template_tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description") or "",
                                                        "parameters": t.get("parameters") or {"type": "object"}}}
                      for t in tools]
    if not parallel:  # one call per turn, however many the model writes
        max_calls = 1
    plan = ToolPlan(template_tools=template_tools, max_calls=max_calls)
    if max_calls == 1:
        parallel = False
    if isinstance(choice, dict) and choice.get("type") == "function":
        chosen = [t for t in tools if t["name"] == choice["name"]]
        plan.json_schema, plan.forced = forced_call_schema(chosen, parallel=False), True
        plan.allowed_names = {choice["name"]}
        return plan
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        names = {t["name"] for t in choice["tools"]}
        plan.allowed_names = names
        if choice.get("mode") == "required":
            allowed = [t for t in tools if t["name"] in names]
            plan.json_schema, plan.forced = forced_call_schema(allowed, parallel), True
        else:
            plan.parse_calls = True
        return plan
    if choice == "required":
        plan.json_schema, plan.forced = forced_call_schema(tools, parallel), True
        plan.allowed_names = {t["name"] for t in tools}
        return plan
    plan.parse_calls, plan.unknown_calls = True, unknown_calls
    plan.allowed_names = {t["name"] for t in tools}
    return plan


def template_supports_tools(template: str | None) -> bool:
    return bool(template) and "tools" in template


def template_knows_tool_calls(template: str | None) -> bool:
    return bool(template) and "tool_calls" in template


def render_tool_calls_as_text(messages: list[dict]) -> list[dict]:
    """For templates that know nothing of tool calls: show the model its own calls in the Hermes format."""
    rendered = []
    for message in messages:
        if message.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n" + json.dumps({"name": c["function"]["name"],
                                              "arguments": _json_or_text(c["function"]["arguments"])})
                + "\n</tool_call>" for c in message["tool_calls"])
            message = {"role": "assistant", "content": (message.get("content") or "") + calls}
        rendered.append(message)
    return rendered


def _json_or_text(arguments):
    if not isinstance(arguments, str):  # some clients send the arguments object itself
        return arguments
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


TOOL_PROMPT = """You can call these tools (JSON Schema signatures):
{tools}

To call a tool, answer with one or more blocks, and nothing else, each exactly like this:
<tool_call>
{{"name": "<tool name>", "arguments": {{<arguments as JSON>}}}}
</tool_call>
Call a tool only when it helps answer; otherwise answer normally."""


def describe_tools_if_needed(messages: list[dict], plan: ToolPlan, template: str | None) -> list[dict]:
    """A model whose chat template ignores `tools` (SmolLM2, many base chat models) is told about the tools in
    a system message, in the Hermes format the output parser reads back. Forced calls need no such prompt: the
    grammar already holds every name and argument schema."""
    if not plan.template_tools or plan.forced or template_supports_tools(template):
        return messages
    signatures = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in plan.template_tools)
    prompt = TOOL_PROMPT.format(tools=signatures)
    if messages and messages[0]["role"] == "system":
        return [{**messages[0], "content": f"{messages[0]['content']}\n\n{prompt}"}, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]
