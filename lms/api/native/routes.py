"""LM Studio's native REST API: /api/v0 models and /api/v1 (its OpenAI-shaped /api/v0 generation endpoints
are served by the OpenAI surface, see lms/api/openai/routes.py)."""

from __future__ import annotations

from starlette.routing import Route

from lms.api.native import downloads, models
from lms.api.native.chat import chat


def native_routes() -> list[Route]:
    return [
        Route("/api/v0/models", models.v0_models),
        Route("/api/v0/models/{model:path}", models.v0_model),
        Route("/api/v1/models", models.v1_models),
        Route("/api/v1/models/load", models.v1_load, methods=["POST"]),
        Route("/api/v1/models/unload", models.v1_unload, methods=["POST"]),
        Route("/api/v1/chat", chat, methods=["POST"]),
        *downloads.routes(),
    ]
