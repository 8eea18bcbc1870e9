"""Random ids for everything lms hands out (completions, responses, items, tool calls, messages)."""

from __future__ import annotations

import secrets
import string

LOWER = string.ascii_lowercase + string.digits
MIXED = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24, alphabet: str = LOWER) -> str:
    return prefix + "".join(secrets.choice(alphabet) for _ in range(length))
