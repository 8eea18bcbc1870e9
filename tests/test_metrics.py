"""GET /metrics in Prometheus format: counters and histograms that move with real requests, and live gauges."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import CHAT_MODEL


def scrape(served) -> dict[tuple, float]:
    response = httpx.get(f"{served.base_url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_requests(served):
    before = scrape(served)
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 5}
    usage = httpx.post(f"{served.base_url}/v1/chat/completions", json=body, timeout=60).json()["usage"]
    httpx.get(f"{served.base_url}/v1/responses/resp_does_not_exist", timeout=30)
    after = scrape(served)
    route = {"route": "/v1/chat/completions", "method": "POST", "status": "200"}
    assert value(after, "lms_http_requests_total", **route) == value(before, "lms_http_requests_total", **route) + 1
    missing = {"route": "/v1/responses/{response_id}", "method": "GET", "status": "404"}
    assert value(after, "lms_http_requests_total", **missing) >= 1  # labelled by route template, not raw path
    for name, used in (("lms_prompt_tokens_total", "prompt_tokens"), ("lms_generated_tokens_total",
                                                                       "completion_tokens")):
        assert value(after, name, model=CHAT_MODEL) - value(before, name, model=CHAT_MODEL) == usage[used]
    count = "lms_time_to_first_token_seconds_count"
    assert value(after, count, model=CHAT_MODEL) == value(before, count, model=CHAT_MODEL) + 1
    assert value(after, "lms_loaded_models") >= 1
    assert value(after, "lms_queue_depth", model=CHAT_MODEL) == 0
    assert value(after, "lms_worker_memory_bytes", model=CHAT_MODEL) > 50_000_000
    assert value(after, "lms_model_load_seconds_count", model=CHAT_MODEL) >= 1
