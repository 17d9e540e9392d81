"""The edge's fast paths: the webhooks and the click redirect, served as pure ASGI in front of the
Starlette app (no Request objects, no router, no middleware chain). Everything else, and anything
unusual on these paths (another method, say), goes to the Starlette app."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from edge import redirect, webhooks, whatsapp
from edge.metrics import observe

log = logging.getLogger(__name__)


Handler = Callable[[Any, str, Scope, Receive, Send], Awaitable[int]]
# (method, path prefix, route name for metrics, handler, path parameter)
FAST_ROUTES: tuple[tuple[str, str, str, Handler, str], ...] = (
    ("POST", webhooks.PREFIX, webhooks.ROUTE, webhooks.serve_webhook, "bot_id"),
    ("POST", webhooks.PAYMENT_PREFIX, webhooks.PAYMENT_ROUTE, webhooks.serve_payment, "gateway_id"),
    ("POST", whatsapp.PREFIX, whatsapp.ROUTE, whatsapp.serve_whatsapp, "bot_id"),
    ("GET", whatsapp.PREFIX, whatsapp.ROUTE, whatsapp.serve_verify, "bot_id"),
    ("GET", redirect.PREFIX, redirect.ROUTE, redirect.serve_click, "bot_id"),
    ("GET", redirect.POOL_PREFIX, redirect.POOL_ROUTE, redirect.serve_pool, "pool_id"),
)


class WebhookEndpoint:
    """A webhook route's ASGI endpoint inside the Starlette app, for calls `Edge` passes on (it
    answers other methods with 405 there); an instance, so Starlette treats it as ASGI."""

    def __init__(self, handler: Handler, param: str) -> None:
        self.handler = handler
        self.param = param

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope["app"].state.edge, scope["path_params"][self.param], scope, receive, send)


class Edge:
    """The edge's ASGI entry point: webhooks served directly, the rest by `app`."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            for route_method, prefix, route, handler, _ in FAST_ROUTES:
                if method != route_method or not path.startswith(prefix):
                    continue
                ident = path[len(prefix) :]
                if ident and "/" not in ident:
                    await self._serve(route, handler, ident, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    async def _serve(
        self, route: str, handler: Handler, ident: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.perf_counter()
        status = 500
        try:
            status = await handler(self.app.state.edge, ident, scope, receive, send)
        except Exception:
            log.exception("webhook failed route=%s id=%s", route, ident)
            capture_exception()
            await webhooks.respond(send, 500, "internal error")
        finally:
            observe(route, status, time.perf_counter() - started)


def capture_exception() -> None:
    import sentry_sdk

    sentry_sdk.capture_exception()
