"""The edge: authenticate each sender, enqueue the raw payload, answer at once. No business logic,
no database writes, no database query per request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import httpx
import redis
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

import clicks
import settings
import telemetry
from actors.health import UNHEALTHY
from actors.metrics import HEARTBEAT_PREFIX, HEARTBEAT_TTL_SECONDS, heartbeat_key
from catalog.snapshot import Catalog
from db.database import db, init_db
from edge import metrics
from edge.enqueue import BatchEnqueuer
from edge.fast_paths import FAST_ROUTES, Edge, WebhookEndpoint
from edge.metrics import MetricsMiddleware, metrics_endpoint, register_shared_collector, start_private_listener
from gateways.payments import registry
from gateways.payments.base import PaymentGateway

log = logging.getLogger(__name__)


def error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": detail}, status_code=status)


class EdgeState:
    """What the routes need, built in the lifespan: config snapshot, enqueuer, Redis."""

    def __init__(self, redis_url: str, poll_seconds: float) -> None:
        self.catalog = Catalog(poll_seconds=poll_seconds)
        self.secrets: dict[str, bytes] = {}
        self.payment_gateways: dict[str, PaymentGateway] = {}
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        # Adapters at the edge only authenticate and parse: they are given a client and a bank
        # they never use (neither connects until used).
        self._unused_client = httpx.Client(timeout=1.0)
        self._unused_bank = redis.Redis.from_url(redis_url)
        self.enqueuer = BatchEnqueuer(self.redis)
        # Clicks: on CACHE_URL when set (no ceiling: its eviction policy bounds it), else beside the queues.
        cache_url = settings.CACHE_URL or redis_url
        self.cache = (self.redis if cache_url == redis_url else
                      aioredis.Redis.from_url(cache_url, socket_timeout=0.5, socket_connect_timeout=0.5))  # fmt: skip
        self.click_ceiling = 0 if settings.CACHE_URL else settings.CLICK_MEMORY_MB * 1024 * 1024
        self._store = self.cache.register_script(clicks.STORE)
        self.poll_seconds = poll_seconds
        self.stopping = asyncio.Event()
        self.unhealthy: set[str] = set()  # bots Telegram refused (actors.pools): no pool sends buyers to them

    def _refresh(self) -> None:
        with db.connection_context():
            if self.catalog.refresh():
                # Telegram's secret tokens; WhatsApp bots authenticate on their own route (edge/whatsapp.py).
                self.secrets = {b.id: b.webhook_secret.encode() for b in self.catalog.bots.values()
                                if b.whatsapp is None and b.webhook_secret}  # fmt: skip
                self.payment_gateways = self._adapters()
                log.info("edge config loaded version=%s bots=%d gateways=%d", self.catalog.version,
                         len(self.secrets), len(self.payment_gateways))  # fmt: skip

    def _adapters(self) -> dict[str, PaymentGateway]:
        adapters = {}
        for g in self.catalog.gateways.values():
            try:
                adapters[g.id] = registry.build(g.kind, gateway_id=g.id, webhook_secret=g.webhook_secret,
                                                options=g.settings, client=self._unused_client,
                                                bank=self._unused_bank)  # fmt: skip
            except (KeyError, ValueError) as exc:  # a broken gateway must not take the others down
                log.error("gateway not loaded gateway=%s error=%s", g.id, type(exc).__name__)
        return adapters

    async def store_click(self, click: clicks.Click, doc: str) -> str:
        """Keep a click for 7 days unless a limit says no: "tracked", or which limit."""
        keys = clicks.store_keys(click, time.time())
        per_ip, per_bot = settings.CLICKS_PER_IP_PER_MINUTE, settings.CLICKS_PER_BOT_PER_SECOND
        args = clicks.store_args(doc, per_ip=per_ip, per_bot=per_bot, ceiling_bytes=self.click_ceiling)
        outcome = await self._store(keys=keys, args=args)
        return outcome.decode() if isinstance(outcome, bytes) else str(outcome)

    async def refresh(self) -> None:
        await anyio.to_thread.run_sync(self._refresh)

    async def poll_config(self) -> None:
        """Reload configuration when it changed, and say this process is alive, every poll."""
        while not self.stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving the last snapshot
                log.warning("edge config refresh failed error=%s", type(exc).__name__)
            try:
                self.unhealthy = {k.decode() if isinstance(k, bytes) else k for k in await self.redis.hkeys(UNHEALTHY)}
                metrics.health(self.catalog.bots, self.catalog.pools.values(), self.unhealthy)
            except Exception as exc:  # noqa: BLE001 - keep the last health seen
                log.debug("edge bot health not read error=%s", type(exc).__name__)
            try:
                info = json.dumps({"bots": len(self.secrets), "at": time.time()})
                await self.redis.set(heartbeat_key("web"), info, ex=HEARTBEAT_TTL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - /ready reports Redis; this is only a heartbeat
                log.debug("edge heartbeat failed error=%s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.poll_seconds)


def state(request: Request) -> EdgeState:
    return request.app.state.edge  # type: ignore[no-any-return]


async def health(request: Request) -> Response:
    return PlainTextResponse("ok")


def _db_ping() -> None:
    with db.connection_context():
        db.execute_sql("SELECT 1")


async def _workers_alive(edge: EdgeState) -> int:
    keys = [key async for key in edge.redis.scan_iter(f"{HEARTBEAT_PREFIX}:worker:*", count=500)]
    return len(keys)


async def ready(request: Request) -> Response:
    """200 when Redis and the database answer (CONTRACT §4). How many workers have a fresh
    heartbeat is reported too, but does not fail the check: the edge can take webhooks without them."""
    edge = state(request)
    failed: dict[str, str] = {}
    workers = None
    try:
        await asyncio.wait_for(edge.redis.ping(), 1.0)
        workers = await asyncio.wait_for(_workers_alive(edge), 1.0)
    except Exception as exc:  # noqa: BLE001
        failed["redis"] = type(exc).__name__
    try:
        with anyio.fail_after(2.0):
            await anyio.to_thread.run_sync(_db_ping, abandon_on_cancel=True)
    except Exception as exc:  # noqa: BLE001
        failed["database"] = type(exc).__name__
    if failed:
        return JSONResponse({"ready": False, "failed": failed, "workers_alive": workers}, status_code=503)
    return JSONResponse({"ready": True, "workers_alive": workers})


async def not_found(request: Request, exc: Exception) -> Response:
    return error(404, "not found")


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, "method not allowed")


def create_app(
    *,
    redis_url: str | None = None,
    poll_seconds: float | None = None,
    metrics_port: int | None = None,
    metrics_token: str | None = None,
) -> Edge:
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
        port = settings.METRICS_PORT if metrics_port is None else metrics_port
        metrics_server = start_private_listener(settings.METRICS_HOST, port)
        try:
            yield {}
        finally:
            if metrics_server is not None:
                await anyio.to_thread.run_sync(metrics_server.shutdown)
                metrics_server.server_close()
            # A stop signal, not task.cancel(): a cancel that lands inside anyio's to_thread call is
            # taken by anyio as its own, and the poller would go on polling.
            edge.stopping.set()
            edge._unused_client.close()
            shutdown = (("poller", poller), ("enqueuer", edge.enqueuer.stop()), ("redis", edge.redis.aclose()),
                        ("cache", edge.cache.aclose()))  # fmt: skip
            for step, awaitable in shutdown:
                try:
                    await asyncio.wait_for(awaitable, 5.0)
                except TimeoutError:
                    log.warning("edge shutdown step timed out step=%s", step)

    routes = [
        *(
            Route(route, WebhookEndpoint(handler, param), methods=[method])
            for method, _, route, handler, param in FAST_ROUTES
        ),
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
    app.state.metrics_token = metrics_token or settings.METRICS_TOKEN
    app.router.redirect_slashes = False  # the contract: any other path, a trailing slash included, is 404
    return Edge(app)
