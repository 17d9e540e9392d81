"""An in-memory snapshot of the configuration (gateways, bots, offers), shared by the edge and the workers.

It reloads when `ops apply` bumps config_state.version, which each process polls at most every
CONFIG_POLL_SECONDS: no query per request or per message, and a change is live within seconds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from db.models import Bot, ConfigState, Gateway, Offer, Pool

# What buyers read around a payment, unless the bot's [bots.texts] says otherwise (docs/configuration.md lists
# the keys and their placeholders). answerCallbackQuery texts must stay within 200 characters.
DEFAULT_TEXTS: dict[str, str] = {
    "pix": "Pague com PIX copia e cola — toque no código para copiar:\n\n{code}\n\n"
    "Valor: R$ {amount}. O acesso chega aqui assim que o pagamento for confirmado.",
    "check_button": "Já paguei — verificar",
    "payment_pending": "Ainda não recebemos seu pagamento. Assim que o PIX for confirmado, o acesso chega aqui.",
    "payment_confirmed": "Pagamento confirmado!",
    "charge_failed": "Não conseguimos gerar seu PIX agora. Tente novamente em instantes.",
    "charge_expired": "Este PIX expirou. Toque no plano de novo para gerar outro.",
    "copy_button": "Copiar código PIX",
    "bump": "Quer levar também {offer} por mais R$ {amount}?",  # [bots.bumps.<offer>] text overrides it
    "bump_accept": "Sim, quero!",
    "bump_decline": "Não, obrigado",
    "followup_button": "Quero — R$ {amount}",  # the button of an upsell or downsell: {offer}, {amount}
    "broadcast_button": "{offer} — R$ {amount}",  # a broadcast's --offer button: {offer}, {amount}
    "reminder_text": "Sua assinatura vence em {days} dia(s). Renove para não perder o acesso.",
    "expired_text": "Sua assinatura venceu. Toque para renovar.",
    "renew_button": "Renovar — R$ {amount}",
    # WhatsApp (CONTRACT §12): the prefilled first message of a wa.me link ({token}: the click), the
    # answer to a message that picks nothing, the button that opens a list of more than 3 choices.
    "whatsapp_start": "Olá! Quero saber mais. Código: {token}",
    "choose_hint": "Não entendi. Responda com o número de uma das opções acima.",
    "choices_button": "Ver opções",
}


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    kind: str
    webhook_secret: str
    settings: dict[str, str]

    def __repr__(self) -> str:  # never print secrets or keys
        return f"GatewayConfig(id={self.id!r}, kind={self.kind!r})"


@dataclass(frozen=True)
class OfferConfig:
    id: int
    slug: str
    label: str
    price: Decimal
    delivery_text: str
    delivery_link: str | None
    delivery_chat_id: int | None
    hidden: bool = False  # no button of its own
    bump_id: int | None = None  # the offer proposed as an order bump on a press of this one
    duration_seconds: int | None = None  # a subscription to delivery_chat_id for this long
    join_by_request: bool = False


@dataclass(frozen=True)
class Bump:
    """An order bump's question and buttons (the bot's texts unless [bots.bumps.<offer>] says)."""

    text: str | None = None
    accept: str | None = None
    decline: str | None = None


@dataclass(frozen=True)
class FollowupConfig:
    """An upsell (after the delivery of `after_offer_id`) or a downsell (`when` a lead has not
    bought or not paid), `delay_seconds` after its cause; its button buys `offer_id` at `price`."""

    kind: str  # upsell | downsell
    position: int
    delay_seconds: int
    text: str
    media_url: str | None
    offer_id: int
    price: Decimal
    after_offer_id: int | None = None  # upsells
    when: str | None = None  # downsells: not_bought | unpaid


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
    texts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TEXTS))
    charge_minutes: int = 30
    send_qr: bool = True
    bumps: dict[int, Bump] = field(default_factory=dict)  # by the bump offer's id
    upsells: tuple[FollowupConfig, ...] = ()
    downsells: tuple[FollowupConfig, ...] = ()
    remind_before: tuple[int, ...] = ()  # seconds before a subscription's end, longest first
    utmify_token: str | None = None  # ad destinations besides Meta (CONTRACT §13)
    tiktok_pixel_code: str | None = None
    tiktok_access_token: str | None = None
    channel: str = "telegram"  # telegram | evolution | whatsapp_cloud (CONTRACT §12)
    whatsapp: WhatsAppConfig | None = None

    def __repr__(self) -> str:  # never print the token or secrets
        return f"BotConfig(id={self.id!r}, channel={self.channel!r}, username={self.username!r})"

    @property
    def link_name(self) -> str:
        """Who buyers reach, as an operator reads it: @username, or the WhatsApp number."""
        return self.whatsapp.number if self.whatsapp is not None else f"@{self.username}"

    def offer(self, offer_id: int) -> OfferConfig | None:
        return next((o for o in self.offers if o.id == offer_id), None)

    @property
    def buttons(self) -> tuple[OfferConfig, ...]:
        """The offers shown under the welcome: hidden ones are sold only as bumps and follow-ups."""
        return tuple(o for o in self.offers if not o.hidden)

    def followup(self, kind: str, position: int) -> FollowupConfig | None:
        items = self.upsells if kind == "upsell" else self.downsells
        return items[position] if 0 <= position < len(items) else None

    def text(self, name: str, **values: Any) -> str:
        """A buyer text with its {placeholders} filled (plain replacement: a seller's stray
        brace is just a brace)."""
        return fill(self.texts.get(name) or DEFAULT_TEXTS[name], **values)


@dataclass(frozen=True)
class WhatsAppConfig:
    """A WhatsApp bot's keys: Evolution's (evolution_url, instance, apikey) or the Cloud API's
    (phone_number_id, waba_id, access_token, app_secret, verify_token)."""

    number: str
    rate_per_minute: int
    evolution_url: str | None = None
    instance: str | None = None
    apikey: str | None = None
    phone_number_id: str | None = None
    waba_id: str | None = None
    access_token: str | None = None
    app_secret: str | None = None
    verify_token: str | None = None
    access_template: str | None = None  # Cloud: an approved template carrying a delivery, past the 24 h
    access_template_language: str | None = None

    def __repr__(self) -> str:  # never print keys
        return f"WhatsAppConfig(instance={self.instance!r}, phone_number_id={self.phone_number_id!r})"

    @classmethod
    def of(cls, channel: str, values: dict[str, Any] | None) -> WhatsAppConfig | None:
        if channel == "telegram" or not values:
            return None
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class PoolConfig:
    """A redirect pool: its bots with their weights, in the order configured."""

    id: str
    members: tuple[tuple[str, int], ...]


def brl(amount: Decimal) -> str:
    """19.9 → "19,90", the way buyers read prices."""
    whole, cents = f"{amount:.2f}".split(".")
    groups = f"{int(whole):,}".replace(",", ".")
    return f"{groups},{cents}"


def fill(template: str, **values: Any) -> str:
    """`template` with each {name} replaced by its value."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def load_gateways() -> dict[str, GatewayConfig]:
    return {g.id: GatewayConfig(g.id, g.kind, g.webhook_secret, dict(g.settings or {})) for g in Gateway.select()}


