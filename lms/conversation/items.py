"""Open Responses items: validating input items, turning an item list into chat messages, building output items.

Items are kept as plain dicts (the wire shape) so they can be stored, echoed and compacted without loss.
"""

from __future__ import annotations

from lms.errors import LmsError
from lms.generation.ids import new_id
from lms.generation.request import IMAGE_MARKER

TEXT_PARTS = {"input_text", "output_text", "text", "summary_text", "reasoning_text"}
INPUT_ITEM_TYPES = {"message", "function_call", "function_call_output", "reasoning", "item_reference", "compaction",
                    "mcp_list_tools", "mcp_call", "mcp_approval_request", "mcp_approval_response"}
_REQUIRED_STRINGS = {"function_call": ("call_id", "name", "arguments"), "function_call_output": ("call_id",),
                     "item_reference": ("id",), "compaction": ("encrypted_content",),
                     "mcp_list_tools": ("server_label",), "mcp_call": ("server_label", "name", "arguments"),
                     "mcp_approval_request": ("server_label", "name", "arguments"),
                     "mcp_approval_response": ("approval_request_id",)}
_ID_PREFIXES = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "compaction": "cmp",
                "reasoning": "rs", "mcp_list_tools": "mcpl", "mcp_call": "mcp", "mcp_approval_request": "mcpr",
                "mcp_approval_response": "mcpa"}
ROLES = {"user", "assistant", "system", "developer"}



