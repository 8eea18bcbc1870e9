"""The last minutes of activity as points in time, for the dashboard's plots (`GET /lms/events`).

Prometheus (`/metrics`) keeps running totals for scrapers; a page wants a short history it can draw at once. Every
`INTERVAL_SECONDS` one point is taken of what happened in that interval (HTTP requests, tokens generated, the mean
decode speed and time to first token of the generations that ended) and of the state now (the workers' memory,
the requests queued or running). The last `KEEP_POINTS` are kept; followers get each new point as it is taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator

from lms.manager.worker import resident_bytes

INTERVAL_SECONDS = 2.0
KEEP_POINTS = 300  # ten minutes
FOLLOWER_QUEUE = 64

log = logging.getLogger("lms.metrics")


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


class RecentMetrics:
    def __init__(self, keep: int = KEEP_POINTS):
        self.points: deque[dict] = deque(maxlen=keep)
        self.followers: set[asyncio.Queue] = set()
        self._requests = self._tokens = 0
        self._speeds: list[float] = []
        self._ttfts: list[float] = []

    def request_done(self) -> None:
        self._requests += 1

    def generation_done(self, done: dict) -> None:
        usage, stats = done.get("usage") or {}, done.get("stats") or {}
        self._tokens += usage.get("completion_tokens", 0) or 0
        if stats.get("tokens_per_second"):
            self._speeds.append(float(stats["tokens_per_second"]))
        if stats.get("time_to_first_token") is not None:
            self._ttfts.append(float(stats["time_to_first_token"]) * 1000)

    def take(self, memory_bytes: int, queued: int, now: float | None = None) -> dict:
        """Close the interval: one point of what happened in it, handed to every follower."""
        point = {"t": int((now if now is not None else time.time()) * 1000), "requests": self._requests,
                 "tokens": self._tokens, "tokens_per_second": _mean(self._speeds), "ttft_ms": _mean(self._ttfts),
                 "memory_bytes": memory_bytes, "queued": queued}
        self._requests = self._tokens = 0
        self._speeds, self._ttfts = [], []
        self.points.append(point)
        for queue in list(self.followers):
            if queue.full():  # a follower that stopped reading loses its oldest point, never blocks the sampler
                queue.get_nowait()
            queue.put_nowait(point)
        return point

    async def follow(self) -> AsyncIterator[dict]:
        queue: asyncio.Queue = asyncio.Queue(FOLLOWER_QUEUE)
        self.followers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self.followers.discard(queue)

    async def run(self, manager, interval: float = INTERVAL_SECONDS) -> None:
        """Take a point every `interval` seconds for as long as the daemon runs."""
        while True:
            await asyncio.sleep(interval)
            try:
                loaded = list(manager.loaded.values())
                memory = sum(resident_bytes(model.worker.pid) or 0 for model in loaded)
                self.take(memory, sum(model.active for model in loaded))
            except Exception:  # a plot must never take the daemon down
                log.exception("could not take a metrics point")
