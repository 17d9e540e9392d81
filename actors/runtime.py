"""The process-wide collaborators actors use: built once, lazily, from settings."""

from __future__ import annotations

from functools import lru_cache

import redis

import settings
from actors.broker import broker
from actors.throttle import Throttle
from db.catalog import BotConfig, Catalog
from gateways.telegram import TelegramGateway, default_client


@lru_cache(maxsize=1)
def catalog() -> Catalog:
    return Catalog(poll_seconds=settings.CONFIG_POLL_SECONDS)


def bot_config(bot_id: str) -> BotConfig | None:
    """The bot as configured now (re-read within CONFIG_POLL_SECONDS of an `ops apply`)."""
    cat = catalog()
    cat.refresh_if_stale()
    bot = cat.bot(bot_id)
    if bot is None:  # applied a moment ago?
        cat.refresh()
        bot = cat.bot(bot_id)
    return bot


@lru_cache(maxsize=1)
def telegram() -> TelegramGateway:
    return TelegramGateway(default_client(settings.TELEGRAM_TIMEOUT_SECONDS), settings.TELEGRAM_API_BASE)


def cache() -> redis.Redis:
    """Redis for short-lived data (file_id cache, rate limits): the broker's own client."""
    return broker.client


@lru_cache(maxsize=1)
def throttle() -> Throttle:
    return Throttle(
        broker.client,
        bot_rate=settings.TELEGRAM_BOT_RATE,
        chat_rate=settings.TELEGRAM_CHAT_RATE,
        chat_burst=settings.TELEGRAM_CHAT_BURST,
    )
