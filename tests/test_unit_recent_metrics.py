"""The dashboard's short history of activity (lms/recent_metrics.py): one point per interval, the last N kept,
followers fed without ever blocking the sampler."""

from __future__ import annotations

import asyncio

from lms.recent_metrics import RecentMetrics


def test_recent_metrics_keep_the_last_points_and_feed_followers():
    recent = RecentMetrics(keep=3)
    recent.request_done()
    recent.generation_done({"usage": {"completion_tokens": 10}, "stats": {"tokens_per_second": 50.0,
                                                                         "time_to_first_token": 0.2}})
    recent.generation_done({"usage": {"completion_tokens": 30}, "stats": {"tokens_per_second": 70.0,
                                                                         "time_to_first_token": 0.4}})
    point = recent.take(memory_bytes=123, queued=2, now=1000.0)
    assert point == {"t": 1_000_000, "requests": 1, "tokens": 40, "tokens_per_second": 60.0, "ttft_ms": 300.0,
                     "memory_bytes": 123, "queued": 2}
    assert recent.take(0, 0)["tokens_per_second"] is None  # nothing ended in this interval

    async def follow() -> list[dict]:
        got: list[dict] = []

        async def reader():
            async for taken in recent.follow():
                got.append(taken)
                if len(got) == 2:
                    return

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        recent.take(1, 0)
        recent.take(2, 0)
        await asyncio.wait_for(task, 5)
        return got

    assert [p["memory_bytes"] for p in asyncio.run(follow())] == [1, 2]
    assert len(recent.points) == 3 and not recent.followers
