"""The Open Responses surface: POST /v1/responses (HTTP, SSE, WebSocket), state, compaction."""
