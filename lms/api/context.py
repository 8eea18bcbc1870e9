"""What a surface's route takes from the app: the pipeline, and a conversation session for stateful turns."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from lms.conversation.session import Session
from lms.pipeline import Pipeline


def pipeline_of(connection: HTTPConnection) -> Pipeline:
    return connection.app.state.pipeline


def session_of(connection: HTTPConnection, local: dict | None = None) -> Session:
    """Stored responses and MCP connections; `local` is a WebSocket connection's own cache of store:false turns."""
    state = connection.app.state
    return Session(pipeline=state.pipeline, store=state.responses, local=local, mcp=state.mcp,
                   allow_remote_mcp=state.allow_remote_mcp, allow_mcp_json=state.allow_mcp_json,
                   fetch_hosts=state.settings.fetch_hosts())
