"""Every OpenAI-shaped route: /v1 for OpenAI clients, and LM Studio's /api/v0 generation endpoints, which are
the same requests answered with LM Studio's stats, model_info and runtime added."""

from __future__ import annotations

from starlette.routing import Route

from lms.api.openai.chat import chat_completions, v0_chat_completions
from lms.api.openai.completions import completions, v0_completions
from lms.api.openai.embeddings import embeddings, v0_embeddings
from lms.api.openai.models import get_model, list_models


def openai_routes() -> list[Route]:
    return [
        Route("/v1/models", list_models),
        Route("/v1/models/{model:path}", get_model),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/api/v0/chat/completions", v0_chat_completions, methods=["POST"]),
        Route("/api/v0/completions", v0_completions, methods=["POST"]),
        Route("/api/v0/embeddings", v0_embeddings, methods=["POST"]),
    ]
