"""POST /v1/embeddings (and /api/v0/embeddings with LM Studio's model_info and runtime)."""

from __future__ import annotations

import base64
import struct

from starlette.requests import Request
from starlette.responses import JSONResponse

from lms.api.context import pipeline_of
from lms.api.http import read_json, until_disconnect
from lms.api.openai.schemas import EmbeddingBody
from lms.pipeline.stats import model_info, runtime


def _encode(vector: list[float], encoding: str):
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


async def embeddings(request: Request, native: bool = False):
    """POST /v1/embeddings; `native` adds LM Studio's model_info and runtime (/api/v0)."""
    body = EmbeddingBody.model_validate(await read_json(request))
    pipeline = pipeline_of(request)
    model = await pipeline.model(body.model, body.ttl)
    result = await until_disconnect(request, pipeline.embed(model, body.inputs(), body.dimensions))
    vectors = result["embeddings"]
    return JSONResponse({
        "object": "list",
        "data": [{"object": "embedding", "embedding": _encode(v, body.encoding_format), "index": i}
                 for i, v in enumerate(vectors)],
        "model": model.identifier,
        "usage": {"prompt_tokens": result["prompt_tokens"], "total_tokens": result["prompt_tokens"]},
        **({"model_info": model_info(model), "runtime": runtime()} if native else {}),
    })


async def v0_embeddings(request: Request):
    return await embeddings(request, native=True)
