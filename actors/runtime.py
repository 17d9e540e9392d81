"""The process-wide collaborators actors use: built once, lazily, from settings."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import httpx
import redis

import settings
from actors import health
from actors.broker import broker
from actors.channels import Channels
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import Catalog
from gateways.ads import Destination
from gateways.channel import Channel
from gateways.evolution import EvolutionGateway
from gateways.evolution import default_client as evolution_client
from gateways.meta import MetaGateway
from gateways.meta import default_client as meta_client
from gateways.payments import registry
from gateways.payments.base import PaymentGateway
from gateways.telegram import TelegramGateway, default_client
from gateways.tiktok import TikTokGateway
from gateways.tiktok import default_client as tiktok_client
from gateways.utmify import UtmifyGateway
from gateways.utmify import default_client as utmify_client
from gateways.whatsapp_cloud import CloudGateway
from gateways.whatsapp_cloud import default_client as cloud_client


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


# Per gateway: the configuration version its adapter was built from, and the adapter.
_payment_gateways: dict[str, tuple[int | None, PaymentGateway]] = {}


def payment_gateway(gateway_id: str) -> PaymentGateway | None:
    """The gateway's adapter as configured now; rebuilt when the configuration changes."""
    cat = catalog()
    cat.refresh_if_stale()
    config = cat.gateway(gateway_id)
    if config is None:
        return None
    cached = _payment_gateways.get(gateway_id)
    if cached is not None and cached[0] == cat.version:
        return cached[1]
    adapter = registry.build(config.kind, gateway_id=config.id, webhook_secret=config.webhook_secret,
                             options=config.settings, client=payments_client(), bank=broker.client)  # fmt: skip
    _payment_gateways[gateway_id] = (cat.version, adapter)
    return adapter


@lru_cache(maxsize=1)
def payments_client() -> httpx.Client:
    return registry.default_client(settings.PAYMENT_TIMEOUT_SECONDS)


@lru_cache(maxsize=1)
def meta() -> MetaGateway:
    return MetaGateway(meta_client(settings.META_TIMEOUT_SECONDS), settings.META_GRAPH_BASE, settings.META_API_VERSION)


@lru_cache(maxsize=1)
def tiktok() -> TikTokGateway:
    return TikTokGateway(tiktok_client(settings.META_TIMEOUT_SECONDS), settings.TIKTOK_API_BASE)


@lru_cache(maxsize=1)
def utmify() -> UtmifyGateway:
    return UtmifyGateway(utmify_client(settings.META_TIMEOUT_SECONDS), settings.UTMIFY_API_BASE)


def destination(name: str) -> Destination:
    """The ad destination's gateway: meta, tiktok or utmify."""
    gateways: dict[str, Any] = {"meta": meta, "tiktok": tiktok, "utmify": utmify}
    return gateways[name]()  # type: ignore[no-any-return]


def token_refused(token: str, status: int, description: str) -> None:
    """TelegramGateway's hook: a call with `token` was answered 401/404. Which bot has it is read
    from the configuration each process holds (no query)."""
    bot_id = next((b.id for b in catalog().bots.values() if b.token and b.token == token), None)
    if bot_id is not None:
        health.refused(bot_id, status, description)


@lru_cache(maxsize=1)
def telegram() -> TelegramGateway:
    # A refused token marks its bot unhealthy for redirect pools.
    return TelegramGateway(default_client(settings.TELEGRAM_TIMEOUT_SECONDS), settings.TELEGRAM_API_BASE,
                           on_token_refused=token_refused)  # fmt: skip


@lru_cache(maxsize=1)
def channels() -> Channels:
    """Every bot's chat channel, built on one pooled client per provider (a refused or disconnected
    number is marked unhealthy)."""
    return Channels(
        telegram(),
        EvolutionGateway(evolution_client(settings.WHATSAPP_TIMEOUT_SECONDS)),
        CloudGateway(
            cloud_client(settings.WHATSAPP_TIMEOUT_SECONDS), settings.META_GRAPH_BASE, settings.META_API_VERSION
        ),
        cache=cache(),
        on_refused=health.refused,
    )


def channel(bot: BotConfig) -> Channel:
    return channels().of(bot)


@lru_cache(maxsize=1)
def cache() -> redis.Redis:
    """Redis for short-lived data (ad clicks, the file_id cache): CACHE_URL when set, else the
    broker's own client."""
    if settings.CACHE_URL:
        return redis.Redis.from_url(settings.CACHE_URL, socket_timeout=5, socket_connect_timeout=2)
    return broker.client


@lru_cache(maxsize=1)
def throttle() -> Throttle:
    return Throttle(
        broker.client,
        bot_rate=settings.TELEGRAM_BOT_RATE,
        window_ms=settings.TELEGRAM_WINDOW_MS,
        paid_rate=settings.TELEGRAM_PAID_BROADCAST_RATE,
        chat_rate=settings.TELEGRAM_CHAT_RATE,
        chat_burst=settings.TELEGRAM_CHAT_BURST,
        inflight_ms=int(settings.TELEGRAM_TIMEOUT_SECONDS * 1000) + 5000,
    )
