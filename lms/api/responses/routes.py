"""HTTP, SSE and WebSocket endpoints of /v1/responses, plus retrieval, deletion, input items and compaction."""

from __future__ import annotations

import json
import time

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from lms.api.context import pipeline_of, session_of
from lms.api.errors import error_type, from_validation, status_of
from lms.api.http import parse_json_object, read_json, until_disconnect
from lms.conversation import compaction
from lms.conversation.items import normalize_input, to_messages
from lms.conversation.request import CompactResponse, CreateResponse
from lms.conversation.session import previous_not_found
from lms.conversation.turn import ResponseRun
from lms.errors import LmsError
from lms.generation.ids import new_id

WEBSOCKET_LIFETIME_SECONDS = 60 * 60


def _wire_error(exc: LmsError) -> dict:
    """A turn's failure as the streaming `error` event carries it."""
    return {"type": error_type(exc), "code": exc.code or "server_error", "message": exc.message, "param": exc.param}


def _wire(event: dict) -> dict:
    return {**event, "error": _wire_error(event["error"])} if event["type"] == "error" else event


def _not_found(response_id: str) -> LmsError:
    return LmsError.not_found(f"No response found with id '{response_id}'.", "response_id")


async def create(request: Request):
    body = CreateResponse.model_validate(await read_json(request))
    if body.background:
        raise LmsError.invalid("Background mode is not supported; stream the response instead.", "background",
                               code="unsupported_parameter")
    run = ResponseRun(body, session_of(request))
    events = run.events()
    if body.stream:
        first = await anext(events)  # errors before the first event are plain HTTP errors

        async def sse():
            yield _sse(first)
            async for event in events:
                yield _sse(_wire(event))
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def finish():
        async for _event in events:
            pass

    await until_disconnect(request, finish())
    if run.error:
        raise run.error
    return JSONResponse(run.response)


def _sse(event: dict) -> str:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


async def retrieve(request: Request):
    stored = request.app.state.responses.get(request.path_params["response_id"])
    if stored is None:
        raise _not_found(request.path_params["response_id"])
    return JSONResponse(stored.response)


async def delete(request: Request):
    response_id = request.path_params["response_id"]
    if not request.app.state.responses.delete(response_id):
        raise _not_found(response_id)
    return JSONResponse({"id": response_id, "object": "response", "deleted": True})


async def input_items(request: Request):
    response_id = request.path_params["response_id"]
    params = request.query_params
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise LmsError.invalid("'order' must be 'asc' or 'desc'", "order")
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise LmsError.invalid("'limit' must be between 1 and 100", "limit")
    page = request.app.state.responses.list_input_items(response_id, after=params.get("after"), limit=limit,
                                                        order=order)
    if page is None:
        raise _not_found(response_id)
    items, has_more = page
    return JSONResponse({"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                         "last_id": items[-1]["id"] if items else None, "has_more": has_more})


async def compact(request: Request):
    """Pack a conversation (input, or a previous response's whole context) into one compaction item."""
    body = CompactResponse.model_validate(await read_json(request))
    session = session_of(request)
    items: list[dict] = []
    if body.previous_response_id:
        stored = session.find(body.previous_response_id)
        if stored is None:
            raise previous_not_found(body.previous_response_id)
        items = stored.context + stored.response.get("output", [])
    items += normalize_input(body.input)
    pipeline = pipeline_of(request)
    model = await pipeline.model(body.model, body.ttl)
    expanded = []
    for item in items:  # nested compactions flatten into the new one
        expanded.extend(compaction.unseal(item["encrypted_content"]) if item["type"] == "compaction" else [item])
    tokens = await pipeline.count_tokens(model, to_messages(
        [i for i in expanded if i["type"] != "function_call_output"], body.instructions))
    item = {"id": new_id("cmp_"), "type": "compaction", "encrypted_content": compaction.seal(expanded),
            "created_by": model.identifier}
    return JSONResponse({
        "id": new_id("resp_", 48), "object": "response.compaction", "created_at": int(time.time()),
        "output": [item],
        "usage": {"input_tokens": tokens, "output_tokens": 0, "total_tokens": tokens,
                  "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
    })


async def input_tokens(request: Request):
    """OpenAI's `POST /v1/responses/input_tokens`: the prompt tokens the first generation of this Responses body
    would have (previous_response_id, instructions, function and MCP tools, images), counted with the model's own
    template and tokenizer, without generating or storing anything."""
    body = CreateResponse.model_validate(await read_json(request))
    pipeline = pipeline_of(request)
    model = await pipeline.model(body.model, body.ttl)
    run = ResponseRun(body.model_copy(update={"model": model.identifier, "stream": False}), session_of(request))
    await run._prepare()  # the same state, tools and images the turn itself would resolve
    tokens = await pipeline.count_chat(run._chat_input(), run.model, run.images)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": tokens})


async def websocket(socket: WebSocket):
    """WebSocket mode: `response.create` messages in, the same events out; one response at a time, and a
    connection-local cache so `store: false` turns can be continued on this connection (and only here)."""
    await socket.accept()
    local: dict = {}
    session = None  # made at the first message: a client may authenticate with that message (lms/api/auth.py)
    opened = time.monotonic()
    try:
        while True:
            message = await _next_message(socket)
            if message is None:
                return
            if time.monotonic() - opened > WEBSOCKET_LIFETIME_SECONDS:
                await _ws_error(socket, LmsError.invalid("The connection reached its 60-minute limit; reconnect.",
                                                         code="websocket_connection_limit_reached"))
                await socket.close()
                return
            try:
                data = parse_json_object(message)
                if data.get("type") != "response.create":
                    raise LmsError.invalid("Messages must be JSON objects of type 'response.create'.", "type",
                                           code="invalid_message")
                data = {k: v for k, v in data.items() if k not in ("type", "stream", "stream_options", "background")}
                session = session or session_of(socket, local=local)
                run = ResponseRun(CreateResponse.model_validate(data), session)
                async for event in run.events():
                    if event["type"] == "error":
                        continue  # over WebSocket the turn's one terminal message is response.failed
                    await socket.send_text(json.dumps(event, separators=(",", ":")))
            except ValueError as exc:  # bad JSON or a validation error
                error = from_validation(exc) if isinstance(exc, ValidationError) else LmsError.invalid(
                    f"The message is not valid JSON: {exc}", code="invalid_json")
                await _ws_error(socket, error)
            except LmsError as exc:
                await _ws_error(socket, exc)
    except WebSocketDisconnect:
        return


async def _next_message(socket: WebSocket) -> bytes | None:
    """The next message as bytes: a text frame's UTF-8, or a binary frame as sent (JSON either way, checked by
    the caller); None once the client has gone."""
    message = await socket.receive()
    if message["type"] == "websocket.disconnect":
        return None
    if message.get("text") is not None:
        return message["text"].encode("utf-8", "surrogatepass")
    return message.get("bytes") or b""


async def _ws_error(socket: WebSocket, error: LmsError) -> None:
    await socket.send_text(json.dumps({"type": "error", "status": status_of(error), "error": _wire_error(error)}))


def routes() -> list:
    return [
        Route("/v1/responses", create, methods=["POST"]),
        WebSocketRoute("/v1/responses", websocket),
        Route("/v1/responses/compact", compact, methods=["POST"]),
        Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
        Route("/v1/responses/{response_id}", retrieve, methods=["GET"]),
        Route("/v1/responses/{response_id}", delete, methods=["DELETE"]),
        Route("/v1/responses/{response_id}/input_items", input_items, methods=["GET"]),
    ]
