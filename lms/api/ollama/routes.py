"""The routes of Ollama's API, served on the main port (and on `--ollama-port` when given)."""

from __future__ import annotations

from starlette.routing import Route

from lms.api.ollama import embed, generate, manage, models


def ollama_routes() -> list[Route]:
    return [
        Route("/", models.running, methods=["GET", "HEAD"]),
        Route("/api/version", models.version, methods=["GET"]),
        Route("/api/tags", models.tags, methods=["GET"]),
        Route("/api/show", models.show, methods=["POST"]),
        Route("/api/ps", models.ps, methods=["GET"]),
        Route("/api/chat", generate.chat, methods=["POST"]),
        Route("/api/generate", generate.generate, methods=["POST"]),
        Route("/api/embed", embed.embed, methods=["POST"]),
        Route("/api/embeddings", embed.embeddings, methods=["POST"]),
        Route("/api/pull", manage.pull, methods=["POST"]),
        Route("/api/push", manage.push, methods=["POST"]),
        Route("/api/delete", manage.delete, methods=["DELETE"]),
        Route("/api/copy", manage.copy, methods=["POST"]),
        Route("/api/create", manage.create, methods=["POST"]),
        Route("/api/blobs/{digest}", manage.blob, methods=["HEAD", "POST"]),
    ]
