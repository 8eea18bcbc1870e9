"""The log bus behind `lms log stream`: events from the daemon to any number of subscribers.

Event shapes are LM Studio's (`{"timestamp": <unix ms>, "data": {"type": ...}}`): `llm.prediction.input` (the
fully templated prompt), `llm.prediction.output` (the answer and its stats), `server.log` and `runtime.log`.
Publishing never waits: each subscriber has a bounded queue, and what does not fit is dropped and counted, then
reported to that subscriber as `log.dropped` once it catches up. A slow reader can never slow generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lms import config

SOURCES = {"model": ("llm.prediction.input", "llm.prediction.output"), "server": ("server.log",),
           "runtime": ("runtime.log",)}
QUEUE_SIZE = 1000


@dataclass(eq=False)
class Subscriber:
    types: set[str]
    queue: asyncio.Queue
    dropped: int = 0


class LogBus:
    def __init__(self, queue_size: int = QUEUE_SIZE):
        self.queue_size = queue_size
        self.subscribers: set[Subscriber] = set()
        self.loop: asyncio.AbstractEventLoop | None = None

    def wants(self, kind: str) -> bool:
        return any(kind in s.types for s in self.subscribers)

    def publish(self, data: dict) -> None:
        """From the event loop's thread; cheap when nobody listens."""
        if not self.subscribers:
            return
        event = {"timestamp": int(time.time() * 1000), "data": data}
        for subscriber in self.subscribers:
            if data["type"] not in subscriber.types:
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscriber.dropped += 1

    def publish_threadsafe(self, data: dict) -> None:
        if self.loop is not None and self.subscribers:
            self.loop.call_soon_threadsafe(self.publish, data)

    async def subscribe(self, types: set[str]) -> AsyncIterator[dict]:
        subscriber = Subscriber(types, asyncio.Queue(self.queue_size))
        self.subscribers.add(subscriber)
        try:
            while True:
                event = await subscriber.queue.get()
                if subscriber.dropped:
                    yield {"timestamp": event["timestamp"], "data": {"type": "log.dropped",
                                                                      "count": subscriber.dropped}}
                    subscriber.dropped = 0
                yield event
        finally:
            self.subscribers.discard(subscriber)


class BusHandler(logging.Handler):
    """Daemon log records as `server.log` (HTTP server, daemon) and `runtime.log` (model manager, workers)."""

    RUNTIME_LOGGERS = ("lms.manager", "lms.worker", "lms.downloads")

    def __init__(self, bus: LogBus):
        super().__init__(logging.INFO)
        self.bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        if not self.bus.subscribers:
            return
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the daemon
            return
        level = record.levelname.lower()
        if record.name.startswith(self.RUNTIME_LOGGERS):
            data = {"type": "runtime.log", "level": level, "message": message, "engineName": "llama.cpp",
                    "engineType": "llm"}
        else:
            data = {"type": "server.log", "level": level, "content": message}
        self.bus.publish_threadsafe(data)


class DatedFileHandler(logging.Handler):
    """`server-logs/<YYYY-MM-DD>.log`, a new file each day (a daemon can run for weeks), keeping `keep_days`."""

    def __init__(self, folder, keep_days: int = 30):
        super().__init__(logging.INFO)
        self.folder, self.keep_days = folder, keep_days
        self.day: str | None = None
        self.stream = None

    def emit(self, record: logging.LogRecord) -> None:
        day = time.strftime("%Y-%m-%d", time.localtime(record.created))
        try:
            if day != self.day:
                self._roll(day)
            self.stream.write(self.format(record) + "\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the daemon down
            self.handleError(record)

    def _roll(self, day: str) -> None:
        if self.stream:
            self.stream.close()
        # 0600: the log holds prompts and tool output
        self.day, self.stream = day, config.open_private(self.folder / f"{day}.log", "a")
        cutoff = time.time() - self.keep_days * 86400
        for old in self.folder.glob("????-??-??.log"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)

    def close(self) -> None:
        if self.stream:
            self.stream.close()
        super().close()
