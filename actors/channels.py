"""Each bot's chat channel (gateways/channel.py), built from its configuration: the one place that
knows which kinds there are. Stages ask `Channels.of(bot)` and speak to what they get."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import settings
from db.catalog import BotConfig
from db.models import Lead
from gateways.channel import Channel
from gateways.evolution import EvolutionChannel, EvolutionGateway
from gateways.telegram import TelegramChannel, TelegramGateway
from gateways.whatsapp_cloud import CloudChannel, CloudGateway

WINDOW_MS = 60_000  # WhatsApp's rate_per_minute, as a window


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
        wa = bot.whatsapp
        if bot.channel == "evolution" and wa is not None:
            return EvolutionChannel(self.evolution, bot.id, wa.evolution_url or "", wa.instance or "", wa.apikey or "",
                                    rate=(wa.rate_per_minute, WINDOW_MS), typing_ms=settings.EVOLUTION_TYPING_MS,
                                    on_refused=self.on_refused)  # fmt: skip
        if bot.channel == "whatsapp_cloud" and wa is not None:
            return CloudChannel(self.cloud, bot.id, wa.phone_number_id or "", wa.access_token or "",
                                rate=(wa.rate_per_minute, WINDOW_MS), menu_button=bot.text("choices_button"),
                                last_message_at=last_message_at(bot.id), on_refused=self.on_refused)  # fmt: skip
        rate = (settings.TELEGRAM_BOT_RATE, settings.TELEGRAM_WINDOW_MS)
        return TelegramChannel(self.telegram, bot.id, bot.token, rate=rate, cache=self.cache)
