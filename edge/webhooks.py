"""POST /webhook/telegram/{bot_id}: check the bot's secret token, bound and validate the body,
enqueue it, answer.

It is the hot path, so `Edge` serves it in front of the Starlette app as pure ASGI: no Request
objects, no router, no middleware chain; headers and body come from the ASGI scope. Everything
else (and anything unusual on this path) goes to the Starlette app."""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

import settings
from actors import updates
from edge.enqueue import EnqueueError, message_bytes
from edge.metrics import observe

log = logging.getLogger(__name__)

PREFIX = "/webhook/telegram/"
ROUTE = "/webhook/telegram/{bot_id}"

SECRET_HEADER = b"x-telegram-bot-api-secret-token"
JSON_HEADERS = [(b"content-type", b"application/json")]


async def respond(send: Send, status: int, error: str | None = None) -> None:
    body = json.dumps({"error": error}).encode() if error else b""
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())] if body else [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, declared: int | None, limit: int) -> bytes | None:
    """The body, or None as soon as it is known to pass `limit` bytes: a too-large body is never read whole."""
    if declared is not None and declared > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b""
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def parse_update(body: bytes) -> tuple[str | None, str]:
    """(the body as text if it is a JSON object with an integer update_id, else None; why not)."""
    try:
        text = body.decode("utf-8")
        update = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        return None, "body is not JSON"
    if not isinstance(update, dict):
        return None, "body is not a JSON object"
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None, "update_id must be an integer"
    return text, ""


async def serve_webhook(edge: Any, bot_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one webhook call; returns the status sent."""
    if not edge.catalog.loaded:
        await respond(send, 503, "configuration not loaded yet")
        return 503
    secret = edge.secrets.get(bot_id)
    if secret is None:
        await respond(send, 404, "unknown bot")
        return 404
    given: bytes | None = None
    declared: int | None = None
    for name, value in scope["headers"]:
        if name == SECRET_HEADER:
            given = value
        elif name == b"content-length" and value.isdigit():
            declared = int(value)
    if given is None or not hmac.compare_digest(given, secret):
        await respond(send, 401, "bad or missing secret token")
        return 401
    body = await read_body(receive, declared, settings.EDGE_MAX_BODY_BYTES)
    if body is None:
        await respond(send, 413, f"body over {settings.EDGE_MAX_BODY_BYTES} bytes")
        return 413
    text, problem = parse_update(body)
    if text is None:
        await respond(send, 400, problem)
        return 400
    redis_id, data = message_bytes(updates.route, (bot_id,), text)
    try:
        await edge.enqueuer.enqueue(updates.route.queue_name, redis_id, data)
    except EnqueueError:
        await respond(send, 503, "queue unavailable")
        return 503
    await respond(send, 200)
    return 200


class WebhookEndpoint:
    """The route's ASGI endpoint inside the Starlette app, for calls `Edge` passes on (it answers
    other methods with 405 there); an instance, so Starlette treats it as ASGI, not request/response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_webhook(scope["app"].state.edge, scope["path_params"]["bot_id"], scope, receive, send)


class Edge:
    """The edge's ASGI entry point: Telegram webhooks served directly, the rest by `app`."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith(PREFIX):
            bot_id = scope["path"][len(PREFIX) :]
            if bot_id and "/" not in bot_id:
                started = time.perf_counter()
                status = 500
                try:
                    status = await serve_webhook(self.app.state.edge, bot_id, scope, receive, send)
                except Exception:
                    log.exception("webhook failed bot=%s", bot_id)
                    capture_exception()
                    await respond(send, 500, "internal error")
                finally:
                    observe(ROUTE, status, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)


def capture_exception() -> None:
    import sentry_sdk

    sentry_sdk.capture_exception()
