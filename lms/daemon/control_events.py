"""`GET /lms/events`: the daemon's live feed as Server-Sent Events, what the dashboard draws from.

- `state` {"loaded", "downloads", "models"}: the lists of `/lms/ps`, `/lms/downloads` and `/lms/models`, sent on
  connect and whenever one of them changes (one watcher in the daemon compares them for every open page; clients
  never poll). Timers and memory that
  move on their own (a TTL running down) are refreshed at most every `REFRESH_SECONDS`.
- `metrics_history` (on connect) and `metrics` (every 2 s): points of lms/recent_metrics.py.
- `log`: the log bus's events (`lms log stream`), every source.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from lms.daemon import listings
from lms.logs import SOURCES

CHECK_SECONDS = 0.25  # how often the lists are compared
MODELS_EVERY = 8  # the models folder is read every 8th check (2 s): it changes only by downloads and removals
REFRESH_SECONDS = 5.0
PING_SECONDS = 15.0  # a comment line, so a dead connection is noticed
VOLATILE = ("ttlRemainingMs", "memoryBytes", "lastUsedTime")  # change without anything happening
QUEUE_SIZE = 1000

log = logging.getLogger("lms.server")


def _sse(name: str, data) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def _steady(state: dict) -> str:
    loaded = [{k: v for k, v in model.items() if k not in VOLATILE} for model in state["loaded"]]
    return json.dumps({**state, "loaded": loaded}, sort_keys=True, default=str)


class StateWatch:
    """One watcher per daemon, however many pages are open: it compares the lists every CHECK_SECONDS while
    anyone follows, and hands each change to every follower (the latest only: a slow reader skips states)."""

    def __init__(self, daemon):
        self.daemon = daemon
        self.followers: set[asyncio.Queue] = set()
        self.latest: dict | None = None
        self.task: asyncio.Task | None = None

    async def follow(self):
        queue: asyncio.Queue = asyncio.Queue(1)
        self.followers.add(queue)
        if self.task is None:
            self.task = asyncio.create_task(self._watch())
        elif self.latest is not None:
            queue.put_nowait(self.latest)
        try:
            while True:
                yield await queue.get()
        finally:
            self.followers.discard(queue)
            if not self.followers and self.task is not None:
                self.task.cancel()
                self.task = None  # the next follower starts a new watch

    def _hand_out(self, state: dict) -> None:
        self.latest = state
        for queue in self.followers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(state)

    async def _watch(self) -> None:
        manager, models = self.daemon.manager, []
        last, sent_at, checks = None, 0.0, 0
        while True:
            try:
                if checks % MODELS_EVERY == 0:
                    models = await asyncio.to_thread(listings.downloaded, manager)
                state = {"loaded": await listings.loaded(manager),
                         "downloads": listings.downloads(self.daemon.downloads), "models": models}
                steady = _steady(state)
                if steady != last or time.monotonic() - sent_at >= REFRESH_SECONDS:
                    self._hand_out(state)
                    last, sent_at = steady, time.monotonic()
            except Exception:  # a listing that fails once must not end every page's feed
                log.exception("could not list the daemon's state for /lms/events")
            checks += 1
            await asyncio.sleep(CHECK_SECONDS)


async def _forward_state(daemon, put) -> None:
    async for state in daemon.state_watch.follow():
        put(_sse("state", state))


async def _forward_metrics(daemon, put) -> None:
    recent = daemon.metrics.recent
    put(_sse("metrics_history", list(recent.points)))
    async for point in recent.follow():
        put(_sse("metrics", point))


async def _forward_log(daemon, put) -> None:
    types = {kind for kinds in SOURCES.values() for kind in kinds}
    async for event in daemon.bus.subscribe(types):
        put(_sse("log", event))


async def events(request: Request):
    daemon = request.app.state.daemon
    queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_SIZE)

    def put(message: str) -> None:
        if queue.full():  # a reader that stopped reading loses the oldest message, never the daemon's time
            queue.get_nowait()
        queue.put_nowait(message)

    async def body():
        feeders = [asyncio.create_task(feed(daemon, put)) for feed in (_forward_state, _forward_metrics, _forward_log)]
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), PING_SECONDS)
                except TimeoutError:
                    yield ": ping\n\n"
                for feeder in feeders:
                    if feeder.done() and not feeder.cancelled() and feeder.exception() is not None:
                        raise feeder.exception()
        finally:
            for feeder in feeders:
                feeder.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*feeders, return_exceptions=True)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def routes() -> list[Route]:
    return [Route("/lms/events", events)]
