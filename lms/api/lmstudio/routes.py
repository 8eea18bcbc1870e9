"""The SDK's WebSocket namespaces, one route each (`ws://host:port/<namespace>`). Namespaces this server does not
serve yet still authenticate and answer every call with a warning and an error, so no client waits for its
timeout."""

from __future__ import annotations

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from lms.api.auth import SDK_WEBSOCKET_PATHS
from lms.api.lmstudio import embedding, files, llm, repository, system
from lms.api.lmstudio.session import Namespace, Session


def _namespaces() -> dict[str, Namespace]:
    served = {"system": system.namespace(), "llm": llm.namespace(), "embedding": embedding.namespace(),
              "files": files.namespace(), "repository": repository.namespace()}
    return {path[1:]: served.get(path[1:]) or Namespace(path[1:]) for path in sorted(SDK_WEBSOCKET_PATHS)}


def _endpoint(namespace: Namespace):
    async def serve(websocket: WebSocket) -> None:
        await Session(websocket, namespace).run()

    return serve


def lmstudio_routes() -> list[WebSocketRoute]:
    return [WebSocketRoute(f"/{name}", _endpoint(namespace)) for name, namespace in _namespaces().items()]
