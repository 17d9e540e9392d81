"""The webhooks: POST /webhook/telegram/{bot_id} (the bot's secret token) and
POST /webhook/payment/{gateway_id} (the gateway's own authentication, by its adapter). Each
checks its sender, bounds and validates the body, enqueues it and answers.

They are hot paths, so `edge.fast_paths.Edge` serves them in front of the Starlette app as pure ASGI:
no Request objects, no router, no middleware chain; headers and body come from the ASGI scope."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

import settings
from actors import payments, updates
from edge.enqueue import EnqueueError, message_bytes
from gateways.channel import usable_event_id
from gateways.payments.base import BadNotification
from gateways.telegram import KIND as TELEGRAM
from gateways.telegram import SECRET_HEADER, secret_ok

log = logging.getLogger(__name__)

PREFIX = "/webhook/telegram/"
ROUTE = "/webhook/telegram/{bot_id}"
PAYMENT_PREFIX = "/webhook/payment/"
PAYMENT_ROUTE = "/webhook/payment/{gateway_id}"

JSON_HEADERS = [(b"content-type", b"application/json")]


async def respond(send: Send, status: int, error: str | None = None) -> None:
    body = json.dumps({"error": error}).encode() if error else b""
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())] if body else [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def refused(edge: Any, send: Send, found: object | None, unknown: str) -> int | None:
    """503 while the configuration is not loaded yet, 404 (`unknown`) for an id it does not hold;
    None when the request may go on. Returns the status sent."""
    if not edge.catalog.loaded:
        await respond(send, 503, "configuration not loaded yet")
        return 503
    if found is None:
        await respond(send, 404, unknown)
        return 404
    return None


def header(scope: Scope, wanted: bytes) -> bytes | None:
    """A request header's raw value by its lower-case name (ASGI gives them lower-cased)."""
    for name, value in scope["headers"]:
        if name == wanted:
            return value  # type: ignore[no-any-return]
    return None


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
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        return None, "body is not JSON"
    if not isinstance(update, dict):
        return None, "body is not a JSON object"
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        return None, "update_id must be an integer"
    if not usable_event_id(update_id):
        return None, "update_id must be in 1..2^63-1"
    return text, ""


async def serve_webhook(edge: Any, bot_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one webhook call; returns the status sent."""
    secret = edge.secrets.get(bot_id)
    if (status := await refused(edge, send, secret, "unknown bot")) is not None:
        return status
    given: bytes | None = None
    declared: int | None = None
    for name, value in scope["headers"]:
        if name == SECRET_HEADER:
            given = value
        elif name == b"content-length" and value.isdigit():
            declared = int(value)
    if not secret_ok(secret, given):
        await respond(send, 401, TELEGRAM.unauthentic)
        return 401
    body = await read_body(receive, declared, settings.EDGE_MAX_BODY_BYTES)
    if body is None:
        await respond(send, 413, f"body over {settings.EDGE_MAX_BODY_BYTES} bytes")
        return 413
    text, problem = parse_update(body)
    if text is None:
        await respond(send, 400, problem)
        return 400
    return await enqueue_then_ack(edge, send, updates.route, bot_id, text)


async def enqueue_then_ack(edge: Any, send: Send, actor: Any, ident: str, raw_json: str) -> int:
    """Enqueue `actor(ident, json.loads(raw_json))`; answer 200 once Redis holds it, 503 if it cannot."""
    redis_id, data = message_bytes(actor, (ident,), raw_json)
    try:
        await edge.enqueuer.enqueue(actor.queue_name, redis_id, data)
    except EnqueueError:
        await respond(send, 503, "queue unavailable")
        return 503
    await respond(send, 200)
    return 200


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _declared_length(scope: Scope) -> int | None:
    value = header(scope, b"content-length")
    return int(value) if value is not None and value.isdigit() else None


async def serve_payment(edge: Any, gateway_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer one payment notification: authenticated by the gateway's adapter on the raw bytes
    before anything is parsed; refused ones leave a log line and the request counter, nothing else."""
    gateway = edge.payment_gateways.get(gateway_id)
    if (status := await refused(edge, send, gateway, "unknown gateway")) is not None:
        return status
    body = await read_body(receive, _declared_length(scope), settings.EDGE_MAX_BODY_BYTES)
    if body is None:
        await respond(send, 413, f"body over {settings.EDGE_MAX_BODY_BYTES} bytes")
        return 413
    headers = _headers(scope)
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    try:
        authentic = gateway.authenticate(body, headers, query)
    except Exception as exc:  # noqa: BLE001 - whatever a forged request trips over, it is not authentic
        log.warning("payment notification refused gateway=%s reason=authentication error=%s", gateway_id,
                    type(exc).__name__)  # fmt: skip
        authentic = False
    if not authentic:
        log.warning("payment notification refused gateway=%s reason=authentication", gateway_id)
        await respond(send, 401, "authentication failed")
        return 401
    try:
        notification = gateway.parse_notification(body, headers, query)
    except BadNotification as exc:
        log.warning("payment notification refused gateway=%s reason=%s", gateway_id, exc)
        await respond(send, 400, str(exc))
        return 400
    except (ValueError, TypeError, KeyError, ArithmeticError, RecursionError) as exc:
        # An adapter that missed a shape: still the sender's mistake, never a 5xx.
        log.warning("payment notification refused gateway=%s reason=malformed error=%s", gateway_id,
                    type(exc).__name__)  # fmt: skip
        await respond(send, 400, "malformed notification")
        return 400
    if notification is None:  # authenticated, but about nothing we act on
        await respond(send, 200)
        return 200
    doc = {
        "charge_id": notification.charge_id,
        "status": notification.status.value if notification.status is not None else None,
        "amount": str(notification.amount) if notification.amount is not None else None,
    }
    return await enqueue_then_ack(edge, send, payments.notify, gateway_id, json.dumps(doc))
