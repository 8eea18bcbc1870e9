"""How a generation ends: the engine's finish reasons, and LM Studio's names for them (its native API's stats,
`lms log stream`)."""

from __future__ import annotations

LMSTUDIO_STOP_REASONS = {"stop": "eosFound", "length": "maxPredictedTokensReached", "tool_calls": "toolCalls",
                         "cancelled": "userStopped"}


def lmstudio_stop_reason(finish_reason: str | None) -> str | None:
    return LMSTUDIO_STOP_REASONS.get(finish_reason or "stop", finish_reason)
