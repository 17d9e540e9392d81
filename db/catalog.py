"""An in-memory snapshot of the configuration (bots, offers), shared by the edge and the workers.

It reloads when `ops apply` bumps config_state.version, which each process polls at most every
CONFIG_POLL_SECONDS: no query per request or per message, and a change is live within seconds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from db.models import Bot, ConfigState, Offer


@dataclass(frozen=True)
class OfferConfig:
    id: int
    slug: str
    label: str
    price: Decimal
    delivery_text: str
    delivery_link: str | None
    delivery_chat_id: int | None


@dataclass(frozen=True)
class BotConfig:
    id: str
    token: str
    username: str
    webhook_secret: str
    gateway_id: str | None
    pixel_id: str | None
    pixel_access_token: str | None
    pixel_test_event_code: str | None
    welcome_text: str
    welcome_media_url: str | None
    offers: tuple[OfferConfig, ...]

    def __repr__(self) -> str:  # never print the token or secrets
        return f"BotConfig(id={self.id!r}, username={self.username!r})"


def load_bots() -> dict[str, BotConfig]:
    offers: dict[str, list[OfferConfig]] = {}
    query = Offer.select().where(Offer.active).order_by(Offer.bot, Offer.position, Offer.id)
    for o in query:
        offers.setdefault(o.bot_id, []).append(  # type: ignore[attr-defined]  # peewee's FK id accessor
            OfferConfig(o.id, o.slug, o.label, o.price, o.delivery_text, o.delivery_link, o.delivery_chat_id)
        )
    return {
        b.id: BotConfig(
            id=b.id,
            token=b.token,
            username=b.username,
            webhook_secret=b.webhook_secret,
            gateway_id=b.gateway_id,  # type: ignore[attr-defined]
            pixel_id=b.pixel_id,
            pixel_access_token=b.pixel_access_token,
            pixel_test_event_code=b.pixel_test_event_code,
            welcome_text=b.welcome_text,
            welcome_media_url=b.welcome_media_url,
            offers=tuple(offers.get(b.id, ())),
        )
        for b in Bot.select()
    }


def current_version() -> int:
    row = ConfigState.get_or_none(ConfigState.id == 1)
    return row.version if row is not None else 0


class Catalog:
    """Thread-safe; `refresh()` costs one tiny query unless the version moved."""

    def __init__(self, poll_seconds: float = 1.0) -> None:
        self.poll_seconds = poll_seconds
        self.version: int | None = None
        self.bots: dict[str, BotConfig] = {}
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
            bots = load_bots()
            self.bots, self.version = bots, version
            return True

    def refresh_if_stale(self) -> None:
        if time.monotonic() - self._checked_at >= self.poll_seconds or not self.loaded:
            self.refresh()

    def bot(self, bot_id: str) -> BotConfig | None:
        return self.bots.get(bot_id)
