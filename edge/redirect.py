"""GET /r/{bot_id}: an ad click. Capture what Meta needs to match it later (fbclid, the _fbp/_fbc
cookies, every utm_*, IP, user agent, time), keep it in Redis under an opaque token for 7 days,
enqueue its PageView, and send the browser on to `https://t.me/{username}?start={token}`.

One Redis call (rate limits per IP and per bot, a ceiling on click data, the write: clicks.STORE)
and one enqueue, no database. A click is never lost to a bad parameter (it is
left out); if Redis cannot take the click, the browser still goes to the bot, without a token.
Crawlers and link-preview fetchers are sent on too, without a token: they are not clicks."""

from __future__ import annotations

import logging
import random
from typing import Any
from urllib.parse import quote

from starlette.types import Receive, Scope, Send

import clicks
import settings
from actors import pixel
from edge.enqueue import EnqueueError, message_bytes
from edge.metrics import CLICKS, POOL_CLICKS
from edge.webhooks import header, refused, respond

log = logging.getLogger(__name__)

PREFIX = "/r/"
ROUTE = "/r/{bot_id}"
POOL_PREFIX = "/p/"
POOL_ROUTE = "/p/{pool_id}"


def _header(scope: Scope, wanted: bytes) -> str | None:
    value = header(scope, wanted)
    return value.decode("latin-1") if value is not None else None


async def redirect(send: Send, location: str) -> None:
    headers = [
        (b"location", location.encode()),
        (b"cache-control", b"no-store"),  # every click is its own: never served from a cache
        (b"referrer-policy", b"no-referrer"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 302, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def serve_pool(edge: Any, pool_id: str, scope: Scope, receive: Receive, send: Send) -> int:
    """GET /p/{pool_id}: a click for one healthy bot of the pool, chosen by weight (CONTRACT §11);
    503 when none is healthy. Health is the edge's copy of actors.pools' set, re-read every poll."""
    pool = edge.catalog.pool(pool_id)
    if (status := await refused(edge, send, pool, "unknown pool")) is not None:
        return status
    healthy = [(b, w) for b, w in pool.members if b not in edge.unhealthy and edge.catalog.bot(b) is not None]
    if not healthy:
        await respond(send, 503, "no healthy bot in this pool")
        return 503
    bot_id = random.choices([b for b, _ in healthy], weights=[w for _, w in healthy])[0]
    POOL_CLICKS.labels(pool_id, bot_id).inc()
    return await serve_click(edge, bot_id, scope, receive, send, pool=pool_id)


async def serve_click(edge: Any, bot_id: str, scope: Scope, receive: Receive, send: Send,
                      pool: str | None = None) -> int:  # fmt: skip
    bot = edge.catalog.bot(bot_id)
    if (status := await refused(edge, send, bot, "unknown bot")) is not None:
        return status
    bot_url = start_link(bot, None)
    user_agent = _header(scope, b"user-agent")
    if clicks.is_crawler(user_agent):  # a link preview or Meta's ad review: not a buyer's click
        CLICKS.labels("crawler").inc()
        await redirect(send, bot_url)
        return 302
    query = scope.get("query_string", b"").decode("latin-1")
    client = scope.get("client")
    click = clicks.capture(
        bot_id,
        query,
        cookie_header=_header(scope, b"cookie") or "",
        peer=client[0] if client else None,
        forwarded_for=_header(scope, b"x-forwarded-for"),
        user_agent=user_agent,
        source_url=f"{settings.PUBLIC_BASE_URL}{scope['path']}" + (f"?{query}" if query else ""),
        pool=pool,
    )
    doc = click.to_json()
    try:
        outcome = await edge.store_click(click, doc)
    except Exception as exc:  # noqa: BLE001 - the buyer still reaches the bot, untracked
        log.warning("click not stored bot=%s error=%s", bot_id, type(exc).__name__)
        outcome = "redis_down"
    CLICKS.labels(outcome).inc()
    if outcome != "tracked":  # over a limit or the ceiling: the buyer still reaches the bot, untracked
        await redirect(send, bot_url)
        return 302
    redis_id, data = message_bytes(pixel.record_click, (bot_id,), doc)
    try:
        await edge.enqueuer.enqueue(pixel.record_click.queue_name, redis_id, data)
    except EnqueueError as exc:  # the click is in Redis: a /start with the token still records it
        log.warning("click event not enqueued bot=%s error=%s", bot_id, exc)
    await redirect(send, start_link(bot, click.token))
    return 302


def start_link(bot: Any, token: str | None) -> str:
    """Where a click sends the buyer: the bot's t.me link with `?start={token}`, or for a WhatsApp bot
    wa.me with a prefilled first message that carries the token (CONTRACT §12)."""
    if bot.whatsapp is not None:
        base = f"https://wa.me/{bot.whatsapp.number}"
        return f"{base}?text={quote(bot.text('whatsapp_start', token=token), safe='')}" if token else base
    base = f"https://t.me/{quote(bot.username)}"
    return f"{base}?start={token}" if token else base
