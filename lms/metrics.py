"""Prometheus metrics (`GET /metrics`): requests by route and status, tokens, time to first token and decode
speed, load durations, and, read when scraped, queue depth, loaded models and worker memory."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lms.manager.worker import resident_bytes
from lms.recent_metrics import RecentMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("lms_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=self.registry)
        self.prompt_tokens = Counter("lms_prompt_tokens", "Prompt tokens processed", ["model"],
                                     registry=self.registry)
        self.generated_tokens = Counter("lms_generated_tokens", "Tokens generated", ["model"],
                                        registry=self.registry)
        self.ttft = Histogram("lms_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=self.registry)
        self.decode_speed = Histogram("lms_tokens_per_second", "Decode speed of one generation", ["model"],
                                      buckets=(1, 5, 10, 20, 40, 60, 80, 100, 150, 200, 400), registry=self.registry)
        self.load_seconds = Histogram("lms_model_load_seconds", "Model load duration", ["model"],
                                      buckets=(0.25, 0.5, 1, 2, 5, 10, 30, 60, 120), registry=self.registry)
        self.manager = None
        self.recent = RecentMetrics()  # the last minutes, for the dashboard's plots

    def attach(self, manager) -> None:
        """Live values (queue depth, loaded models, worker memory) are read from the manager when scraped."""
        self.manager = manager
        self.registry.register(_LiveCollector(manager))

    def generation_done(self, model: str, done: dict) -> None:
        self.recent.generation_done(done)
        usage, stats = done.get("usage") or {}, done.get("stats") or {}
        self.prompt_tokens.labels(model).inc(usage.get("prompt_tokens", 0))
        self.generated_tokens.labels(model).inc(usage.get("completion_tokens", 0))
        if stats.get("time_to_first_token") is not None:
            self.ttft.labels(model).observe(stats["time_to_first_token"])
        if stats.get("tokens_per_second"):
            self.decode_speed.labels(model).observe(stats["tokens_per_second"])

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    def __init__(self, manager):
        self.manager = manager

    def collect(self):
        loaded = list(self.manager.loaded.values())
        queue = GaugeMetricFamily("lms_queue_depth", "Requests waiting or running, per loaded model", labels=["model"])
        memory = GaugeMetricFamily("lms_worker_memory_bytes", "Resident memory of each model's worker",
                                   labels=["model"])
        for model in loaded:
            queue.add_metric([model.identifier], model.active)
            if (resident := resident_bytes(model.worker.pid)) is not None:
                memory.add_metric([model.identifier], resident)
        yield GaugeMetricFamily("lms_loaded_models", "Models loaded now", value=len(loaded))
        yield queue
        yield memory


class CountRequests:
    """ASGI middleware: counts each HTTP request by its route's path template (not the raw path, which would
    make a label per response id) and final status."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording)
        finally:
            # the router records the route it matched in the (shared) scope: no second matching here
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()
            self.metrics.recent.request_done()


async def metrics_endpoint(request: Request):
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
