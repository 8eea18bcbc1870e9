"""`GET /openapi.json`: an OpenAPI 3.1 description of every public HTTP route.

Request bodies are the JSON schemas of the pydantic models the routes validate with (lms/api/bodies.py holds
those of the routes that read their body field by field), generated together into `components/schemas`, so
the document cannot drift from the validation. Each route's errors are described by its surface's one error
shape; a route that may stream answers `text/event-stream` (NDJSON on Ollama's routes). The WebSocket mode of
/v1/responses is not an HTTP operation: it is described in the `x-websocket` extension of that path.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse

from lms import __version__
from lms.api import bodies
from lms.api.auth import SDK_WEBSOCKET_PATHS
from lms.api.lmstudio.schema import LmStudioSdkFrame, namespace_description
from lms.api.ollama.embed import EmbedBody, EmbeddingsBody
from lms.api.ollama.manage import CreateBody, PullBody
from lms.api.ollama.schemas import ChatBody, CopyBody, GenerateBody, NamedModelBody
from lms.api.openai.schemas import ChatCompletionBody, CompletionBody, EmbeddingBody
from lms.api.tokenize import DetokenizeBody, TokenizeBody
from lms.conversation.request import CompactResponse, CreateResponse

JSON = "application/json"
SSE = "text/event-stream"
NDJSON = "application/x-ndjson"
TEXT = "text/plain"
REF_TEMPLATE = "#/components/schemas/{model}"


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, permission_error or server_error")
    param: str | None = Field(None, description="the request field at fault, where there is one")
    code: str | None = Field(None, description="a stable code, e.g. model_not_found or missing_required_parameter")


class Error(BaseModel):
    """Every error but those of /v1/messages: OpenAI's shape."""

    error: ErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, not_found_error, overloaded_error, api_error, ...")
    message: str


class AnthropicError(BaseModel):
    """The errors of /v1/messages: Anthropic's shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class OllamaError(BaseModel):
    """The errors of Ollama's routes: Ollama's shape."""

    error: str


class MessagesCountBody(BaseModel):
    """The body of Anthropic's `POST /v1/messages/count_tokens`: that of /v1/messages without max_tokens."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[bodies.AnthropicMessage] = Field(min_length=1)
    system: str | list[bodies.AnthropicBlock] | None = None
    tools: list[bodies.AnthropicTool] | None = None
    tool_choice: bodies.AnthropicToolChoice | None = None
    thinking: bodies.AnthropicThinking | None = None


@dataclass(frozen=True)
class Endpoint:
    """One operation: a method on a path written as Starlette formats it (`{name}` for each path parameter)."""

    method: str
    path: str
    tag: str
    summary: str
    answer: str = "The result, as JSON."
    body: type[BaseModel] | None = None
    streams: str | None = None  # the media type of the answer when the body asks for a stream
    media: str = JSON
    error: type[BaseModel] = Error
    query: tuple[dict, ...] = ()
    upload: bool = False  # the body is raw bytes (application/octet-stream)
    also: tuple[tuple[str, str], ...] = ()  # other answers by design: (status, description)


PATH_PARAMETERS = {
    "model": "A model key or a loaded model's identifier; it may contain '/'.",
    "response_id": "A stored response's id (resp_...).",
    "job_id": "A download job's id.",
    "digest": "A blob's digest, sha256:<64 hex digits>.",
}

