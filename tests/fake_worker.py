"""A fake model worker for unit tests of the layers above the worker (manager, pipeline): it answers the
manager's calls with the events a real worker sends, after a JSON round trip of the payload as over the socket.
A test scripts a generation by setting `reply` (a function of the typed request returning events)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from lms.generation.request import GenerationRequest


def hello(request: GenerationRequest) -> list[dict]:
    return [{"type": "text", "text": "Hello"},
            {"type": "done", "finish_reason": "stop", "stats": {},
             "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}]


class FakeWorker:
    """A worker as the manager sees it: `call` yields the events the real one sends (after a JSON round trip of
    the payload, as over the socket); a generation waits at `gate` between its prompt and its text."""

    def __init__(self, on_exit, pid: int, reply=hello):
        self.on_exit, self.pid, self.reply = on_exit, pid, reply
        self.calls: list[tuple[str, dict]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.stopped = False
        self.exit_detail = ""

    async def call(self, op: str, **payload):
        payload = json.loads(json.dumps(payload))
        self.calls.append((op, payload))
        if op == "load":
            await asyncio.sleep(0.01)  # a load takes a while: concurrent requests pile up behind it
            yield {"type": "progress", "progress": 0.5}
            yield {"type": "loaded", "info": {"context_length": payload["options"]["context_length"],
                                              "engine_version": "fake-1"}}
        elif op == "generate":
            request = GenerationRequest.from_dict(payload["request"])
            events = self.reply(request)  # may raise, as a worker answers with an error event at once
            yield {"type": "prompt", "prompt_tokens": 3, "cached_tokens": 0,
                   **({"prompt_text": "<templated>"} if request.echo_prompt else {})}
            await self.gate.wait()
            for event in events:
                yield event
        elif op == "count":
            yield {"type": "result", "prompt_tokens": 7}
        elif op == "tokenize":
            yield {"type": "result", "tokens": [ord(c) for c in payload["text"]]}
        elif op == "render_prompt":
            messages = payload["request"]["messages"]
            yield {"type": "result", "text": "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"}
        elif op == "embed":
            yield {"type": "result", "embeddings": [[0.0] for _ in payload["request"]["inputs"]], "prompt_tokens": 2}

    async def request(self, op: str, **payload) -> dict:
        async for event in self.call(op, **payload):
            return event
        raise AssertionError("no answer")

    async def stop(self) -> None:
        self.stopped = True

    def die(self) -> None:
        self.exit_detail = "signal 9"
        self.on_exit(self)


class Spawner:
    """The manager's worker factory: records every worker it started."""

    def __init__(self, reply=hello):
        self.workers: list[FakeWorker] = []
        self.reply = reply

    async def __call__(self, log_path: Path, on_exit, import_path: Path | None) -> FakeWorker:
        await asyncio.sleep(0)
        worker = FakeWorker(on_exit, pid=1000 + len(self.workers), reply=self.reply)
        self.workers.append(worker)
        return worker
