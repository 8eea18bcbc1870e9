"""The `embedding` namespace: model management (lms.api.lmstudio.models) and `embedString`, one vector per
call through the pipeline (the SDKs embed a list with one call per string)."""

from __future__ import annotations

from lms.api.lmstudio.models import management, manager_of, resolve_loaded
from lms.api.lmstudio.session import Namespace, Session
from lms.api.lmstudio.tokens import tokenizer_endpoints
from lms.errors import LmsError


async def embed_string(session: Session, parameter) -> dict:
    if not isinstance(parameter, dict) or not isinstance(parameter.get("inputString"), str):
        raise LmsError.invalid("'inputString' must be a string.", "inputString")
    model = resolve_loaded(manager_of(session), "embedding", parameter.get("modelSpecifier"))
    result = await session.app_state.pipeline.embed(model, [parameter["inputString"]])
    return {"embedding": result["embeddings"][0]}


def namespace() -> Namespace:
    embedding = tokenizer_endpoints(management("embedding"))
    embedding.rpcs["embedString"] = embed_string
    return embedding
