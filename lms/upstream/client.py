"""HTTP to one upstream server: its model list, JSON calls and server-sent event streams, with deadlines, and its
failures turned into lms errors of the right kind (the client's mistake stays a 400; the upstream's own trouble is
a 502 or 503 that names it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from lms.errors import Kind, LmsError
from lms.upstream.registry import Upstream

CONNECT_TIMEOUT_SECONDS = 5.0
LIST_TIMEOUT_SECONDS = 5.0
# A generation may think for long before its first token; each read (one event) must come within this.
READ_TIMEOUT_SECONDS = 300.0
DEFAULT_CONTEXT_LENGTH = 8192  # when the server does not say (OpenAI's model list has no such field)


class UpstreamClient:
    def __init__(self, upstream: Upstream, api_key: str | None):
        self.upstream = upstream
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS)
        # Upstreams are configured by the owner: loopback and the local network are what they are for, and no
        # proxy from the environment is put between lms and a server next to it.
        self.http = httpx.AsyncClient(base_url=upstream.url + "/", headers=headers, timeout=timeout,
                                      trust_env=False)

    async def close(self) -> None:
        await self.http.aclose()

    async def models(self) -> list[dict]:
        """The upstream's models: {id, type ("llm" or "embedding"), context_length, vision}."""
        data = await self.post_or_get("models", timeout=LIST_TIMEOUT_SECONDS)
        listed = data.get("data") if isinstance(data, dict) else None
        if not isinstance(listed, list):
            raise LmsError.upstream(f"Upstream '{self.upstream.name}' answered GET /models without a model list.",
                                    code="upstream_error")
        richer = await self._native_models()
        return [describe({**item, **richer.get(item["id"], {})}) for item in listed
                if isinstance(item, dict) and isinstance(item.get("id"), str)]

    async def _native_models(self) -> dict[str, dict]:
        """LM Studio's (and lms's) native list, where the server has one: it tells embedding models and context
        lengths, which OpenAI's list does not. Anything else answers nothing, and that is fine."""
        root = self.upstream.url.removesuffix("/v1")
        try:
            response = await self.http.get(f"{root}/api/v0/models", timeout=LIST_TIMEOUT_SECONDS)
            listed = response.json().get("data") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return {}
        return {item["id"]: item for item in listed or [] if isinstance(item, dict) and isinstance(item.get("id"), str)}

    async def post_or_get(self, path: str, body: dict | None = None, timeout: float | None = None) -> dict:
        try:
            if body is None:
                response = await self.http.get(path, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
            else:
                response = await self.http.post(path, json=body, timeout=timeout or httpx.USE_CLIENT_DEFAULT)
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None
        if response.status_code >= 400:
            raise self.failure(response.status_code, response.text, response.headers)
        try:
            return response.json()
        except ValueError:
            raise LmsError.upstream(f"Upstream '{self.upstream.name}' answered {path} with something that is not "
                                    "JSON.", code="upstream_error") from None

    async def stream(self, path: str, body: dict) -> AsyncIterator[dict]:
        """The JSON objects of a server-sent event stream, until [DONE]. A failure before the stream starts is
        raised as the upstream's error; closing this iterator closes the connection (the upstream cancels)."""
        try:
            async with self.http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    raise self.failure(response.status_code, (await response.aread()).decode(errors="replace"),
                                       response.headers)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        chunk = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(chunk, dict) and isinstance(chunk.get("error"), dict | str):
                        raise self.failure(500, json.dumps(chunk), {})
                    yield chunk
        except httpx.HTTPError as exc:
            raise self.unreachable(exc) from None

    def unreachable(self, exc: httpx.HTTPError) -> LmsError:
        detail = str(exc) or type(exc).__name__
        return LmsError.unavailable(f"Upstream '{self.upstream.name}' ({self.upstream.url}) cannot be reached: "
                                    f"{detail}", "model", code="upstream_unreachable", retry_after=5)

    def failure(self, status: int, text: str, headers) -> LmsError:
        """The upstream's error answer as an lms error: its own message, and a kind that says whose fault it is."""
        message, code, param = text[:500], None, None
        try:
            error = json.loads(text).get("error")
            if isinstance(error, dict):
                message = str(error.get("message") or message)
                code, param = error.get("code"), error.get("param")
            elif isinstance(error, str):
                message = error
        except (ValueError, AttributeError):
            pass
        named = f"Upstream '{self.upstream.name}': {message}"
        code = code if isinstance(code, str) else None
        param = param if isinstance(param, str) else None
        if status in (429, 503):
            retry = headers.get("retry-after", "")
            return LmsError(named, Kind.UNAVAILABLE, code=code or "upstream_busy", param=param,
                            retry_after=int(retry) if retry.isdigit() else 5)
        if status == 404:
            return LmsError(named, Kind.NOT_FOUND, code=code or "model_not_found", param=param or "model")
        if status == 413:
            return LmsError(named, Kind.TOO_LARGE, code=code, param=param)
        if 400 <= status < 500 and status not in (401, 403):
            return LmsError(named, Kind.INVALID, code=code or "invalid_value", param=param)
        # 401/403: lms's key for the upstream is wrong, not the client's; 5xx: the upstream failed
        return LmsError(named + f" (HTTP {status})", Kind.UPSTREAM, code="upstream_error")


def describe(item: dict) -> dict:
    """What lms needs to know of one listed model, from the fields the common servers add to OpenAI's list:
    LM Studio and lms (`type`, `max_context_length`, `context_length`), vLLM (`max_model_len`), llama-server
    (`meta.n_ctx_train`)."""
    meta = item.get("meta") if isinstance(item.get("meta"), dict) else {}
    context = next((value for value in (item.get("context_length"), item.get("loaded_context_length"),
                                        item.get("max_context_length"),
                                        item.get("max_model_len"), meta.get("n_ctx_train"))
                    if isinstance(value, int) and not isinstance(value, bool) and value > 0),
                   DEFAULT_CONTEXT_LENGTH)
    kind = str(item.get("type") or "")
    capabilities = item.get("capabilities")
    embedding = kind.startswith("embedding") or "embed" in item["id"].lower() or (
        isinstance(capabilities, list | dict) and "embedding" in capabilities)
    vision = kind == "vlm" or (isinstance(capabilities, list | dict) and "vision" in capabilities)
    return {"id": item["id"], "type": "embedding" if embedding else "llm", "context_length": context,
            "vision": bool(vision)}
