"""Each bot's chat channel (gateways/channel.py), built from its configuration by its kind's builder
(one per kind of gateways/channel_kinds.py). Stages ask `Channels.of(bot)` and speak to what they get."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import settings
from catalog.schema import BotConfig, WhatsAppConfig
from db.models import Lead
from gateways.channel import Channel
from gateways.channel_kinds import kind_of
from gateways.evolution import EvolutionChannel, EvolutionGateway
from gateways.telegram import TelegramChannel, TelegramGateway
from gateways.whatsapp_cloud import CloudChannel, CloudGateway

WINDOW_MS = 60_000  # WhatsApp's rate_per_minute, as a window
# How many buyer-facing sends a stage may find ahead of it in its number's line and still be worth
# doing: on a slow channel a debt stays owed (and its message alive) that long at the number's rate.
LINE = 600


def rate_of(bot: BotConfig) -> tuple[int, int]:
    """The bot's sends per window (ms), as its channel takes them."""
    if kind_of(bot.channel).numbered and bot.whatsapp is not None:
        return bot.whatsapp.rate_per_minute, WINDOW_MS
    return settings.TELEGRAM_BOT_RATE, settings.TELEGRAM_WINDOW_MS


def patience(bot: BotConfig | None, base: dt.timedelta) -> dt.timedelta:
    """How long a buyer-facing stage stays worth doing for this bot: its own `base` (a code 10
    minutes, say), or, on a slow channel, as long as LINE sends take at its rate (an hour at
    WhatsApp's 10 a minute): a buyer in a long line is still owed what they asked for."""
    if bot is None:
        return base
    limit, window_ms = rate_of(bot)
    return max(base, dt.timedelta(milliseconds=LINE * window_ms / max(limit, 1)))


def patience_ms(bot: BotConfig | None, base_ms: int) -> int:
    return int(patience(bot, dt.timedelta(milliseconds=base_ms)).total_seconds() * 1000)


def last_message_at(bot_id: str) -> Callable[[int], dt.datetime | None]:
    """When the buyer at this number last wrote to the bot (Cloud's 24-hour window)."""

    def lookup(chat_id: int) -> dt.datetime | None:
        row = Lead.select(Lead.last_seen_at).where((Lead.bot == bot_id) & (Lead.chat_id == chat_id)).first()
        return row.last_seen_at if row is not None else None

    return lookup


class Channels:
    def __init__(self, telegram: TelegramGateway, evolution: EvolutionGateway, cloud: CloudGateway, *,
                 cache: object = None, on_refused: Callable[[str, int, str], None] | None = None) -> None:  # fmt: skip
        """`on_refused(bot_id, status, description)`: a WhatsApp number refused or disconnected
        (Telegram's refusals are reported by its gateway, by token)."""
        self.telegram, self.evolution, self.cloud = telegram, evolution, cloud
        self.cache, self.on_refused = cache, on_refused

    def of(self, bot: BotConfig) -> Channel:
        return BUILDERS[bot.channel](self, bot)

    def _telegram(self, bot: BotConfig) -> Channel:
        return TelegramChannel(self.telegram, bot.id, bot.token, rate=rate_of(bot), cache=self.cache)

    def _evolution(self, bot: BotConfig) -> Channel:
        wa = bot.whatsapp or WhatsAppConfig("", 1)
        return EvolutionChannel(self.evolution, bot.id, wa.evolution_url or "", wa.instance or "", wa.apikey or "",
                                rate=rate_of(bot), typing_ms=settings.EVOLUTION_TYPING_MS,
                                on_refused=self.on_refused)  # fmt: skip

    def _cloud(self, bot: BotConfig) -> Channel:
        wa = bot.whatsapp or WhatsAppConfig("", 1)
        template = (wa.access_template, wa.access_template_language or "pt_BR") if wa.access_template else None
        return CloudChannel(self.cloud, bot.id, wa.phone_number_id or "", wa.access_token or "",
                            rate=rate_of(bot), menu_button=bot.text("choices_button"),
                            last_message_at=last_message_at(bot.id), on_refused=self.on_refused,
                            access_template=template, cache=self.cache)  # fmt: skip


def standalone() -> Channels:
    """Channels for a process that is no worker (the CLI's set-webhooks, the panel's new bot): its
    own HTTP clients, with the settings' timeouts and hosts."""
    from gateways import evolution, telegram, whatsapp_cloud

    return Channels(
        telegram.TelegramGateway(telegram.default_client(settings.TELEGRAM_TIMEOUT_SECONDS),
                                 settings.TELEGRAM_API_BASE),
        evolution.EvolutionGateway(evolution.default_client(settings.WHATSAPP_TIMEOUT_SECONDS)),
        whatsapp_cloud.CloudGateway(whatsapp_cloud.default_client(settings.WHATSAPP_TIMEOUT_SECONDS),
                                    settings.META_GRAPH_BASE, settings.META_API_VERSION),
    )  # fmt: skip


def webhook_url(bot: BotConfig) -> str:
    """Where the bot's channel posts its updates: the edge's route for its kind."""
    return f"{settings.PUBLIC_BASE_URL}/webhook/{kind_of(bot.channel).route}/{bot.id}"


# A builder per kind of gateways/channel_kinds.py (tests/test_layers.py holds the two lists equal).
BUILDERS: dict[str, Callable[[Channels, BotConfig], Channel]] = {
    "telegram": Channels._telegram,
    "evolution": Channels._evolution,
    "whatsapp_cloud": Channels._cloud,
}
