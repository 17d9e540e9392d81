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

import dramatiq

import settings
from actors import runtime
from actors.broker import MAINTENANCE, broker, counters
from actors.channels import Channels
from actors.health import UNHEALTHY, refused, unhealthy

log = logging.getLogger(__name__)

RECHECK_SECONDS = settings.BOT_RECHECK_SECONDS


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
