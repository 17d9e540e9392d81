"""Bot health for redirect pools (CONTRACT §11) and WhatsApp numbers (§12): a bot whose token
Telegram refuses (401 or 404 on any call: revoked, deleted), or a WhatsApp number its provider
refuses or reports disconnected, is unhealthy from that answer on, and every pool stops sending
buyers to it (the edge re-reads the set each CONFIG_POLL_SECONDS); the clock re-checks unhealthy
bots through their channel's `probe` (getMe, Evolution's connection state, the Cloud number) every
RECHECK_SECONDS, and a bot that answers is healthy again, its paused sends resumed.

Health lives in Redis (`grimbots:bots:unhealthy`, bot id → JSON: since, status, Telegram's
description, last check): a Redis that lost it sends buyers to a refused bot until its next call
is refused again, which any send does at once."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import dramatiq
import redis

import settings
from actors import runtime
from actors.broker import MAINTENANCE, broker, counters
from actors.channels import Channels

log = logging.getLogger(__name__)

UNHEALTHY = "grimbots:bots:unhealthy"
RECHECK_SECONDS = settings.BOT_RECHECK_SECONDS
REFUSED = (401, 404)


def mark_unhealthy(client: redis.Redis, bot_id: str, status: int, description: str) -> bool:
    """The bot's token was refused: unhealthy from now (the first refusal's time and reason stay)."""
    doc = json.dumps({"since": time.time(), "status": status, "description": description[:200], "checked_at": None})
    marked = bool(client.hsetnx(UNHEALTHY, bot_id, doc))
    if marked:
        counters.inc("grimbots_bot_health_changes_total", {"to": "unhealthy"})
        log.warning("bot unhealthy bot=%s status=%s description=%s", bot_id, status, description[:200])
    return marked


def refused(bot_id: str, status: int, description: str) -> None:
    """A WhatsApp channel's hook: its number was refused (status 401/403/404) or is disconnected (0)."""
    try:
        mark_unhealthy(broker.client, bot_id, status, description)
    except redis.RedisError as exc:  # the refusal still reaches its caller
        log.warning("bot health not recorded bot=%s error=%s", bot_id, type(exc).__name__)


def connection(bot_id: str, state: str) -> None:
    """Evolution's connection.update: `open` → healthy and its sends resumed; `close` → unhealthy,
    its sends paused until a check finds it open."""
    if state == "open":
        healthy(bot_id, "connected")
    elif state == "close":
        refused(bot_id, 0, "disconnected")
        runtime.throttle().pause_bot(bot_id, RECHECK_SECONDS)


def healthy(bot_id: str, why: str) -> None:
    if broker.client.hdel(UNHEALTHY, bot_id):
        counters.inc("grimbots_bot_health_changes_total", {"to": "healthy"})
        log.info("bot healthy again bot=%s why=%s", bot_id, why)
    runtime.throttle().resume_bot(bot_id)


def unhealthy(client: Any) -> dict[str, dict[str, Any]]:
    """Unhealthy bots: bot id → since, status, description, checked_at."""
    out = {}
    for key, raw in client.hgetall(UNHEALTHY).items():
        bot_id = key.decode() if isinstance(key, bytes) else str(key)
        try:
            out[bot_id] = json.loads(raw)
        except ValueError:
            out[bot_id] = {}
    return out


def token_refused(token: str, status: int, description: str) -> None:
    """TelegramGateway's hook: a call with `token` was answered 401/404. Which bot has it is read
    from the configuration each process holds (no query)."""
    bots = runtime.catalog().bots.values()
    bot_id = next((b.id for b in bots if b.token and b.token == token), None)
    if bot_id is None:
        return
    try:
        mark_unhealthy(broker.client, bot_id, status, description)
    except redis.RedisError as exc:  # the refusal still reaches its caller
        log.warning("bot health not recorded bot=%s error=%s", bot_id, type(exc).__name__)


def recheck(channels: Channels | None = None) -> dict[str, int]:
    """Each unhealthy bot's channel probed: healthy again (sends resumed) when it answers."""
    client = broker.client
    channels = channels or runtime.channels()
    outcome = {"healthy": 0, "unhealthy": 0}
    for bot_id, doc in unhealthy(client).items():
        bot = runtime.bot_config(bot_id)
        if bot is None:  # no longer configured: nothing to check
            client.hdel(UNHEALTHY, bot_id)
            continue
        state = channels.of(bot).probe()
        if state is None:  # the provider unreachable: not an answer about the bot
            log.info("bot health check inconclusive bot=%s", bot_id)
            continue
        if not state:
            doc["checked_at"] = time.time()
            if client.hexists(UNHEALTHY, bot_id):
                client.hset(UNHEALTHY, bot_id, json.dumps(doc))
            outcome["unhealthy"] += 1
            continue
        healthy(bot_id, "check succeeded")
        outcome["healthy"] += 1
    return outcome


@dramatiq.actor(actor_name="pools.recheck", queue_name=MAINTENANCE, max_retries=0, time_limit=120_000,
                max_age=RECHECK_SECONDS * 1000)  # fmt: skip
def recheck_actor() -> None:
    recheck()
