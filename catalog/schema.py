"""The sellers' configuration as one set of types (CONTRACT §3, §8–§13): what `validate` parses a file
(or the panel's form) into, what `apply` stores, and what the snapshot loads back for the edge and
the workers. References between offers are by slug, the seller's own names; an offer's `id` is its
stored row's (its buttons' `buy:{id}`), 0 until it has been applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


class ConfigError(ValueError):
    """A bad configuration; `key` is the dotted path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


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
    # What a bot of a suspended account answers instead of its welcome or a code.
    "unavailable": "Este bot está indisponível no momento. Tente novamente mais tarde.",
}


@dataclass(frozen=True)
class GatewayConfig:
    id: str
    kind: str
    webhook_secret: str
    settings: dict[str, str]  # the kind's own keys (gateways.payments.registry.OPTIONS)

    def __repr__(self) -> str:  # never print secrets or keys
        return f"GatewayConfig(id={self.id!r}, kind={self.kind!r})"


@dataclass(frozen=True)
class OfferConfig:
    slug: str  # the seller's id for it, unique in the bot
    label: str
    price: Decimal
    delivery_text: str
    delivery_link: str | None
    delivery_chat_id: int | None
    hidden: bool = False  # no button of its own: sold as a bump or by a follow-up
    bump: str | None = None  # the slug of the offer proposed as an order bump on a press of this one
    duration_seconds: int | None = None  # a subscription to delivery_chat_id for this long
    join_by_request: bool = False
    id: int = 0  # the stored offer's id; 0 until applied


@dataclass(frozen=True)
class Bump:
    """An order bump's question and buttons (the bot's texts unless [bots.bumps.<offer>] says)."""

    text: str | None = None
    accept: str | None = None
    decline: str | None = None


@dataclass(frozen=True)
class FollowupConfig:
    """An upsell (after the delivery of `after_offer`) or a downsell (`when` a lead has not bought or
    not paid), `delay_seconds` after its cause; its button buys `offer` at `price` (an upsell at the
    offer's own price, a downsell at its own)."""

    kind: str  # upsell | downsell
    position: int
    delay_seconds: int
    text: str
    media_url: str | None
    offer: str  # slug
    price: Decimal
    after_offer: str | None = None  # upsells: slug
    when: str | None = None  # downsells: not_bought | unpaid


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
    def of(cls, values: dict[str, Any] | None) -> WhatsAppConfig | None:
        """From stored or validated keys (others, such as the bot's webhook secret, are not its own)."""
        if not values:
            return None
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in names})

    def given(self) -> dict[str, Any]:
        """The keys that are set, as stored."""
        return {name: value for name in self.__dataclass_fields__ if (value := getattr(self, name)) is not None}


@dataclass(frozen=True)
class BotConfig:
    id: str
    token: str  # Telegram's; "" for WhatsApp
    username: str  # Telegram's, without @; "" for WhatsApp
    webhook_secret: str
    gateway_id: str | None
    pixel_id: str | None
    pixel_access_token: str | None
    pixel_test_event_code: str | None
    welcome_text: str
    welcome_media_url: str | None
    offers: tuple[OfferConfig, ...]
    texts: dict[str, str] = field(default_factory=dict)  # the seller's, over DEFAULT_TEXTS
    charge_minutes: int = 30
    send_qr: bool = True
    bumps: dict[str, Bump] = field(default_factory=dict)  # by the bump offer's slug
    upsells: tuple[FollowupConfig, ...] = ()
    downsells: tuple[FollowupConfig, ...] = ()
    remind_before: tuple[int, ...] = ()  # seconds before a subscription's end, longest first
    utmify_token: str | None = None  # ad destinations besides Meta (CONTRACT §13)
    tiktok_pixel_code: str | None = None
    tiktok_access_token: str | None = None
    channel: str = "telegram"  # telegram | evolution | whatsapp_cloud (CONTRACT §12)
    whatsapp: WhatsAppConfig | None = None
    suspended: bool = False  # its account's: the bot sells nothing (its welcome says "unavailable")

    def __repr__(self) -> str:  # never print the token or secrets
        return f"BotConfig(id={self.id!r}, channel={self.channel!r}, username={self.username!r})"

    @property
    def link_name(self) -> str:
        """Who buyers reach, as an operator reads it: @username, or the WhatsApp number."""
        return self.whatsapp.number if self.whatsapp is not None else f"@{self.username}"

    def offer(self, offer_id: int) -> OfferConfig | None:
        return next((o for o in self.offers if o.id == offer_id), None)

    def offer_by_slug(self, slug: str | None) -> OfferConfig | None:
        return next((o for o in self.offers if o.slug == slug), None) if slug else None

    def bump_for(self, offer: OfferConfig) -> OfferConfig | None:
        """The order bump proposed on a press of `offer`, if it has one."""
        return self.offer_by_slug(offer.bump)

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
class PoolConfig:
    """A redirect pool: its bots with their weights, in the order configured."""

    id: str
    members: tuple[tuple[str, int], ...]  # (bot id, weight)


@dataclass
class ConfigFile:
    """What one configuration file (or one save in the panel) says, for one account (its slug;
    None: the `default` account)."""

    account: str | None = None
    gateways: list[GatewayConfig] = field(default_factory=list)
    bots: list[BotConfig] = field(default_factory=list)
    pools: list[PoolConfig] = field(default_factory=list)


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


def discounted(price: Decimal, percent: int) -> Decimal:
    """`percent` off, rounded half up to cents, never under R$ 0.01."""
    value = (price * (100 - percent) / 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return max(value, Decimal("0.01"))
