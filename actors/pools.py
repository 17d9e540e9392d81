"""Bot health for redirect pools (CONTRACT §11): a bot whose token Telegram refuses (401 or 404 on
any call: revoked, deleted) is unhealthy from that answer on, and every pool stops sending buyers
to it (the edge re-reads the set each CONFIG_POLL_SECONDS); the clock re-checks unhealthy bots
with getMe every RECHECK_SECONDS, and a bot whose getMe succeeds is healthy again.

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
from gateways.telegram import TelegramError, TelegramGateway, TelegramPermanent

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
        log.warning("bot unhealthy: Telegram refused its token bot=%s status=%s", bot_id, status)
    return marked


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
    bot_id = next((b.id for b in bots if b.token == token), None)
    if bot_id is None:
        return
    try:
        mark_unhealthy(broker.client, bot_id, status, description)
    except redis.RedisError as exc:  # the refusal still reaches its caller
        log.warning("bot health not recorded bot=%s error=%s", bot_id, type(exc).__name__)


def recheck(telegram: TelegramGateway | None = None) -> dict[str, int]:
    """getMe for each unhealthy bot: healthy again when it succeeds."""
    client = broker.client
    telegram = telegram or runtime.telegram()
    outcome = {"healthy": 0, "unhealthy": 0}
    for bot_id, doc in unhealthy(client).items():
        bot = runtime.bot_config(bot_id)
        if bot is None:  # no longer configured: nothing to check
            client.hdel(UNHEALTHY, bot_id)
            continue
        try:
            telegram.call(bot.token, "getMe", {})
        except TelegramPermanent as exc:
            if exc.status not in REFUSED:
                log.info("bot health check inconclusive bot=%s status=%s", bot_id, exc.status)
                continue
            doc["checked_at"] = time.time()
            if client.hexists(UNHEALTHY, bot_id):
                client.hset(UNHEALTHY, bot_id, json.dumps(doc))
            outcome["unhealthy"] += 1
            continue
        except TelegramError as exc:  # Telegram unreachable: not an answer about the token
            log.info("bot health check inconclusive bot=%s error=%s", bot_id, type(exc).__name__)
            continue
        client.hdel(UNHEALTHY, bot_id)
        counters.inc("grimbots_bot_health_changes_total", {"to": "healthy"})
        log.info("bot healthy again: getMe succeeded bot=%s", bot_id)
        outcome["healthy"] += 1
    return outcome


@dramatiq.actor(actor_name="pools.recheck", queue_name=MAINTENANCE, max_retries=0, time_limit=120_000,
                max_age=RECHECK_SECONDS * 1000)  # fmt: skip
def recheck_actor() -> None:
    recheck()