def normalize_input(value) -> list[dict]:
    """The request's `input` as a list of items, each with an id (a string is one user message)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"id": new_id("msg_"), "type": "message", "role": "user", "status": "completed",
                 "content": [{"type": "input_text", "text": value}]}]
    if not isinstance(value, list):
        raise LmsError.invalid("'input' must be a string or an array of items", "input")
    return [_normalize_item(item, f"input[{i}]") for i, item in enumerate(value)]


def _normalize_item(item, param: str) -> dict:
    if not isinstance(item, dict):
        raise LmsError.invalid(f"'{param}' must be an object", param)
    item = dict(item)
    kind = item.setdefault("type", "message")
    if not isinstance(kind, str) or kind not in INPUT_ITEM_TYPES:
        raise LmsError.invalid(f"'{param}.type' {kind!r} is not a supported input item type", f"{param}.type")
    if kind == "message":
        role = item.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise LmsError.invalid(f"'{param}.role' must be one of {sorted(ROLES)}", f"{param}.role")
        content = item.get("content")
        if isinstance(content, str):
            part_type = "output_text" if role == "assistant" else "input_text"
            item["content"] = [{"type": part_type, "text": content}]
        elif isinstance(content, list):
            item["content"] = [_normalize_part(part, f"{param}.content[{j}]") for j, part in enumerate(content)]
        else:
            raise LmsError.invalid(f"'{param}.content' must be a string or an array of content parts",
                                   f"{param}.content")
        if item.get("phase") not in (None, "commentary", "final_answer"):
            raise LmsError.invalid(f"'{param}.phase' must be 'commentary' or 'final_answer'", f"{param}.phase")
    for key in _REQUIRED_STRINGS.get(kind, ()):
        if not isinstance(item.get(key), str):
            raise LmsError.invalid(f"'{param}.{key}' must be a string", f"{param}.{key}")
    if kind == "function_call_output" and not isinstance(item.get("output"), (str, list)):
        raise LmsError.invalid(f"'{param}.output' must be a string or an array of content parts", f"{param}.output")
    if kind == "mcp_approval_response" and not isinstance(item.get("approve"), bool):
        raise LmsError.invalid(f"'{param}.approve' must be a boolean", f"{param}.approve")
    if kind == "mcp_list_tools" and not isinstance(item.get("tools", []), list):
        raise LmsError.invalid(f"'{param}.tools' must be an array", f"{param}.tools")
    if kind == "reasoning":
        item.setdefault("summary", [])
    if kind in ("message", "function_call", "function_call_output"):
        item.setdefault("status", "completed")
    if kind in _ID_PREFIXES:  # an item_reference names an item: it has no id of its own
        item.setdefault("id", new_id(_ID_PREFIXES[kind] + "_"))
    return item


def _normalize_part(part, param: str) -> dict:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise LmsError.invalid(f"'{param}' must be a content part object with a type", param)
    kind = part["type"]
    if kind in TEXT_PARTS or kind == "refusal":
        key = "refusal" if kind == "refusal" else "text"
        if not isinstance(part.get(key), str):
            raise LmsError.invalid(f"'{param}.{key}' must be a string", f"{param}.{key}")
    elif kind == "input_image":
        if not isinstance(part.get("image_url"), str) and not isinstance(part.get("file_id"), str):
            raise LmsError.invalid(f"'{param}.image_url' must be a URL string", f"{param}.image_url")
    elif kind in ("input_file", "input_video"):
        raise LmsError.invalid(f"'{param}': {kind} parts are not supported by local models; send text or images.",
                               param, code="unsupported_content")
    else:
        raise LmsError.invalid(f"'{param}.type' {kind!r} is not a supported content part", f"{param}.type")
    return part


def part_text(part: dict) -> str:
    if part["type"] == "refusal":
        return part.get("refusal", "")
    if part["type"] == "input_image":
        return IMAGE_MARKER
    return part.get("text", "") if part["type"] in TEXT_PARTS else ""


def images_of(items: list[dict]) -> list[str]:
    return [part["image_url"] for item in items if item.get("type") == "message"
            for part in item["content"] if part["type"] == "input_image" and part.get("image_url")]


def to_messages(items: list[dict], instructions: str | None) -> list[dict]:
    """Chat-template messages for a context of items (already expanded: no references or compactions)."""
    messages: list[dict] = [{"role": "system", "content": instructions}] if instructions else []
    calls: set[str] = set()
    approval_requests: dict[str, dict] = {}
    for index, item in enumerate(items):
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            messages.append({"role": role, "content": "".join(part_text(p) for p in item["content"])})
        elif kind == "function_call":
            calls.add(item["call_id"])
            _add_call(messages, item["call_id"], item["name"], item["arguments"])
        elif kind == "mcp_call":
            _add_call(messages, item["id"], item["name"], item["arguments"])
            error = item.get("error")
            result = item.get("output") if not error else f"Error: {error.get('message') or error}"
            messages.append({"role": "tool", "tool_call_id": item["id"], "content": result or ""})
        elif kind == "mcp_approval_request":
            approval_requests[item["id"]] = item
        elif kind == "mcp_approval_response" and not item["approve"]:
            request = approval_requests.get(item["approval_request_id"])
            if request is not None:  # the model learns that its call was declined; an approved one runs instead
                _add_call(messages, request["id"], request["name"], request["arguments"])
                reason = f" Reason: {item['reason']}" if item.get("reason") else ""
                messages.append({"role": "tool", "tool_call_id": request["id"],
                                 "content": f"The user declined this call of {request['name']}.{reason}"})
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                raise LmsError.invalid(f"No function call with call_id '{item['call_id']}' was found for the "
                                       f"function_call_output at input position {index}.", "input",
                                       code="invalid_function_call_output")
            output = item["output"]
            text = output if isinstance(output, str) else "".join(part_text(p) for p in output)
            messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": text})
        # reasoning items are the model's own earlier thoughts: templates drop them, and so do we;
        # mcp_list_tools items reach the model as the tools of the request
    return messages


def _add_call(messages: list[dict], call_id: str, name: str, arguments: str) -> None:
    """A tool call joins the assistant message just before it (its text, or its other calls)."""
    call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
    last = messages[-1] if messages else None
    if last and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": "", "tool_calls": [call]})


# --- output items -------------------------------------------------------------------------------------------

def message_item(item_id: str, text: str, status: str, logprobs: list | None) -> dict:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs or []}
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [part]}


def reasoning_item(item_id: str, text: str, status: str) -> dict:
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}
