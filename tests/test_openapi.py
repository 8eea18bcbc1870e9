"""`GET /openapi.json` describes every public route, with the request bodies' real schemas; and a bounded, seeded
schemathesis run of every operation it describes, against the real server and its real models, gets no 5xx
answer and no dropped connection.

The run sends what the schemas generate, valid (positive) and broken (negative), with adjustments that keep it
short and the shared daemon as it was: every model name is the loaded chat model, the embedding model or an unknown
one (a generated name could fuzzy-match another model and load it), generations are capped at a few tokens, no
Ollama `keep_alive` is sent (0 unloads the model), a download never names an owner/repo (that would reach
Hugging Face), and Ollama's delete, copy and create never name a real model (they would change the models on disk)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET
from starlette.routing import Route, WebSocketRoute

from lms.api.app import api_routes
from lms.api.openai.schemas import ChatCompletionBody
from lms.api.openapi import REF_TEMPLATE, document
from lms.conversation.request import CreateResponse
from tests.conftest import CHAT_MODEL, EMBEDDING_MODEL

EXAMPLES = 8  # per operation and generation mode: about 400 requests in all
UNKNOWN_MODEL = "lms-test/no-such-model"
MAX_TOKENS = 8
LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
LIMIT_OF = {"/v1/chat/completions": "max_tokens", "/api/v0/chat/completions": "max_tokens",
            "/v1/completions": "max_tokens", "/api/v0/completions": "max_tokens",
            "/v1/responses": "max_output_tokens", "/api/v1/chat": "max_output_tokens"}  # /v1/messages requires one
EMBEDDINGS = {"/v1/embeddings", "/api/v0/embeddings", "/api/embed", "/api/embeddings"}
OLLAMA_GENERATIONS = {"/api/chat", "/api/generate"}  # their limit is options.num_predict
NEVER_LOADS = {"/api/v1/models/load"}  # a real name would load another instance, or a fuzzed context length
DOWNLOADS = {"/api/v1/models/download", "/api/pull"}
NEVER_RESOLVES = {"/api/delete": ("model", "name"), "/api/copy": ("source",), "/api/create": ("from",)}  # on disk
DESIGNED = {("POST", "/api/push", 501)}  # answers that are >= 500 on purpose (and documented so)
NO_MODEL = {"/api/v1/models/unload"}


def _operations(routes) -> set[tuple[str, str]]:
    """(method, path) of each HTTP route; the HEAD that Starlette adds to every GET is the GET's."""
    return {(method, route.path_format) for route in routes if isinstance(route, Route)
            for method in route.methods if method != "HEAD" or "GET" not in route.methods}


def _documented(doc: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if not method.startswith("x-")}


def _refs(value) -> list[str]:
    if isinstance(value, dict):
        return ([value["$ref"]] if isinstance(value.get("$ref"), str) else []) + \
            [ref for item in value.values() for ref in _refs(item)]
    return [ref for item in value for ref in _refs(item)] if isinstance(value, list) else []


def test_every_route_is_documented():
    """A route added to the app without an entry in lms/api/openapi.py fails here (and one documented but gone)."""
    doc = document()
    assert _documented(doc) == _operations(api_routes())
    sockets = {route.path for route in api_routes() if isinstance(route, WebSocketRoute)}
    assert sockets == {path for path, item in doc["paths"].items() if "x-websocket" in item}


