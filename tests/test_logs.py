"""lms log stream: model input/output events (fully templated prompt, answer and stats) to several subscribers
at once, server and runtime logs, and a bounded queue per subscriber that drops and reports instead of waiting."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import httpx

from lms.logs import LogBus
from tests.conftest import CHAT_MODEL, REPO


def _reader(lms, *args: str) -> tuple[subprocess.Popen, list[dict]]:
    process = subprocess.Popen([sys.executable, "-m", "lms", "log", "stream", "--json", *args], env=lms.env,
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[dict] = []

    def pump():
        for line in process.stdout:
            events.append(json.loads(line))

    threading.Thread(target=pump, daemon=True).start()
    return process, events


def _wait(predicate, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_two_subscribers_see_model_input_and_output(served):
    readers = [_reader(served), _reader(served, "--filter", "output"), _reader(served, "-s", "server")]
    try:
        time.sleep(1.5)  # let the readers subscribe
        body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say the word lighthouse."}],
                "max_tokens": 6, "temperature": 0}
        answer = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60).json()
        text = answer["choices"][0]["message"]["content"]
        both, outputs, server = (events for _, events in readers)
        _wait(lambda: len(both) >= 2 and outputs and any("chat/completions" in e["data"]["content"] for e in server))
        kinds = [e["data"]["type"] for e in both]
        assert kinds[:2] == ["llm.prediction.input", "llm.prediction.output"]
        prompt = both[0]["data"]["input"]
        assert "<|im_start|>user\nSay the word lighthouse.<|im_end|>" in prompt  # the templated prompt
        output = both[1]["data"]
        assert output["output"] == text and output["modelIdentifier"] == CHAT_MODEL
        assert output["stats"]["predictedTokensCount"] == answer["usage"]["completion_tokens"]
        assert output["stats"]["stopReason"] in ("eosFound", "maxPredictedTokensReached")
        assert [e["data"]["type"] for e in outputs] == ["llm.prediction.output"]  # --filter output
        assert all(e["timestamp"] > 0 for e in both)
    finally:
        for process, _ in readers:
            process.kill()


def test_a_slow_subscriber_loses_events_not_time():
    async def scenario():
        bus = LogBus(queue_size=4)
        reader = bus.subscribe({"server.log"})
        first = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0)  # subscribed, reading nothing more
        for number in range(10):  # never awaits: what does not fit the reader's queue is dropped
            bus.publish({"type": "server.log", "content": f"line {number}"})
        got = [await first] + [await anext(reader) for _ in range(4)]
        await reader.aclose()
        return got

    got = asyncio.run(scenario())
    assert got[0]["data"] == {"type": "log.dropped", "count": 6}  # reported once the reader catches up
    assert [e["data"]["content"] for e in got[1:]] == ["line 0", "line 1", "line 2", "line 3"]
