"""Prometheus metrics of the edge: requests by route template and status, and their latency."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
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


async def metrics_endpoint(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