def load_bots() -> dict[str, BotConfig]:
    rows: dict[str, list[Offer]] = {}
    for o in Offer.select().where(Offer.active).order_by(Offer.bot, Offer.position, Offer.id):
        rows.setdefault(o.bot_id, []).append(o)  # type: ignore[attr-defined]  # peewee's FK id accessor
    offers: dict[str, list[OfferConfig]] = {}
    for bot_id, bot_rows in rows.items():
        ids = {o.slug: o.id for o in bot_rows}
        offers[bot_id] = [
            OfferConfig(
                o.id,
                o.slug,
                o.label,
                o.price,
                o.delivery_text,
                o.delivery_link,
                o.delivery_chat_id,
                hidden=o.hidden,
                bump_id=ids.get(o.bump_slug) if o.bump_slug else None,
                duration_seconds=o.duration_seconds,
                join_by_request=o.join_by_request,
            )
            for o in bot_rows
        ]
    bots = {b.id: b for b in Bot.select()}
    selling = {b.id: _selling(b.selling or {}, {o.slug: o for o in rows.get(b.id, [])}) for b in bots.values()}
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
            utmify_token=b.utmify_token,
            tiktok_pixel_code=b.tiktok_pixel_code,
            tiktok_access_token=b.tiktok_access_token,
            welcome_text=b.welcome_text,
            welcome_media_url=b.welcome_media_url,
            offers=tuple(offers.get(b.id, ())),
            texts={**DEFAULT_TEXTS, **selling[b.id].pop("sub_texts"), **(b.texts or {})},
            charge_minutes=b.charge_minutes,
            send_qr=b.send_qr,
            channel=b.channel,
            whatsapp=WhatsAppConfig.of(b.channel, b.channel_settings),
            **selling[b.id],
        )
        for b in bots.values()
    }


def _selling(doc: dict[str, Any], offers: dict[str, Offer]) -> dict[str, Any]:
    """The bot's stored bumps/upsells/downsells with offers resolved to the ids they have now; an
    entry naming an offer that is gone is left out. An upsell sells at the offer's own price."""
    ids = {slug: o.id for slug, o in offers.items()}
    bumps = {ids[slug]: Bump(t.get("text"), t.get("accept"), t.get("decline"))
             for slug, t in (doc.get("bumps") or {}).items() if slug in ids}  # fmt: skip
    upsells = tuple(
        FollowupConfig(
            "upsell",
            i,
            int(u["delay"]),
            u["text"],
            u.get("media_url"),
            ids[u["offer"]],
            offers[u["offer"]].price,
            after_offer_id=ids[u["after_offer"]],
        )
        for i, u in enumerate(doc.get("upsells") or [])
        if u["offer"] in ids and u["after_offer"] in ids
    )
    downsells = tuple(
        FollowupConfig(
            "downsell",
            i,
            int(d["delay"]),
            d["text"],
            d.get("media_url"),
            ids[d["offer"]],
            Decimal(d["price"]),
            when=d["when"],
        )
        for i, d in enumerate(doc.get("downsells") or [])
        if d["offer"] in ids
    )
    subscriptions = doc.get("subscriptions") or {}
    texts = {k: subscriptions[k] for k in ("reminder_text", "expired_text") if subscriptions.get(k)}
    remind = tuple(int(seconds) for seconds in subscriptions.get("remind_before", ()))
    return {"bumps": bumps, "upsells": upsells, "downsells": downsells, "remind_before": remind, "sub_texts": texts}


def load_pools() -> dict[str, PoolConfig]:
    return {p.id: PoolConfig(p.id, tuple((str(b), int(w)) for b, w in p.members or [])) for p in Pool.select()}


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
