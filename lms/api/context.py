"""What a surface's route takes from the app: the pipeline, and a conversation session for stateful turns."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from lms.api.auth import caller_of
from lms.conversation.session import Session
from lms.pipeline import Pipeline


def pipeline_of(connection: HTTPConnection) -> Pipeline:
    return connection.app.state.pipeline


def session_of(connection: HTTPConnection, local: dict | None = None) -> Session:
    """Stored responses and MCP connections; `local` is a WebSocket connection's own cache of store:false turns."""
    state = connection.app.state
    allow_mcp_json = state.allow_mcp_json
    if getattr(state, "public", False):  # over the network: only for callers with an admin token
        caller = caller_of(connection.scope)
        allow_mcp_json = allow_mcp_json and caller is not None and caller.admin
    return Session(pipeline=state.pipeline, store=state.responses, local=local, mcp=state.mcp,
                   allow_remote_mcp=state.allow_remote_mcp, allow_mcp_json=allow_mcp_json,
                   fetch_hosts=state.settings.fetch_hosts())
