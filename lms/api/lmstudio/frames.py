"""The wire protocol: one JSON text frame per message, the auth frame first, then rpc and channel frames.

Pure functions only (no sockets): parsing what a client sends, building what the server sends, LM Studio's
error object, and the KV config stacks the SDKs send their settings in."""

from __future__ import annotations

import json
from dataclasses import dataclass

from lms.errors import Kind, LmsError

# The auth frame's limits, as the SDKs generate them (uuid4 pairs, or a token split in two).
MAX_CREDENTIAL_CHARS = 256


class FrameError(ValueError):
    """A frame that is not a JSON object with a known shape."""


@dataclass(frozen=True)
class Credentials:
    identifier: str
    passkey: str


def decode(text: str | bytes | None) -> dict:
    """One frame as a dict; FrameError for anything that is not a JSON object."""
    if text is None:
        raise FrameError("an empty frame")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise FrameError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FrameError("a frame must be a JSON object")
    return data


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def credentials(frame: dict) -> Credentials | None:
    """The client's identifier and passkey from the auth frame; None when the frame is not one."""
    identifier, passkey = frame.get("clientIdentifier"), frame.get("clientPasskey")
    if frame.get("authVersion") != 1 or not isinstance(identifier, str) or not isinstance(passkey, str):
        return None
    if not identifier or len(identifier) > MAX_CREDENTIAL_CHARS or len(passkey) > MAX_CREDENTIAL_CHARS:
        return None
    return Credentials(identifier, passkey)


def auth_success() -> dict:
    return {"success": True}


def auth_failure(message: str) -> dict:
    return {"success": False, "error": message}


# --- server -> client frames --------------------------------------------------------------------------------

VOID = object()  # the result of an endpoint that returns nothing: `rpcResult` without a `result` key


def rpc_result(call_id: int, result=VOID) -> dict:
    frame = {"type": "rpcResult", "callId": call_id}
    if result is not VOID:
        frame["result"] = result
    return frame


def rpc_error(call_id: int, error: dict) -> dict:
    return {"type": "rpcError", "callId": call_id, "error": error}


def channel_send(channel_id: int, message: dict) -> dict:
    return {"type": "channelSend", "channelId": channel_id, "message": message}


def channel_close(channel_id: int) -> dict:
    return {"type": "channelClose", "channelId": channel_id}


def channel_error(channel_id: int, error: dict) -> dict:
    return {"type": "channelError", "channelId": channel_id, "error": error}


def communication_warning(warning: str, kind: str | None = None) -> dict:
    frame = {"type": "communicationWarning", "warning": warning}
    if kind:
        frame["kind"] = kind
    return frame


def signal_error(subscribe_id: int, error: dict, writable: bool = False) -> dict:
    return {"type": "writableSignalError" if writable else "signalError", "subscribeId": subscribe_id,
            "error": error}


# --- errors ---------------------------------------------------------------------------------------------------


class ProtocolError(LmsError):
    """An LmsError that carries LM Studio's displayData (the SDKs turn its code into a typed exception)."""

    def __init__(self, message: str, kind: Kind, display: dict, *, code: str | None = None,
                 param: str | None = None):
        super().__init__(message, kind, code=code, param=param)
        self.display = display


def serialize_error(error: BaseException) -> dict:
    """LM Studio's SerializedLMSExtendedError for any exception: our message, kind and code, and displayData
    where we know LM Studio's code for the failure."""
    if isinstance(error, LmsError):
        title = error.message
        data = {"kind": error.kind.value, "code": error.code, "param": error.param}
        serialized = {"title": title, "rootTitle": title,
                      "errorData": {key: value for key, value in data.items() if value is not None}}
        display = getattr(error, "display", None)
        if display:
            serialized["displayData"] = display
        return serialized
    title = f"Internal error: {type(error).__name__}"
    return {"title": title, "rootTitle": title}


def unknown_endpoint(kind: str, namespace: str, endpoint) -> tuple[dict, LmsError]:
    """The warning and the error a call to an endpoint this server does not serve gets."""
    what = "channel" if kind == "channel" else "RPC"
    message = f"The '{namespace}' namespace has no {what} endpoint {endpoint!r} on this server (lms)."
    warning = communication_warning(message, "channelEndpointUnknown" if kind == "channel" else "rpcEndpointUnknown")
    return warning, LmsError.not_found(message, "endpoint", code="endpoint_not_supported")


# --- KV config stacks -------------------------------------------------------------------------------------------


def collapse(stack) -> dict:
    """A KVConfigStack's fields as one dict, later layers overriding earlier ones (LM Studio's rule)."""
    fields: dict = {}
    if not isinstance(stack, dict):
        return fields
    for layer in stack.get("layers") or []:
        config = layer.get("config") if isinstance(layer, dict) else None
        for field in (config or {}).get("fields") or [] if isinstance(config, dict) else []:
            if isinstance(field, dict) and isinstance(field.get("key"), str):
                fields[field["key"]] = field.get("value")
    return fields


def layer_names(stack) -> list[str]:
    if not isinstance(stack, dict):
        return []
    return [layer.get("layerName") for layer in stack.get("layers") or [] if isinstance(layer, dict)]


def checkbox(value):
    """A checkbox setting's value: `{"checked": true, "value": x}` gives x; unchecked, `false` or absent gives
    None (no limit, sampler off)."""
    if isinstance(value, dict):
        if not value.get("checked"):
            return None
        value = value.get("value")
    if value is False or value is None:
        return None
    return value


def kv_config(fields: dict) -> dict:
    """A KVConfig, as the server returns one: `{"fields": [{key, value}]}`."""
    return {"fields": [{"key": key, "value": value} for key, value in fields.items()]}
