"""llama-server's token endpoints, `POST /tokenize` and `POST /detokenize`, on any loaded (or JIT-loaded) model: the
model's own tokenizer, no chat template. Errors have OpenAI's shape, as on the other plumbing routes.

The exact prompt counts of whole requests live with their surfaces: `/v1/messages/count_tokens`
(lms/api/anthropic.py) and `/v1/responses/input_tokens` (lms/api/responses/routes.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lms.api.context import pipeline_of
from lms.api.http import read_json

MAX_TOKENS = 1 << 20  # ids in one detokenize request (a 32 MiB body holds fewer anyway)


class TokenizeBody(BaseModel):
    """The body of `POST /tokenize` (llama-server's)."""

    model_config = ConfigDict(extra="allow")
    content: str = Field(description="the text; special tokens written in it are parsed as such")
    add_special: bool = Field(False, description="add BOS (and EOS) where the model adds them to a prompt")
    with_pieces: bool = Field(False, description="answer [{id, piece}]: piece is the token's text, or its bytes "
                                                 "as a list of numbers when they are not valid UTF-8 alone")
    model: str | None = Field(None, description="the model (JIT-loaded if need be); the loaded one if only one is")


class DetokenizeBody(BaseModel):
    """The body of `POST /detokenize` (llama-server's)."""

    model_config = ConfigDict(extra="allow")
    tokens: list[int] = Field(max_length=MAX_TOKENS, description="token ids of the model's vocabulary")
    model: str | None = Field(None, description="the model (JIT-loaded if need be); the loaded one if only one is")


def tokens_answer(result: dict, with_pieces: bool) -> dict:
    """llama-server's answer: {"tokens": [id]} or, with pieces, {"tokens": [{"id", "piece"}]}."""
    if not with_pieces:
        return {"tokens": result["tokens"]}
    return {"tokens": [{"id": token, "piece": piece} for token, piece in zip(result["tokens"], result["pieces"])]}


async def tokenize(request: Request):
    body = TokenizeBody.model_validate(await read_json(request))
    pipeline = pipeline_of(request)
    model = await pipeline.model(body.model)
    result = await pipeline.tokens_of(model, body.content, add_special=body.add_special,
                                      with_pieces=body.with_pieces)
    return JSONResponse(tokens_answer(result, body.with_pieces))


async def detokenize(request: Request):
    body = DetokenizeBody.model_validate(await read_json(request))
    pipeline = pipeline_of(request)
    model = await pipeline.model(body.model)
    return JSONResponse({"content": await pipeline.detokenize(model, body.tokens)})


def routes() -> list[Route]:
    return [Route("/tokenize", tokenize, methods=["POST"]), Route("/detokenize", detokenize, methods=["POST"])]
