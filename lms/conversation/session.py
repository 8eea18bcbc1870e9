"""Where a turn finds what came before: the persistent response store, plus a WebSocket connection's own cache
for `store: false` turns, and the MCP connections and permissions of the surface that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field

from lms.conversation.store import ResponseStore, StoredResponse
from lms.errors import LmsError
from lms.mcp.client import McpPool
from lms.pipeline import Pipeline


def previous_not_found(response_id: str) -> LmsError:
    return LmsError.invalid(f"Previous response with id '{response_id}' not found.", "previous_response_id",
                            code="previous_response_not_found")


@dataclass
class Session:
    pipeline: Pipeline
    store: ResponseStore
    local: dict[str, StoredResponse] | None = None
    local_limit: int = 16
    mcp: McpPool | None = None
    allow_remote_mcp: bool = False
    allow_mcp_json: bool = False
    fetch_hosts: set[str] = field(default_factory=set)  # hosts remote MCP servers may be at although not public

    def find(self, response_id: str) -> StoredResponse | None:
        if self.local is not None and response_id in self.local:
            return self.local[response_id]
        return self.store.get(response_id)

    def remember(self, stored: StoredResponse, persist: bool) -> None:
        if persist:
            self.store.put(stored)
        elif self.local is not None:
            self.local[stored.response["id"]] = stored
            while len(self.local) > self.local_limit:
                self.local.pop(next(iter(self.local)))

    def evict(self, response_id: str) -> None:
        """A failed continuation drops the id from the connection's cache (the spec's rule). Stored responses
        stay: a client's mistake must not delete a persisted conversation."""
        if self.local is not None:
            self.local.pop(response_id, None)
