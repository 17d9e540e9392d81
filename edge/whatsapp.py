"""POST /webhook/whatsapp/{bot_id}: Evolution's events (the bearer secret `ops set-webhooks` gave it)
and the Cloud API's `messages` webhook (X-Hub-Signature-256 over the raw body, keyed with the app
secret); GET the same path: the Cloud API's verification handshake (CONTRACT §12).

Each checks its sender first, then reads the body with the channel's own parser: a body that can
never be processed is a 400; one with nothing a buyer said (our own messages, statuses, groups,
other events) is answered 200 and dropped here; the rest is enqueued, without Evolution's apikey
(which its body carries), for the router. Message ids make repeats harmless downstream."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

import settings
from actors import updates
from catalog.snapshot import channel_settings
from edge.webhooks import enqueue_then_ack, header, read_body, refused, respond
from gateways.channel import ChannelKind, Malformed
from gateways.channel_kinds import kind_of

log = logging.getLogger(__name__)

PREFIX = "/webhook/whatsapp/"
ROUTE = "/webhook/whatsapp/{bot_id}"


def _bot(edge: Any, bot_id: str) -> Any:
    bot = edge.catalog.bot(bot_id)
    return bot if bot is not None and bot.whatsapp is not None else None


async def serve_whatsapp(edge: Any, bot_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    bot = _bot(edge, bot_id)
    if (status := await refused(edge, send, bot, "unknown bot")) is not None:
        return status
    declared = header(scope, b"content-length")
    body = await read_body(receive, int(declared) if declared and declared.isdigit() else None,
                           settings.EDGE_MAX_BODY_BYTES)  # fmt: skip
    if body is None:
        await respond(send, 413, f"body over {settings.EDGE_MAX_BODY_BYTES} bytes")
        return 413
    kind: ChannelKind = kind_of(bot.channel)
    secrets = channel_settings(bot) or {}  # what its kind checks and reads a webhook with
    if not kind.authentic(secrets, lambda name: header(scope, name), body):
        log.warning("whatsapp webhook refused bot=%s reason=authentication", bot_id)
        await respond(send, 401, kind.unauthentic)
        return 401
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        await respond(send, 400, "body is not JSON")
        return 400
    if not isinstance(doc, dict):
        await respond(send, 400, "body is not a JSON object")
        return 400
    try:
        events = kind.parse(doc, secrets)
    except (Malformed, ValueError, TypeError, AttributeError, KeyError) as exc:
        await respond(send, 400, str(exc) if isinstance(exc, Malformed) else "malformed body")
        return 400
    if not events:  # our own messages, statuses, groups, other numbers, other events: nothing to do
        await respond(send, 200)
        return 200
    if kind.forward is None:  # the body as it came (the Cloud API's holds no secret)
        return await enqueue_then_ack(edge, send, updates.route, bot_id, body.decode("utf-8"))
    kept = {k: doc[k] for k in kind.forward if k in doc}  # Evolution's without its apikey
    return await enqueue_then_ack(edge, send, updates.route, bot_id, json.dumps(kept, ensure_ascii=False))


async def serve_verify(edge: Any, bot_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    """The Cloud API's handshake: the challenge back when the verify token is this bot's."""
    bot = _bot(edge, bot_id)
    if (status := await refused(edge, send, bot, "unknown bot")) is not None:
        return status
    query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
    expected = (bot.whatsapp.verify_token or "").encode()
    given = query.get("hub.verify_token", "").encode()
    challenge = query.get("hub.challenge", "")
    if query.get("hub.mode") != "subscribe" or not expected or not hmac.compare_digest(given, expected):
        await respond(send, 403, "verification refused")
        return 403
    data = challenge.encode()[:1024]
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
    return 200
