"""Stateful conversation turns, shared by /v1/responses and LM Studio's /api/v1/chat: Open Responses items (the
internal model of a stateful turn), stored responses, MCP tool rounds and compaction, over the pipeline."""
