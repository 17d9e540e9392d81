"""Which bots are unhealthy (actors/pools.py says what that means for pools and how a bot comes
back): the set in Redis, and the hooks a channel calls when its provider refuses a bot. Apart from
pools so that building the channels (actors/runtime.py) needs nothing that needs it."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from actors.broker import broker, counters

log = logging.getLogger(__name__)

UNHEALTHY = "grimbots:bots:unhealthy"


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
