"""What every engine shares: its error type, the load-progress callback, token log-probability entries, text
events, and the count of reasoning tokens."""

from __future__ import annotations

import os
from collections.abc import Callable


class EngineError(Exception):
    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


Progress = Callable[[float], bool]  # gets 0..1; returns False to abort the load


def token_entry(piece: bytes, logprob: float) -> dict:
    return {"token": piece.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(piece)}


def text_event(text: str, logprobs: list[dict]) -> dict:
    """A text event; logprobs of the tokens behind it (held back by stop strings or UTF-8) ride along."""
    event = {"type": "text", "text": text}
    if logprobs:
        event["logprobs"] = logprobs[:]
        logprobs.clear()
    return event


class ReasoningCounter:
    """Counts generated tokens that fall inside a leading <think> block (real tokens, for usage)."""

    def __init__(self, start: str | None):
        self.state = "inside" if start == "inside" else "maybe" if start == "detect" else "off"
        self.text = ""
        self.tokens = 0
        self.undecided = 0

    def add(self, piece: str) -> None:
        if self.state == "off":
            return
        self.text += piece
        if self.state == "maybe":
            stripped = self.text.lstrip()
            if len(stripped) < len("<think>") and "<think>".startswith(stripped):
                self.undecided += 1
                return
            self.state = "inside" if stripped.startswith("<think>") else "off"
            if self.state == "off":
                return
            self.tokens += self.undecided
        self.tokens += 1
        if "</think>" in self.text:
            self.state = "off"
