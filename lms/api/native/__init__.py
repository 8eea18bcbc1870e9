"""LM Studio's native REST API (/api/v0 and /api/v1)."""
