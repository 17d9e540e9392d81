"""/metrics: the edge's own requests (by route template and status, with latency), and, read at
scrape time from Redis, the queues' depths and ages and the workers' shared counters."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import redis
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("grimbots_edge_requests_total", "Edge HTTP requests", ["route", "status"])
LATENCY = Histogram(
    "grimbots_edge_request_duration_seconds",
    "Edge HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


_children: dict[tuple[str, int], tuple[Any, Any]] = {}


def observe(route: str, status: int, seconds: float) -> None:
    """Count one request; label children are cached (label lookup costs more than the increment)."""
    child = _children.get((route, status))
    if child is None:
        child = _children[(route, status)] = (REQUESTS.labels(route, str(status)), LATENCY.labels(route))
    child[0].inc()
    child[1].observe(seconds)


class MetricsMiddleware:
    """Pure ASGI: labels by the matched route's template (never the raw path: bot ids are many)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            observe(getattr(route, "path", None) or "unmatched", status, time.perf_counter() - started)


class SharedCollector:
    """Collects at scrape time: queue gauges (ops.queues) and the series workers add to Redis
    (actors.metrics). Registered once per process; a Redis failure yields the edge's own metrics
    and a `grimbots_metrics_redis_up 0`."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None

    def collect(self) -> Iterator[Metric]:
        from actors.broker import QUEUES
        from actors.metrics import read
        from ops.queues import queue_stats

        up = GaugeMetricFamily("grimbots_metrics_redis_up", "Whether Redis answered this scrape")
        if self.client is None:
            return
        try:
            stats = [queue_stats(self.client, q) for q in QUEUES]
            series = read(self.client)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        gauges = {
            "ready": "Messages waiting in the queue",
            "in_flight": "Messages fetched by a worker and not yet acknowledged",
            "delayed": "Messages waiting for a retry or a delay",
            "dead": "Dead-lettered messages",
            "oldest_ready_age_seconds": "Age of the oldest ready message",
        }
        for field, help_text in gauges.items():
            family = GaugeMetricFamily(f"grimbots_queue_{field}", help_text, labels=["queue"])
            for stat in stats:
                value = getattr(stat, field)
                family.add_metric([stat.queue], 0 if value is None else value)
            yield family
        shared: dict[str, Metric] = {}
        for name, labels, value in sorted(series, key=lambda s: s[0]):
            base = name.removesuffix("_total")
            metric = shared.get(base)
            if metric is None:
                metric = shared[base] = Metric(base, "Shared by all worker processes (actors.metrics)", "untyped")
            metric.add_sample(name, labels, value)
        for metric in shared.values():
            metric.type = "counter" if all(s.name.endswith("_total") for s in metric.samples) else "untyped"
            yield metric


_shared = SharedCollector()
REGISTRY.register(_shared)


def register_shared_collector(client: redis.Redis) -> None:
    """Point the process's collector at the app's Redis (the last app created wins)."""
    _shared.client = client


async def metrics_endpoint(request: Request) -> Response:
    # Collectors call Redis synchronously: keep that off the event loop.
    body = await anyio.to_thread.run_sync(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
