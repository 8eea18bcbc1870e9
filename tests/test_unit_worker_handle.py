"""Unit tests of the daemon's side of a worker (lms/manager/worker.py) against a small stand-in process: a worker
that answers with something that is not an event is killed, and what it had pending fails with worker_died."""

from __future__ import annotations

import asyncio
import sys

import pytest

from lms.errors import Kind, LmsError
from lms.manager.worker import WorkerHandle

GARBAGE = {
    "not json": "print('this is not JSON', flush=True)",
    "not an object": "print('[1, 2, 3]', flush=True)",
    "over the limit": "import sys; sys.stdout.write('x' * (65 * 1024 * 1024)); sys.stdout.flush()",
}


@pytest.mark.parametrize("answer", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_worker_that_answers_garbage_is_killed_and_its_requests_fail(answer):
    async def scenario():
        script = f"import sys, time\nsys.stdin.readline()\n{answer}\ntime.sleep(120)\n"
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", script, stdin=asyncio.subprocess.PIPE,
                                                       stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
        exits = []
        worker = WorkerHandle(process, process.stdout, process.stdin, exits.append)
        with pytest.raises(LmsError) as caught:
            async with asyncio.timeout(30):
                await worker.request("generate", request={})
        return caught.value, process.returncode, exits, worker

    error, returncode, exits, worker = asyncio.run(scenario())
    assert (error.kind, error.code) == (Kind.UNAVAILABLE, "worker_died")
    assert returncode == -9 and exits == [worker] and not worker.alive
