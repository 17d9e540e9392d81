"""The edge: authenticate each sender, enqueue the raw payload, answer at once. No business logic,
no database writes, no database query per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import redis
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import settings
import telemetry
from db.catalog import Catalog
from db.database import db, init_db
from edge.enqueue import BatchEnqueuer
from edge.metrics import MetricsMiddleware, metrics_endpoint, register_shared_collector
from edge.webhooks import Edge, WebhookEndpoint

log = logging.getLogger(__name__)


def error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status)


class EdgeState:
    """What the routes need, built in the lifespan: config snapshot, enqueuer, Redis."""

    def __init__(self, redis_url: str, poll_seconds: float) -> None:
        self.catalog = Catalog(poll_seconds=poll_seconds)
        self.secrets: dict[str, bytes] = {}
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self.enqueuer = BatchEnqueuer(self.redis)
        self.poll_seconds = poll_seconds

    def _refresh(self) -> None:
        with db.connection_context():
            if self.catalog.refresh():
                self.secrets = {b.id: b.webhook_secret.encode() for b in self.catalog.bots.values()}
                log.info("edge config loaded version=%s bots=%d", self.catalog.version, len(self.secrets))

    async def refresh(self) -> None:
        await anyio.to_thread.run_sync(self._refresh)

    async def poll_config(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot
                log.warning("edge config refresh failed error=%s", type(exc).__name__)
            await asyncio.sleep(self.poll_seconds)


def state(request: Request) -> EdgeState:
    return request.app.state.edge  # type: ignore[no-any-return]


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def _db_ping() -> None:
    with db.connection_context():
        db.execute_sql("SELECT 1")


async def ready(request: Request) -> Response:
    edge = state(request)
    failed: dict[str, str] = {}
    try:
        await asyncio.wait_for(edge.redis.ping(), 1.0)
    except Exception as exc:  # noqa: BLE001
        failed["redis"] = type(exc).__name__
    try:
        with anyio.fail_after(2.0):
            await anyio.to_thread.run_sync(_db_ping, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001
        failed["database"] = type(exc).__name__
    if failed:
        return JSONResponse({"ready": False, "failed": failed}, status_code=503)
    return JSONResponse({"ready": True})


async def not_found(request: Request, exc: Exception) -> Response:
    return error(404, "not found")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, "method not allowed")


def create_app(*, redis_url: str | None = None, poll_seconds: float | None = None) -> Edge:
    telemetry.init_sentry()
    register_shared_collector(redis.Redis.from_url(redis_url or settings.REDIS_URL, socket_timeout=1.0,
                                                   socket_connect_timeout=0.5))  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        init_db()
        edge = EdgeState(redis_url or settings.REDIS_URL, poll_seconds or settings.CONFIG_POLL_SECONDS)
        app.state.edge = edge
        edge.enqueuer.start()
        try:
            await edge.refresh()
        except Exception as exc:  # noqa: BLE001 - the poller keeps trying; webhooks answer 503 meanwhile
            log.warning("edge config not loaded at start error=%s", type(exc).__name__)
        poller = asyncio.create_task(edge.poll_config(), name="edge-config-poller")
        try:
            yield {}
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
            await edge.enqueuer.stop()
            await edge.redis.aclose()

    routes = [
        Route("/webhook/telegram/{bot_id}", WebhookEndpoint(), methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/ready", ready, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(MetricsMiddleware)],
        exception_handlers={404: not_found, 405: method_not_allowed},
        lifespan=lifespan,
    )
    return Edge(app)
