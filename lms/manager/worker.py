"""The daemon's handle on one worker process: spawn, talk JSON lines over a socketpair, supervise.

A worker that dies fails every request in flight (an unavailable error, code worker_died) and tells the manager,
which forgets the model; the next request for it loads it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import psutil

from lms import config
from lms.errors import Kind, LmsError

log = logging.getLogger("lms.worker")


def resident_bytes(pid: int | None) -> int | None:
    """A worker process's resident memory, or None when there is no such process (it ended; an upstream model)."""
    try:
        return psutil.Process(pid).memory_info().rss if pid else None
    except psutil.Error:
        return None


_ids = itertools.count(1)
_STREAM_LIMIT = 64 * 1024 * 1024  # one embedding result can be a large line


class WorkerDied(LmsError):
    def __init__(self, detail: str):
        super().__init__(f"The model's worker process stopped unexpectedly ({detail}). "
                         "The model was unloaded; the next request will load it again.",
                         Kind.UNAVAILABLE, code="worker_died")


class WorkerHandle:
    def __init__(self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, on_exit: Callable[[WorkerHandle], None]):
        self.process = process
        self.reader, self.writer = reader, writer
        self.on_exit = on_exit
        self.pending: dict[str, asyncio.Queue] = {}
        self.alive = True
        self.exit_detail = ""
        self._reader_task = asyncio.create_task(self._read_loop())

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def spawn(cls, log_path: Path, on_exit: Callable[[WorkerHandle], None],
                    import_path: Path | None = None, preload: str | None = None) -> WorkerHandle:
        """A new worker process; `import_path` goes first on its module path (a selected engine version);
        `preload` names a runtime whose engine it imports before its first request (a spare worker)."""
        parent, child = socket.socketpair()
        log_file = config.open_private(log_path, "ab")  # engines log prompts on errors
        env = dict(os.environ)
        if import_path is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(import_path), env.get("PYTHONPATH")]))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "runtimes.worker", "--fd", str(child.fileno()),
                *(["--preload", preload] if preload else []),
                pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file, stderr=log_file, cwd=str(Path(__file__).resolve().parents[2]), env=env,
            )
        finally:
            child.close()
            log_file.close()
        reader, writer = await asyncio.open_unix_connection(sock=parent, limit=_STREAM_LIMIT)
        return cls(process, reader, writer, on_exit)

    async def _read_loop(self) -> None:
        try:
            while line := await self.reader.readline():
                message = json.loads(line)
                if not isinstance(message, dict) or not isinstance(message.get("type"), str):
                    raise ValueError(f"not an event: {line[:200]!r}")
                queue = self.pending.get(message.pop("id", None))
                if queue is not None:
                    queue.put_nowait(message)
        except (ConnectionError, ValueError) as exc:  # ValueError: not JSON, or a line over the stream limit
            log.warning("worker %s connection failed: %s", self.pid, exc)
            if self.process.returncode is None:
                # A worker that speaks garbage cannot be trusted with what is pending: it goes, and they fail.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
        code = await self.process.wait()
        self.alive = False
        self.exit_detail = f"signal {-code}" if code < 0 else f"exit code {code}"
        for queue in self.pending.values():
            queue.put_nowait(WorkerDied(self.exit_detail).to_event())
        self.on_exit(self)

    async def _send(self, message: dict) -> None:
        self.writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()

    async def call(self, op: str, **payload) -> AsyncIterator[dict]:
        """Send one request; yield its events until a terminal one. Closing the iterator early cancels it."""
        if not self.alive:
            raise WorkerDied(self.exit_detail)
        request_id = f"r{next(_ids)}"
        queue: asyncio.Queue = asyncio.Queue()
        self.pending[request_id] = queue
        finished = False
        try:
            await self._send({"op": op, "id": request_id, **payload})
            while True:
                event = await queue.get()
                if event["type"] == "error":
                    finished = True
                    raise LmsError.from_event(event)
                finished = event["type"] in ("done", "loaded", "result")
                yield event
                if finished:
                    return
        finally:
            self.pending.pop(request_id, None)
            if not finished and self.alive:
                try:
                    await self._send({"op": "cancel", "id": request_id})
                except (ConnectionError, RuntimeError):
                    pass

    async def request(self, op: str, **payload) -> dict:
        """A call with a single answer."""
        async for event in self.call(op, **payload):
            return event
        raise WorkerDied(self.exit_detail)

    async def stop(self, timeout: float = 5.0) -> None:
        if self.process.returncode is None:
            try:
                await self._send({"op": "shutdown", "id": "shutdown"})
            except (ConnectionError, RuntimeError):
                pass
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                os.kill(self.pid, signal.SIGKILL)
                await self.process.wait()
        self.writer.close()
        await self._reader_task
