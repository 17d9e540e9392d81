"""The welcome funnel: what a lead receives after /start, once per /start update (again only if a
worker died with the request in flight: a buyer is owed their welcome, CONTRACT §5.5)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import dramatiq
import redis

from actors import runtime
from actors.broker import FUNNEL, retry_when
from actors.outbox import MARKETING, OWED, Outcome, Send, deliver
from actors.throttle import Throttle
from db import hot
from db.catalog import BotConfig
from db.database import utcnow
from db.models import Lead
from gateways.telegram import TelegramGateway

log = logging.getLogger(__name__)

TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
FILE_IDS = "grimbots:tg:file_id:{bot_id}"


def telegram_length(text: str) -> int:
    """Telegram counts message length in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def split_text(text: str, limit: int = TEXT_LIMIT) -> list[str]:
    """Split on paragraph, line or word boundaries into parts Telegram accepts."""
    parts: list[str] = []
    rest = text.strip()
    while telegram_length(rest) > limit:
        # the longest prefix within the limit, then back off to a natural boundary
        cut = limit
        while telegram_length(rest[:cut]) > limit:
            cut -= 1
        window = rest[:cut]
        for sep in ("\n\n", "\n", " "):
            at = window.rfind(sep)
            if at > cut // 2:
                cut = at
                break
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def offer_keyboard(bot: BotConfig) -> dict[str, Any] | None:
    if not bot.buttons:
        return None
    rows = [[{"text": offer.label, "callback_data": f"buy:{offer.id}"}] for offer in bot.buttons]
    return {"inline_keyboard": rows}


def media_method(url: str) -> tuple[str, str]:
    """(Bot API method, its media parameter) for a media URL: .mp4 is a video, anything else a photo."""
    if urlparse(url).path.lower().endswith(".mp4"):
        return "sendVideo", "video"
    return "sendPhoto", "photo"


def file_id_of(result: Any) -> str | None:
    """The reusable file_id in a sendPhoto/sendVideo result (the largest photo size)."""
    if not isinstance(result, dict):
        return None
    if isinstance(result.get("video"), dict):
        return result["video"].get("file_id")
    photos = result.get("photo")
    if isinstance(photos, list) and photos and isinstance(photos[-1], dict):
        return photos[-1].get("file_id")
    return None


def plan_welcome(
    bot: BotConfig, chat_id: int, key: str, cached_file_id: str | None, remember_file_id: Any = None
) -> list[Send]:
    """The welcome as an ordered list of sends: media (by file_id once Telegram gave us one),
    text (in its own messages when too long for a caption), one inline button per offer on the last."""
    keyboard = offer_keyboard(bot)
    text = bot.welcome_text.strip()
    sends: list[Send] = []
    if bot.welcome_media_url:
        method, field = media_method(bot.welcome_media_url)
        params: dict[str, Any] = {"chat_id": chat_id, field: cached_file_id or bot.welcome_media_url}
        captioned = bool(text) and telegram_length(text) <= CAPTION_LIMIT
        if captioned:
            params["caption"] = text
        if keyboard and (captioned or not text):
            params["reply_markup"] = keyboard
        fallback = {**params, field: bot.welcome_media_url} if cached_file_id else None
        sends.append(Send(f"{key}:media", method, params, OWED, fallback=fallback, on_sent=remember_file_id))
        if captioned or not text:
            return sends
    parts = split_text(text)
    for i, part in enumerate(parts):
        params = {"chat_id": chat_id, "text": part, "link_preview_options": {"is_disabled": True}}
        if keyboard and i == len(parts) - 1:
            params["reply_markup"] = keyboard
        sends.append(Send(f"{key}:text:{i}", "sendMessage", params, OWED))
    return sends


def marketing_sends(key: str, chat_id: int, text: str, media_url: str | None, keyboard: dict[str, Any] | None,
                    *, extra: dict[str, Any] | None = None, own_slot: bool = False) -> list[Send]:  # fmt: skip
    """A marketing message (a follow-up, a broadcast): its text, with its media when it has one (as
    a caption when the text fits in one, else the media first), and `keyboard` on the text. Sent
    with the marketing policy: a send whose fate a crash left unknown is not sent again.
    `own_slot`: the caller gives deliver() its own way of taking a slot and must be able to stop
    while a 429 waits (a broadcast): the sends never sleep through a flood wait."""
    text, extra = text.strip(), extra or {}
    options: dict[str, Any] = {"wait_inline": not own_slot}
    markup = {"reply_markup": keyboard} if keyboard is not None else {}
    message = Send(key, "sendMessage", {"chat_id": chat_id, "text": text, **markup, **extra}, MARKETING, **options)
    if not media_url:
        return [message]
    method, field = media_method(media_url)
    if telegram_length(text) <= CAPTION_LIMIT:
        params = {"chat_id": chat_id, field: media_url, "caption": text, **markup, **extra}
        return [Send(key, method, params, MARKETING, **options)]
    media = Send(f"{key}:media", method, {"chat_id": chat_id, field: media_url, **extra}, MARKETING, **options)
    return [media, message]


