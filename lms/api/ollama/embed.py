"""POST /api/embed (`input` a string or a list; `dimensions`) and the legacy POST /api/embeddings (`prompt`)."""

from __future__ import annotations

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.context import pipeline_of
from lms.api.http import read_json, until_disconnect
from lms.api.ollama.keep_alive import model_for
from lms.api.ollama.schemas import OllamaBody
from lms.api.ollama.wire import Timer, nanoseconds, ollama_route


class EmbedBody(OllamaBody):
    model: str = Field(min_length=1)
    input: str | list[str] = ""
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    keep_alive: float | str | None = None


class EmbeddingsBody(OllamaBody):
    model: str = Field(min_length=1)
    prompt: str = ""
    keep_alive: float | str | None = None


async def _embed(request: Request, name: str, inputs: list[str], keep_alive, dimensions: int | None = None,
                 truncate: bool = True):
    timer = Timer()
    model, _ = await model_for(request, name, keep_alive, timer)
    if not inputs:  # only loads the model, as Ollama does
        return {"embeddings": [], "prompt_tokens": 0}, timer
    return await until_disconnect(request, pipeline_of(request).embed(model, inputs, dimensions, truncate)), timer


@ollama_route
async def embed(request: Request):
    body = EmbedBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    inputs = [body.input] if isinstance(body.input, str) else list(body.input)
    inputs = [text for text in inputs if text] if isinstance(body.input, str) else inputs
    result, timer = await _embed(request, body.model, inputs, body.keep_alive, body.dimensions, body.truncate)
    return JSONResponse({"model": body.model, "embeddings": result["embeddings"],
                         "total_duration": timer.total(), "load_duration": nanoseconds(timer.load_seconds),
                         "prompt_eval_count": result["prompt_tokens"]})


@ollama_route
async def embeddings(request: Request):
    body = EmbeddingsBody.model_validate(await read_json(request, any_type_outside_browsers=True))
    result, _ = await _embed(request, body.model, [body.prompt] if body.prompt else [], body.keep_alive)
    return JSONResponse({"embedding": result["embeddings"][0] if result["embeddings"] else []})
