"""How a generation ends: the engine's done event (finish reason, usage, timing), and LM Studio's names for the
finish reasons (its native API's stats, `lms log stream`)."""

from __future__ import annotations

LMSTUDIO_STOP_REASONS = {"stop": "eosFound", "length": "maxPredictedTokensReached", "tool_calls": "toolCalls",
                         "cancelled": "userStopped"}


def lmstudio_stop_reason(finish_reason: str | None) -> str | None:
    return LMSTUDIO_STOP_REASONS.get(finish_reason or "stop", finish_reason)


def done_event(finish: str, prompt_tokens: int, count: int, cached: int, reasoning_tokens: int, started: float,
               first_token_at: float | None, ended: float) -> dict:
    """The last event of a generation: why it ended, token usage, and timing."""
    first_token_at = first_token_at or ended
    decode_time = ended - first_token_at
    return {"type": "done", "finish_reason": finish,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count,
                      "total_tokens": prompt_tokens + count, "cached_tokens": cached,
                      "reasoning_tokens": reasoning_tokens},
            "stats": {"time_to_first_token": first_token_at - started, "generation_time": ended - started,
                      "tokens_per_second": (count - 1) / decode_time if count > 1 and decode_time > 0 else None,
                      "prompt_tokens": prompt_tokens, "predicted_tokens": count}}