@dataclass(frozen=True)
class Recipient:
    """Who a funnel message goes to: what the send needs of a lead, without loading it again."""

    lead_id: int
    chat_id: int
    reachable: bool

    @classmethod
    def of(cls, lead: Lead) -> Recipient:
        return cls(lead.id, lead.chat_id, lead.reachable)


def send_welcome(
    bot: BotConfig, lead: Recipient, update_id: int, telegram: TelegramGateway, throttle: Throttle, cache: redis.Redis
) -> Outcome | None:
    """Send the welcome for one /start update; safe to call again for the same update. Once its
    outcome is recorded (sent, refused, or nothing to send), the update owes nothing more."""
    if not lead.reachable:
        log.info("welcome skipped: lead unreachable bot=%s lead=%s", bot.id, lead.lead_id)
        hot.settle_owed(bot.id, update_id, utcnow())
        return None
    cache_key = FILE_IDS.format(bot_id=bot.id)
    cached = None
    if bot.welcome_media_url:
        raw = cache.hget(cache_key, bot.welcome_media_url)
        cached = raw.decode() if isinstance(raw, bytes) else raw

    def remember(result: Any) -> None:
        file_id = file_id_of(result)
        if file_id and bot.welcome_media_url:
            cache.hset(cache_key, bot.welcome_media_url, file_id)

    sends = plan_welcome(bot, lead.chat_id, f"welcome:{bot.id}:{update_id}", cached, remember)
    outcome = deliver(telegram, throttle, bot.token, bot.id, lead.chat_id, sends)
    hot.settle_owed(bot.id, update_id, utcnow())
    if outcome.blocked:
        mark_unreachable(lead.lead_id)
    if outcome.sent:
        log.info("welcome sent bot=%s lead=%s update=%s parts=%d", bot.id, lead.lead_id, update_id, len(outcome.sent))
    return outcome


def mark_unreachable(lead_id: int) -> None:
    Lead.update(reachable=False, unreachable_since=utcnow()).where((Lead.id == lead_id) & Lead.reachable).execute()


@dramatiq.actor(
    actor_name="funnel.welcome",
    queue_name=FUNNEL,
    max_retries=8,
    min_backoff=1_000,
    max_backoff=300_000,
    retry_when=retry_when(8),
    time_limit=60_000,
    max_age=6 * 3600 * 1000,  # a welcome hours late is noise
)
def welcome(bot_id: str, lead_id: int, update_id: int) -> None:
    bot = runtime.bot_config(bot_id)
    lead = Lead.get_or_none(Lead.id == lead_id)
    if bot is None or lead is None:
        log.warning("welcome dropped: bot or lead gone bot=%s lead=%s", bot_id, lead_id)
        hot.settle_owed(bot_id, update_id, utcnow())
        return
    send_welcome(bot, Recipient.of(lead), update_id, runtime.telegram(), runtime.throttle(), runtime.cache())


def answer_callback(
    bot: BotConfig, chat_id: int, callback_id: str, telegram: TelegramGateway, throttle: Throttle
) -> Outcome:
    """Stop the client's spinner; buying is the payments stage's (later) work."""
    send = Send(
        f"callback:{bot.id}:{callback_id}", "answerCallbackQuery", {"callback_query_id": callback_id}, throttled=False
    )
    return deliver(telegram, throttle, bot.token, bot.id, chat_id, [send])


@dramatiq.actor(
    actor_name="funnel.callback",
    queue_name=FUNNEL,
    max_retries=3,
    min_backoff=500,
    retry_when=retry_when(3),
    time_limit=30_000,
    max_age=5 * 60 * 1000,  # Telegram stops waiting for an answer long before this
)
def callback(bot_id: str, chat_id: int, callback_id: str) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        return
    answer_callback(bot, chat_id, callback_id, runtime.telegram(), runtime.throttle())