INPUT_ITEMS_QUERY = (
    {"name": "order", "in": "query", "required": False, "schema": {"type": "string", "enum": ["asc", "desc"]},
     "description": "Oldest first (asc) or newest first (desc, the default)."},
    {"name": "limit", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
    {"name": "after", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "An item id: the page starts after it."},
)

STREAMED = "The result as JSON or, with `\"stream\": true`, as server-sent events."
NDJSON_STREAMED = "The result as JSON lines (NDJSON, the default) or, with `\"stream\": false`, as one JSON object."

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/lmstudio-greeting", "meta", "Liveness check", '`{"lmstudio": true}`; never needs a token.'),
    Endpoint("GET", "/health", "meta", "Health check", '`{"status": "ok"}`; never needs a token.',
             query=({"name": "model", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Ask about this model only: 503 while it loads."},),
             also=(("503", 'The daemon is starting or a model is loading: `{"status": "loading", "reason", '
                           '"loading": [identifiers]}`.'),)),
    Endpoint("POST", "/tokenize", "meta", "Tokenize text (llama-server's)",
             '`{"tokens": [id]}`, or with `with_pieces` `{"tokens": [{"id", "piece"}]}`.', TokenizeBody),
    Endpoint("POST", "/detokenize", "meta", "Detokenize token ids (llama-server's)", '`{"content"}`.',
             DetokenizeBody),
    Endpoint("GET", "/lms-status", "meta", "Server identity", '`{"package": "lms", "version"}`, what LM Studio\'s '
             '`lms` CLI probes; never needs a token.'),
    Endpoint("GET", "/openapi.json", "meta", "This document", "The OpenAPI 3.1 document."),
    Endpoint("GET", "/metrics", "meta", "Prometheus metrics", "Metrics in Prometheus' text format.", media=TEXT),
    Endpoint("GET", "/v1/models", "openai", "List the models a request may name",
             "`{object: list, data: [{id, object: model, owned_by}]}`."),
    Endpoint("GET", "/v1/models/{model}", "openai", "One model", "`{id, object: model, owned_by}`."),
    Endpoint("POST", "/v1/chat/completions", "openai", "Chat completion", STREAMED, ChatCompletionBody, SSE),
    Endpoint("POST", "/v1/completions", "openai", "Text completion of a raw prompt", STREAMED, CompletionBody, SSE),
    Endpoint("POST", "/v1/embeddings", "openai", "Embeddings", "`{object: list, data: [{embedding, index}]}`.",
             EmbeddingBody),
    Endpoint("POST", "/api/v0/chat/completions", "lmstudio", "Chat completion with LM Studio's stats",
             STREAMED, ChatCompletionBody, SSE),
    Endpoint("POST", "/api/v0/completions", "lmstudio", "Text completion with LM Studio's stats", STREAMED,
             CompletionBody, SSE),
    Endpoint("POST", "/api/v0/embeddings", "lmstudio", "Embeddings with LM Studio's model_info",
             "The embeddings, model_info and runtime.", EmbeddingBody),
    Endpoint("POST", "/v1/responses", "responses", "Create a response (Open Responses)", STREAMED, CreateResponse,
             SSE),
    Endpoint("POST", "/v1/responses/compact", "responses", "Compact a conversation into one item",
             "`{id, object: response.compaction, output: [compaction item], usage}`.", CompactResponse),
    Endpoint("POST", "/v1/responses/input_tokens", "responses", "Count a response's input tokens",
             "`{object: response.input_tokens, input_tokens}`.", CreateResponse),
    Endpoint("GET", "/v1/responses/{response_id}", "responses", "A stored response", "The response object."),
    Endpoint("DELETE", "/v1/responses/{response_id}", "responses", "Delete a stored response",
             "`{id, object: response, deleted: true}`."),
    Endpoint("GET", "/v1/responses/{response_id}/input_items", "responses", "A stored response's input items",
             "`{object: list, data, first_id, last_id, has_more}`.", query=INPUT_ITEMS_QUERY),
    Endpoint("POST", "/v1/messages", "anthropic", "Anthropic Messages", STREAMED, bodies.MessagesBody, SSE,
             error=AnthropicError),
    Endpoint("POST", "/v1/messages/count_tokens", "anthropic", "Count a message's input tokens (Anthropic)",
             "`{input_tokens}`.", MessagesCountBody, error=AnthropicError),
    Endpoint("GET", "/api/v0/models", "lmstudio", "List the downloaded models (v0)", "`{object: list, data}`."),
    Endpoint("GET", "/api/v0/models/{model}", "lmstudio", "One downloaded model (v0)", "The model."),
    Endpoint("GET", "/api/v1/models", "lmstudio", "List the downloaded models and their instances",
             "`{models: [...]}`."),
    Endpoint("POST", "/api/v1/models/load", "lmstudio", "Load a model",
             "`{type, instance_id, load_time_seconds, status: loaded, load_config?}`.", bodies.LoadBody),
    Endpoint("POST", "/api/v1/models/unload", "lmstudio", "Unload a model instance", "`{instance_id}`.",
             bodies.UnloadBody),
    Endpoint("POST", "/api/v1/chat", "lmstudio", "Stateful chat with MCP integrations", STREAMED,
             bodies.NativeChatBody, SSE),
    Endpoint("POST", "/api/v1/models/download", "lmstudio", "Download a model from Hugging Face",
             "`{job_id, status, total_size_bytes, started_at}`.", bodies.DownloadBody),
    Endpoint("GET", "/api/v1/models/download/status/{job_id}", "lmstudio", "A download job's progress",
             "`{job_id, status, total_size_bytes, downloaded_bytes, ...}`."),
    Endpoint("GET", "/", "ollama", "Ollama's liveness check", "`Ollama is running`.", media=TEXT, error=OllamaError),
    Endpoint("GET", "/api/version", "ollama", "The Ollama API version followed", "`{version}`.", error=OllamaError),
    Endpoint("GET", "/api/tags", "ollama", "List the downloaded models (Ollama)", "`{models: [...]}`.",
             error=OllamaError),
    Endpoint("GET", "/api/ps", "ollama", "List the loaded models (Ollama)", "`{models: [...]}`.", error=OllamaError),
    Endpoint("POST", "/api/show", "ollama", "A model's details (Ollama)",
             "`{modelfile, parameters, template, details, model_info, capabilities, modified_at}`.",
             NamedModelBody, error=OllamaError),
    Endpoint("POST", "/api/chat", "ollama", "Chat (Ollama)", NDJSON_STREAMED, ChatBody, NDJSON, error=OllamaError),
    Endpoint("POST", "/api/generate", "ollama", "Generate from a prompt (Ollama)", NDJSON_STREAMED, GenerateBody,
             NDJSON, error=OllamaError),
    Endpoint("POST", "/api/embed", "ollama", "Embeddings (Ollama)", "`{model, embeddings, ...}`.", EmbedBody,
             error=OllamaError),
    Endpoint("POST", "/api/embeddings", "ollama", "One embedding (Ollama's older route)", "`{embedding}`.",
             EmbeddingsBody, error=OllamaError),
    Endpoint("POST", "/api/pull", "ollama", "Download a model from Hugging Face (hf.co/{owner}/{repo}:{quant})",
             "Progress as JSON lines (the default) or, with `\"stream\": false`, the last status.", PullBody,
             NDJSON, error=OllamaError),
    Endpoint("POST", "/api/push", "ollama", "Not supported", "Never: lms pushes to no registry.", error=OllamaError,
             also=(("501", "Always: lms does not push models to a registry."),)),
    Endpoint("DELETE", "/api/delete", "ollama", "Delete a downloaded model", "Deleted (an empty answer).",
             NamedModelBody, error=OllamaError),
    Endpoint("POST", "/api/copy", "ollama", "Copy a model under a new name", "Copied (an empty answer).",
             CopyBody, error=OllamaError),
    Endpoint("POST", "/api/create", "ollama", "Create a model from an uploaded blob or a local model",
             NDJSON_STREAMED, CreateBody, NDJSON, error=OllamaError),
    Endpoint("HEAD", "/api/blobs/{digest}", "ollama", "Whether a blob was uploaded", "It was (404: it was not).",
             media=TEXT, error=OllamaError),
    Endpoint("POST", "/api/blobs/{digest}", "ollama", "Upload a blob (a GGUF file) for /api/create",
             "It was there already (201: stored now).", media=TEXT, error=OllamaError, upload=True),
)

WEBSOCKETS = {
    "/v1/responses": {
        "description": "WebSocket mode: send `{\"type\": \"response.create\", ...}` messages (the fields of "
                       "a POST /v1/responses body); each turn's events come back as JSON text messages, one "
                       "response at a time, for at most 60 minutes per connection.",
        "message": CreateResponse,
    },
    # LM Studio's SDK namespaces (lms/api/lmstudio, docs/sdk.md)
    **{path: {"description": namespace_description(path[1:]), "message": LmStudioSdkFrame}
       for path in sorted(SDK_WEBSOCKET_PATHS)},
}


def _operation_id(endpoint: Endpoint) -> str:
    return endpoint.method.lower() + re.sub(r"[^a-z0-9]+", "_", endpoint.path.lower()).rstrip("_")


def _operation(endpoint: Endpoint, refs: dict[type[BaseModel], dict]) -> dict:
    success: dict = {endpoint.media: {"schema": {"type": "string"} if endpoint.media != JSON else {}}}
    if endpoint.streams:
        success[endpoint.streams] = {"schema": {"type": "string"}}
    error = {"content": {JSON: {"schema": refs[endpoint.error]}}}
    operation: dict = {
        "operationId": _operation_id(endpoint),
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "responses": {"200": {"description": endpoint.answer, "content": success},
                      "4XX": {"description": "The request was refused.", **error},
                      "5XX": {"description": "The server or a model worker failed.", **error}},
    }
    parameters = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": PATH_PARAMETERS[name]} for name in re.findall(r"{(\w+)}", endpoint.path)]
    parameters += endpoint.query
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": refs[endpoint.body]}}}
    if endpoint.upload:
        operation["requestBody"] = {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
    for status, description in endpoint.also:
        operation["responses"][status] = {"description": description, **error}
    return operation


@functools.cache
def document() -> dict:
    """The OpenAPI document: built once, from ENDPOINTS and the schemas of their bodies."""
    models = {e.body for e in ENDPOINTS if e.body} | {e.error for e in ENDPOINTS}
    models |= {ws["message"] for ws in WEBSOCKETS.values()}
    ordered = sorted(models, key=lambda model: model.__name__)
    keys, top = models_json_schema([(model, "validation") for model in ordered], ref_template=REF_TEMPLATE)
    refs = {model: keys[(model, "validation")] for model in ordered}
    paths: dict[str, dict] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    for path, socket in WEBSOCKETS.items():
        paths.setdefault(path, {})["x-websocket"] = {"description": socket["description"],
                                                    "message": refs[socket["message"]]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "lms", "version": __version__,
                 "description": "The OpenAI-compatible, Anthropic-compatible, Open Responses and LM Studio "
                                "native HTTP API of the lms daemon. When an API token is set, every route but "
                                "/lmstudio-greeting needs `Authorization: Bearer <token>` (or `x-api-key`)."},
        "paths": paths,
        "components": {"schemas": top.get("$defs", {})},
    }


async def openapi_json(_request: Request) -> JSONResponse:
    return JSONResponse(document())
