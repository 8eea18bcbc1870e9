"""Tool planning: which choice means a grammar, what the template sees, and the prompt for tool-less templates."""

from __future__ import annotations

from lms.generation.tools import describe_tools_if_needed, plan_tools, render_tool_calls_as_text

WEATHER = {"name": "get_weather", "description": "Weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
TIME = {"name": "get_time", "description": "Time", "parameters": None}


def test_auto_parses_and_none_disables():
    auto = plan_tools([WEATHER], "auto")
    assert auto.parse_calls and not auto.forced and auto.allowed_names == {"get_weather"}
    assert auto.template_tools[0]["function"]["name"] == "get_weather"
    none = plan_tools([WEATHER], "none")
    assert none.template_tools is None and not none.parse_calls


def test_required_forces_a_call_schema_over_every_tool():
    plan = plan_tools([WEATHER, TIME], "required", parallel=False)
    assert plan.forced and plan.json_schema["anyOf"][0]["properties"]["name"] == {"const": "get_weather"}
    parallel = plan_tools([WEATHER, TIME], "required")
    assert parallel.json_schema["type"] == "array" and parallel.json_schema["minItems"] == 1


def test_named_and_allowed_tools():
    named = plan_tools([WEATHER, TIME], {"type": "function", "name": "get_time"})
    assert named.forced and named.json_schema["properties"]["name"] == {"const": "get_time"}
    allowed = plan_tools([WEATHER, TIME], {"type": "allowed_tools", "mode": "auto", "tools": [{"name": "get_time"}]})
    assert allowed.parse_calls and allowed.allowed_names == {"get_time"} and len(allowed.template_tools) == 2
    max_one = plan_tools([WEATHER], "required", max_calls=1)
    assert max_one.json_schema["type"] == "object"


def test_tool_less_templates_get_a_system_prompt():
    plan = plan_tools([WEATHER], "auto")
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    described = describe_tools_if_needed(messages, plan, "{{ messages }}")
    assert described[0]["role"] == "system" and "get_weather" in described[0]["content"]
    assert "<tool_call>" in described[0]["content"] and described[1:] == messages
    with_system = describe_tools_if_needed([{"role": "system", "content": "Be brief."}, *messages], plan, None)
    assert with_system[0]["content"].startswith("Be brief.") and len(with_system) == 2
    assert describe_tools_if_needed(messages, plan, "{% if tools %}{{ tools }}{% endif %}") == messages


def test_calls_in_history_become_text_for_templates_without_tool_calls():
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]}]
    [rendered] = render_tool_calls_as_text(messages)
    assert rendered["content"] == '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
