"""A spare worker: one worker process started before it is needed, its engine already imported.

Starting a worker and importing llama.cpp takes about 0.3 s on two cores, longer than loading a small model, so a
load that finds a spare waiting skips most of its start. The spare is started when the manager starts and again a
moment after each load takes it (not at once: its import would compete with the model's first tokens). A spare
only serves a load of its runtime and engine version (`lms runtime select` since it started: it is replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from lms import config
from lms.manager.worker import WorkerHandle
from lms.store import runtimes

RUNTIME = "llama.cpp"  # the engine of nearly every load; MLX and cluster loads start their worker as before
REFILL_DELAY_SECONDS = 1.0

log = logging.getLogger("lms.manager")


class SpareWorker:
    def __init__(self, spawn: Callable[..., Awaitable[WorkerHandle]], on_exit: Callable[[WorkerHandle], None],
                 enabled: Callable[[], bool]):
        self._spawn, self._on_exit, self._enabled = spawn, on_exit, enabled
        self._spare: tuple[Path | None, asyncio.Task] | None = None  # (its engine's import path, its start)
        self._refill: asyncio.Task | None = None

    @staticmethod
    def _import_path() -> Path | None:
        return runtimes.import_path(runtimes.engine(RUNTIME))

    def fill(self, delay: float = 0.0) -> None:
        """Start a spare after `delay` seconds, unless there is one or one is coming."""
        if self._spare is not None or (self._refill is not None and not self._refill.done()) or not self._enabled():
            return
        self._refill = asyncio.create_task(self._fill_after(delay))

    async def _fill_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._spare is not None or not self._enabled():
            return
        import_path = self._import_path()
        start = asyncio.create_task(self._spawn(config.logs_dir() / "workers.log", self._on_exit, import_path,
                                                preload=RUNTIME))
        self._spare = (import_path, start)

    async def take(self, runtime: str, import_path: Path | None) -> WorkerHandle | None:
        """The spare, when it can serve a load of `runtime` from `import_path`; else None (start a worker)."""
        if runtime != RUNTIME:
            return None
        spare, self._spare = self._spare, None
        self.fill(REFILL_DELAY_SECONDS)  # also after a load that found none (the setting was off until now)
        if spare is None:
            return None
        spare_path, start = spare
        worker = None
        with contextlib.suppress(Exception):
            worker = await start
        if worker is None or not worker.alive:
            return None
        if spare_path != import_path:  # another engine version was selected since it started
            await worker.stop()
            return None
        log.info("loading in the spare worker (pid %d)", worker.pid)
        return worker

    @property
    def pid(self) -> int | None:
        """The waiting spare's process id, once it has started (for `lms status` and the tests)."""
        if self._spare is None or not self._spare[1].done() or self._spare[1].exception() is not None:
            return None
        return self._spare[1].result().pid

    async def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        spare, self._spare = self._spare, None
        if spare is not None:
            with contextlib.suppress(Exception):
                worker = await spare[1]
                await worker.stop()
