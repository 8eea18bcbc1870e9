"""Every route of LM Studio's native REST API (/api/v0 and /api/v1)."""

from __future__ import annotations

from starlette.routing import Route

from lms.api.native import downloads, models
from lms.api.native.chat import chat
from lms.api.openai.chat import chat_completions
from lms.api.openai.completions import completions
from lms.api.openai.embeddings import embeddings


async def v0_chat_completions(request):
    return await chat_completions(request, native=True)


async def v0_completions(request):
    return await completions(request, native=True)


async def v0_embeddings(request):
    return await embeddings(request, native=True)


def native_routes() -> list[Route]:
    return [
        Route("/api/v0/models", models.v0_models),
        Route("/api/v0/models/{model:path}", models.v0_model),
        Route("/api/v0/chat/completions", v0_chat_completions, methods=["POST"]),
        Route("/api/v0/completions", v0_completions, methods=["POST"]),
        Route("/api/v0/embeddings", v0_embeddings, methods=["POST"]),
        Route("/api/v1/models", models.v1_models),
        Route("/api/v1/models/load", models.v1_load, methods=["POST"]),
        Route("/api/v1/models/unload", models.v1_unload, methods=["POST"]),
        Route("/api/v1/chat", chat, methods=["POST"]),
        *downloads.routes(),
    ]
