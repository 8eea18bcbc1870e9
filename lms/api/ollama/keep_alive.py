"""`keep_alive`, Ollama's name for our idle TTL: how long a model stays loaded after a request."""

from __future__ import annotations

import math
import re
import time

from starlette.requests import Request

from lms.api.context import pipeline_of
from lms.api.ollama import names
from lms.api.ollama.wire import Timer
from lms.errors import LmsError
from lms.manager.models import LoadedModel

DEFAULT_KEEP_ALIVE_SECONDS = 300  # Ollama's default: five minutes
FOREVER = -1
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def keep_alive_seconds(value) -> float | None:
    """`keep_alive` as seconds: None when not given, 0 to unload after the request, FOREVER (-1) for a negative
    value; a number is seconds, a string a Go duration ("5m", "1h30m", "300ms") or a number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise LmsError.invalid("keep_alive must be a duration such as \"5m\" or a number of seconds", "keep_alive")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration(value.strip())
    else:
        raise LmsError.invalid("keep_alive must be a duration such as \"5m\" or a number of seconds", "keep_alive")
    if not math.isfinite(seconds) or seconds < 0:
        return FOREVER
    return seconds


def _parse_duration(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise LmsError.invalid(f"keep_alive {text!r} is not a duration (examples: \"5m\", \"1h30m\", \"-1\", 0)",
                               "keep_alive")
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def jit_ttl(keep_alive: float | None) -> int | None:
    """The idle TTL a just-in-time load gets: keep_alive's, else Ollama's five minutes."""
    if keep_alive is None:
        return DEFAULT_KEEP_ALIVE_SECONDS
    return None if keep_alive in (0, FOREVER) else max(math.ceil(keep_alive), 1)


def apply_keep_alive(model: LoadedModel, keep_alive: float | None) -> None:
    """keep_alive is the model's TTL from now on (Ollama resets it on every request): 0 unloads it when its last
    request ends, a negative value keeps it loaded."""
    if keep_alive is None:
        return
    model.evict_when_idle = keep_alive == 0
    if keep_alive == FOREVER:
        model.ttl_seconds = None
    elif keep_alive > 0:
        model.ttl_seconds = max(math.ceil(keep_alive), 1)


async def model_for(request: Request, name: str, keep_alive, timer: Timer,
                    num_ctx: int | None = None) -> tuple[LoadedModel, str]:
    """The model an Ollama request names, loaded just in time if need be (with `num_ctx` as its context length;
    the time it took goes to the timer), with the request's keep_alive applied; and the name to answer with."""
    seconds = keep_alive_seconds(keep_alive)
    query = names.target(request.app.state.manager, name)
    started = time.perf_counter()
    model = await pipeline_of(request).model(query, jit_ttl(seconds), num_ctx)
    timer.load_seconds = time.perf_counter() - started
    apply_keep_alive(model, seconds)
    return model, name