def test_bodies_are_the_validating_models():
    doc = document()
    schemas = doc["components"]["schemas"]
    assert all(ref.removeprefix("#/components/schemas/") in schemas for ref in _refs(doc))

    def body(method: str, path: str) -> str:
        return doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]

    assert body("post", "/v1/chat/completions") == REF_TEMPLATE.format(model="ChatCompletionBody")
    assert body("post", "/api/v0/chat/completions") == body("post", "/v1/chat/completions")
    assert body("post", "/v1/responses") == REF_TEMPLATE.format(model="CreateResponse")
    assert body("post", "/v1/messages") == REF_TEMPLATE.format(model="MessagesBody")
    for model in (ChatCompletionBody, CreateResponse):
        own = model.model_json_schema(ref_template=REF_TEMPLATE)
        assert schemas[model.__name__]["properties"].keys() == own["properties"].keys()
        assert schemas[model.__name__]["properties"]["temperature"] == own["properties"]["temperature"]
        assert schemas[model.__name__].get("required") == own.get("required")
    for (method, path) in _documented(doc):
        operation = doc["paths"][path][method.lower()]
        assert "requestBody" in operation or method != "POST" or path == "/api/push", (method, path)  # push reads none
        assert {"200", "4XX", "5XX"} <= set(operation["responses"])
    streaming = doc["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert set(streaming) == {"application/json", "text/event-stream"}
    assert doc["paths"]["/v1/messages"]["post"]["responses"]["4XX"]["content"]["application/json"]["schema"] == {
        "$ref": REF_TEMPLATE.format(model="AnthropicError")}


def test_served_document_is_valid_openapi(served):
    served_doc = httpx.get(served.base_url + "/openapi.json", timeout=30).json()
    assert served_doc == json.loads(json.dumps(document()))
    assert served_doc["openapi"] == "3.1.0"
    schema = schemathesis.openapi.from_url(served.base_url + "/openapi.json")
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    loaded = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert loaded == _documented(served_doc) - {("GET", "/openapi.json")}  # it leaves out its own address


@dataclass
class Tally:
    sent: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def record(self, case, outcome: int | Exception) -> None:
        self.sent += 1
        body = "" if case.body is NOT_SET else json.dumps(case.body) if not isinstance(case.body, bytes) else case.body
        what = f"{case.method} {case.formatted_path} {case.query or ''} {str(body)[:2000]}"
        if isinstance(outcome, Exception):
            self.dropped.append(f"{what}: {type(outcome).__name__}: {outcome}")
            return
        self.by_status[outcome] = self.by_status.get(outcome, 0) + 1
        if outcome >= 500 and (case.method, case.operation.path, outcome) not in DESIGNED:
            self.server_errors.append(f"{outcome} {what}")


def _adjust(path: str, body, model: str, fill: bool) -> None:
    """Keep a generated body short to run and harmless to the shared daemon (see the module's docstring); `fill`
    names a model where a valid body left it out (several models are loaded: a request must name one)."""
    if not isinstance(body, dict):
        return
    if path in DOWNLOADS:
        for name in ("model", "name"):
            if isinstance(body.get(name), str):
                body[name] = body[name].replace("/", "")
        return
    for name in NEVER_RESOLVES.get(path, ()):
        if isinstance(body.get(name), str):
            body[name] = UNKNOWN_MODEL
    if isinstance(body.get("model"), str) or (fill and "model" not in body and path not in NO_MODEL):
        body["model"] = UNKNOWN_MODEL if path in NEVER_LOADS or path in NEVER_RESOLVES else model
    if isinstance(body.get("draft_model"), str):
        body["draft_model"] = UNKNOWN_MODEL
    body.pop("keep_alive", None)  # Ollama's: 0 unloads the model, a short one would let it unload soon
    if path in OLLAMA_GENERATIONS:
        options = body.setdefault("options", {})
        if isinstance(options, dict) and _unbounded(options.get("num_predict")):
            options["num_predict"] = MAX_TOKENS
    for name in LIMITS:
        if name in body and _unbounded(body[name]):
            body[name] = MAX_TOKENS
    if path in LIMIT_OF and not any(name in body for name in LIMITS):
        body[LIMIT_OF[path]] = MAX_TOKENS


def _unbounded(value) -> bool:
    """Whether a token limit could let a generation run long: null and -1 mean "until the context is full", and
    lax validation takes 1e9 or "100000" for a number."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return False
    if isinstance(value, bool) or not isinstance(value, int | float | type(None)):
        return False
    return value is None or not 0 <= value <= MAX_TOKENS


def _fuzz(operation, mode: GenerationMode, base_url: str, session: requests.Session, tally: Tally) -> None:
    """EXAMPLES seeded cases of one operation in one mode, each sent once; what came back goes in the tally."""
    path = operation.path
    real = EMBEDDING_MODEL if path in EMBEDDINGS else CHAT_MODEL

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode), model=st.sampled_from([real, real, real, UNKNOWN_MODEL]))
    def send(case, model):
        _adjust(path, case.body, model, fill=mode is GenerationMode.POSITIVE)
        try:
            outcome: int | Exception = case.call(base_url=base_url, session=session, timeout=120).status_code
        except Exception as exc:  # a reset or cut answer is what we count
            outcome = exc
            session.close()
        tally.record(case, outcome)

    send()


def test_schemathesis_finds_no_server_error(served):
    schema = schemathesis.openapi.from_url(served.base_url + "/openapi.json")
    tally = Tally()
    session = requests.Session()
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        breakable = bool(operation.body) or bool(operation.query)  # a bare GET has no broken form
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if breakable else (GenerationMode.POSITIVE,):
            _fuzz(operation, mode, served.base_url, session, tally)
    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {tally.sent} cases in {elapsed:.0f} s, {len(tally.server_errors)} with status >= 500, "
          f"{len(tally.dropped)} dropped; statuses {dict(sorted(tally.by_status.items()))}")
    assert tally.sent >= 200
    assert not tally.server_errors, "\n".join(tally.server_errors[:20])
    assert not tally.dropped, "\n".join(tally.dropped[:20])
    # The daemon and its chat model still answer.
    answer = httpx.post(served.base_url + "/v1/chat/completions", timeout=60, json={
        "model": CHAT_MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2})
    assert answer.status_code == 200, answer.text
