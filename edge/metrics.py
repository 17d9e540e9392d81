"""/metrics: the edge's own requests (by route template and status, with latency), and, read at
scrape time from Redis, the queues' depths and ages and the workers' shared counters. Served on
a private listener (METRICS_HOST:METRICS_PORT), and on the public one only with METRICS_TOKEN."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio.to_thread
import redis
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

REQUESTS = Counter("grimbots_edge_requests_total", "Edge HTTP requests", ["route", "status"])
CLICKS = Counter(
    "grimbots_clicks_total",
    "Ad clicks at /r by outcome: tracked, limited_ip, limited_bot, memory_ceiling, redis_down, crawler",
    ["outcome"],
)
POOL_CLICKS = Counter("grimbots_pool_clicks_total", "Clicks at /p by pool and the bot chosen", ["pool", "bot"])
POOL_HEALTHY = Gauge("grimbots_pool_healthy_bots", "Healthy bots in each redirect pool (0: /p answers 503)", ["pool"])
BOT_HEALTHY = Gauge("grimbots_bot_healthy", "1 unless Telegram refused the bot's token (until getMe succeeds)", ["bot"])
LATENCY = Histogram(
    "grimbots_edge_request_duration_seconds",
    "Edge HTTP request latency",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)


def health(bots: Any, pools: Any, unhealthy: set[str]) -> None:
    """The bots' and pools' health gauges, as the edge sees it (set at every poll)."""
    for bot_id in bots:
        BOT_HEALTHY.labels(bot_id).set(0 if bot_id in unhealthy else 1)
    for pool in pools:
        POOL_HEALTHY.labels(pool.id).set(sum(1 for b, _ in pool.members if b not in unhealthy and b in bots))


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
    """Collects at scrape time: queue gauges (reports.queues) and the series workers add to Redis
    (actors.metrics). Registered once per process; a Redis failure yields the edge's own metrics
    and a `grimbots_metrics_redis_up 0`."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None

    def collect(self) -> Iterator[Metric]:
        from actors.broker import QUEUES
        from actors.metrics import read
        from reports.queues import queue_stats

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
    """/metrics on the public listener: only with `Authorization: Bearer {METRICS_TOKEN}`. The
    figures (every seller's revenue among them) are otherwise served on the private listener
    (METRICS_HOST:METRICS_PORT), never to whoever can reach the webhooks."""
    token = request.app.state.metrics_token
    if not token:
        return JSONResponse({"error": "not found"}, status_code=404)
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode("latin-1", "replace"), f"Bearer {token}".encode()):
        return JSONResponse({"error": "metrics need the bearer token"}, status_code=401,
                            headers={"www-authenticate": "Bearer"})  # fmt: skip
    # Collectors call Redis synchronously: keep that off the event loop.
    body = await anyio.to_thread.run_sync(generate_latest)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def start_private_listener(host: str, port: int) -> Any:
    """Serve /metrics (and only that) on host:port from a thread; None when the port is 0 or taken
    (several edge processes on one machine: the first one serves, the shared figures are the same)."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("metrics listener not started host=%s port=%s error=%s", host, port, type(exc).__name__)
        return None
    log.info("metrics listener started host=%s port=%s", host, port)
    return server
