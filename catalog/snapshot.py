"""An in-memory snapshot of the configuration (gateways, bots, offers), shared by the edge and the workers.

It reloads when `ops apply` bumps config_state.version, which each process polls at most every
CONFIG_POLL_SECONDS: no query per request or per message, and a change is live within seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import asdict
from decimal import Decimal
from typing import Any

from catalog.schema import BotConfig, Bump, FollowupConfig, GatewayConfig, OfferConfig, PoolConfig, WhatsAppConfig
from db.models import Account, Bot, ConfigState, Gateway, Offer, Pool
from gateways.channel_kinds import kind_of

# Each loader reads every object, or with `ids` only those (an account's, one the panel edits).


def load_gateways(ids: Collection[str] | None = None) -> dict[str, GatewayConfig]:
    query = Gateway.select() if ids is None else Gateway.select().where(Gateway.id.in_(list(ids)))
    return {g.id: GatewayConfig(g.id, g.kind, g.webhook_secret, dict(g.settings or {})) for g in query}


def load_bots(ids: Collection[str] | None = None) -> dict[str, BotConfig]:
    offers: dict[str, list[OfferConfig]] = {}
    active = Offer.active if ids is None else Offer.active & Offer.bot.in_(list(ids))
    for o in Offer.select().where(active).order_by(Offer.bot, Offer.position, Offer.id):
        offers.setdefault(o.bot_id, []).append(OfferConfig(  # type: ignore[attr-defined]  # peewee's FK id
            o.slug, o.label, o.price, o.delivery_text, o.delivery_link, o.delivery_chat_id, hidden=o.hidden,
            bump=o.bump_slug, duration_seconds=o.duration_seconds, join_by_request=o.join_by_request, id=o.id,
        ))  # fmt: skip
    suspended = {a.id for a in Account.select(Account.id).where(Account.state == "suspended")}
    bots: dict[str, BotConfig] = {}
    for b in Bot.select() if ids is None else Bot.select().where(Bot.id.in_(list(ids))):
        own = tuple(offers.get(b.id, ()))
        selling = stored_selling(b.selling or {}, {o.slug: o for o in own})
        bots[b.id] = BotConfig(
            id=b.id,
            token=b.token,
            username=b.username,
            webhook_secret=b.webhook_secret,
            gateway_id=b.gateway_id,  # type: ignore[attr-defined]
            pixel_id=b.pixel_id,
            pixel_access_token=b.pixel_access_token,
            pixel_test_event_code=b.pixel_test_event_code,
            utmify_token=b.utmify_token,
            tiktok_pixel_code=b.tiktok_pixel_code,
            tiktok_access_token=b.tiktok_access_token,
            welcome_text=b.welcome_text,
            welcome_media_url=b.welcome_media_url,
            offers=own,
            texts={**selling.pop("texts"), **(b.texts or {})},
            charge_minutes=b.charge_minutes,
            send_qr=b.send_qr,
            channel=b.channel,
            whatsapp=WhatsAppConfig.of(b.channel_settings) if kind_of(b.channel).numbered else None,
            suspended=b.account_id in suspended,  # type: ignore[attr-defined]  # peewee's FK id
            **selling,
        )
    return bots


def channel_settings(bot: BotConfig) -> dict[str, Any] | None:
    """A WhatsApp bot's keys as stored (encrypted), written in its file and checked by its webhook:
    its own, and its webhook secret where its kind has one (Evolution's bearer secret)."""
    if bot.whatsapp is None:
        return None
    stored = bot.whatsapp.given()
    if "webhook_secret" in kind_of(bot.channel).keys:
        stored["webhook_secret"] = bot.webhook_secret
    return stored


def selling_doc(bot: BotConfig) -> dict[str, Any]:
    """How a bot's bumps, upsells, downsells and reminders are stored on its row (`bot.selling`):
    offers by slug, delays in seconds."""
    upsells = [{"after_offer": u.after_offer, "delay": u.delay_seconds, "text": u.text, "media_url": u.media_url,
                "offer": u.offer} for u in bot.upsells]  # fmt: skip
    downsells = [{"when": d.when, "delay": d.delay_seconds, "text": d.text, "media_url": d.media_url,
                  "offer": d.offer, "price": str(d.price)} for d in bot.downsells]  # fmt: skip
    bumps = {slug: {k: v for k, v in asdict(bump).items() if v is not None} for slug, bump in bot.bumps.items()}
    subscriptions = {"remind_before": list(bot.remind_before)} if bot.remind_before else {}
    parts = {"subscriptions": subscriptions, "bumps": bumps, "upsells": upsells, "downsells": downsells}
    return {name: part for name, part in parts.items() if part}


def stored_selling(doc: dict[str, Any], offers: dict[str, OfferConfig]) -> dict[str, Any]:
    """A bot's stored bumps/upsells/downsells (`selling_doc`); an entry naming an offer that is gone
    is left out. An upsell sells at its offer's price now. Rows applied before the texts of
    [bots.subscriptions] moved to the bot's texts still carry them here (`texts`)."""
    bumps = {slug: Bump(t.get("text"), t.get("accept"), t.get("decline"))
             for slug, t in (doc.get("bumps") or {}).items() if slug in offers}  # fmt: skip
    upsells = tuple(
        FollowupConfig("upsell", i, int(u["delay"]), u["text"], u.get("media_url"), offer=u["offer"],
                       price=offers[u["offer"]].price, after_offer=u["after_offer"])
        for i, u in enumerate(doc.get("upsells") or [])
        if u["offer"] in offers and u["after_offer"] in offers
    )  # fmt: skip
    downsells = tuple(
        FollowupConfig("downsell", i, int(d["delay"]), d["text"], d.get("media_url"), offer=d["offer"],
                       price=Decimal(d["price"]), when=d["when"])
        for i, d in enumerate(doc.get("downsells") or [])
        if d["offer"] in offers
    )  # fmt: skip
    subscriptions = doc.get("subscriptions") or {}
    texts = {k: subscriptions[k] for k in ("reminder_text", "expired_text") if subscriptions.get(k)}
    remind = tuple(int(seconds) for seconds in subscriptions.get("remind_before", ()))
    return {"bumps": bumps, "upsells": upsells, "downsells": downsells, "remind_before": remind, "texts": texts}


def load_pools(ids: Collection[str] | None = None) -> dict[str, PoolConfig]:
    query = Pool.select() if ids is None else Pool.select().where(Pool.id.in_(list(ids)))
    return {p.id: PoolConfig(p.id, tuple((str(b), int(w)) for b, w in p.members or [])) for p in query}


def current_version() -> int:
    row = ConfigState.get_or_none(ConfigState.id == 1)
    return row.version if row is not None else 0


class Catalog:
    """Thread-safe; `refresh()` costs one tiny query unless the version moved."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.poll_seconds = poll_seconds
        self.version: int | None = None
        self.bots: dict[str, BotConfig] = {}
        self.gateways: dict[str, GatewayConfig] = {}
        self.pools: dict[str, PoolConfig] = {}
        self._checked_at = 0.0
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self.version is not None

    def refresh(self) -> bool:
        """Reload when the version changed; returns True when it did. Needs a DB connection."""
        with self._lock:
            self._checked_at = time.monotonic()
            version = current_version()
            if version == self.version:
                return False
            bots, gateways, pools = load_bots(), load_gateways(), load_pools()
            self.bots, self.gateways, self.pools, self.version = bots, gateways, pools, version
            return True

    def refresh_if_stale(self) -> None:
        if time.monotonic() - self._checked_at >= self.poll_seconds or not self.loaded:
            self.refresh()

    def bot(self, bot_id: str) -> BotConfig | None:
        return self.bots.get(bot_id)

    def gateway(self, gateway_id: str) -> GatewayConfig | None:
        return self.gateways.get(gateway_id)

    def pool(self, pool_id: str) -> PoolConfig | None:
        return self.pools.get(pool_id)
