"""Validating a whole configuration (CONTRACT §3: a TOML file, or the same tables from the panel) into
the types of `catalog.schema`, before anything is applied. Unknown keys are errors; every error
names the key it is about."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from catalog.schema import (
    DEFAULT_TEXTS,
    BotConfig,
    Bump,
    ConfigError,
    ConfigFile,
    FollowupConfig,
    GatewayConfig,
    OfferConfig,
    PoolConfig,
    WhatsAppConfig,
    discounted,
)
from gateways.channel_kinds import KINDS
from gateways.media import REF as MEDIA_REF
from gateways.payments.registry import OPTIONS
from gateways.whatsapp_cloud import BUTTON_TITLE as CLOUD_BUTTON_TITLE
from gateways.whatsapp_cloud import MAX_BUTTONS as CLOUD_MAX_BUTTONS
from gateways.whatsapp_cloud import MAX_ROWS as CLOUD_MAX_ROWS
from gateways.whatsapp_cloud import ROW_TITLE as CLOUD_ROW_TITLE

SLUG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BOT_TOKEN = re.compile(r"^\d{1,20}:[A-Za-z0-9_-]{1,128}$")
TELEGRAM_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
USERNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{3,63}$")
PRICE = re.compile(r"^\d{1,10}(\.\d{1,2})?$")
URL = re.compile(r"^https?://\S+$")
# A media: an http(s) URL, or an upload the platform keeps (gateways/media.py: media:{sha256}.{ext}).
MEDIA = re.compile(rf"{URL.pattern}|{MEDIA_REF.pattern}")
MEDIA_WHAT = "an http(s) URL (or media:<sha256>.<jpg|png|mp4>, an uploaded file)"

GATEWAY_LIMITS = {"merchant_name": 25, "merchant_city": 15}
# Each WhatsApp channel's own keys (True = required), besides number and rate_per_minute (CONTRACT §12).
CHANNELS = tuple(KINDS)
# Each WhatsApp channel's own keys (True = required), besides number and rate_per_minute (CONTRACT §12).
WHATSAPP_KEYS = {name: kind.keys for name, kind in KINDS.items() if kind.numbered}
TELEGRAM_ONLY = tuple(k for k in KINDS["telegram"].keys if not any(k in keys for keys in WHATSAPP_KEYS.values()))
PHONE = re.compile(r"^[1-9][0-9]{7,14}$")
DIGITS = re.compile(r"^[0-9]{1,32}$")
INSTANCE = re.compile(r"^[A-Za-z0-9_.@ -]{1,100}$")
TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
# A bot's keys: these, and each channel kind's own (gateways/channel_kinds.py).
BOT_KEYS = {"id", "channel", "number", "rate_per_minute", "gateway", "pixel_id", "pixel_access_token",
            "pixel_test_event_code", "utmify_token", "tiktok_pixel_code", "tiktok_access_token", "welcome", "offers",
            "texts", "checkout", "bumps", "upsells", "downsells", "subscriptions",
            *(key for kind in KINDS.values() for key in kind.keys)}  # fmt: skip
WELCOME_KEYS = {"text", "media_url"}
CHECKOUT_KEYS = {"expires_minutes", "send_qr"}
# answerCallbackQuery texts: Telegram takes at most 200 characters
CALLBACK_TEXTS = {"payment_pending", "payment_confirmed"}
OFFER_KEYS = {"id", "label", "price", "delivery_text", "delivery_link", "delivery_chat_id", "hidden", "bump",
              "duration", "join_by_request"}  # fmt: skip
SUBSCRIPTION_KEYS = {"remind_before", "reminder_text", "expired_text"}
BUMP_KEYS = {"text", "accept", "decline"}
UPSELL_KEYS = {"after_offer", "delay", "text", "media_url", "offer"}
DOWNSELL_KEYS = {"when", "delay", "text", "media_url", "offer", "discount_percent", "price"}
DOWNSELL_WHEN = ("not_bought", "unpaid")
POOL_KEYS = {"id", "bots"}
POOL_MEMBER_KEYS = {"bot", "weight"}
MAX_WEIGHT = 1000
DURATION = re.compile(r"^(\d{1,6})([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DELAY_SECONDS = 365 * 86400


# --- validation ------------------------------------------------------------------------------


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table")
    return value


def _tables(value: Any, key: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(key, f"must be an array of tables ([[{key}]])")
    return value


def _no_unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    for name in table:
        if name not in allowed:
            raise ConfigError(f"{where}.{name}" if where else name, "unknown key")


def _str(
    table: dict[str, Any],
    name: str,
    where: str,
    *,
    required: bool = True,
    pattern: re.Pattern[str] | None = None,
    max_len: int | None = None,
    what: str = "",
) -> str | None:
    key = f"{where}.{name}" if where else name
    if name not in table or (table[name] == "" and not required):
        if required:
            raise ConfigError(key, "is required")
        return None
    value = table[name]
    if not isinstance(value, str):
        raise ConfigError(key, "must be a string")
    if required and not value.strip():
        raise ConfigError(key, "must not be empty")
    if max_len is not None and len(value) > max_len:
        raise ConfigError(key, f"must be at most {max_len} characters")
    if pattern is not None and not pattern.match(value):
        raise ConfigError(key, f"must be {what or pattern.pattern}")
    return value


def _req(table: dict[str, Any], name: str, where: str, **kw: Any) -> str:
    value = _str(table, name, where, required=True, **kw)
    assert value is not None
    return value


def _price(table: dict[str, Any], where: str) -> Decimal:
    key = f"{where}.price"
    if "price" not in table:
        raise ConfigError(key, "is required")
    raw = table["price"]
    if isinstance(raw, bool) or isinstance(raw, float):
        raise ConfigError(key, 'must be a decimal string such as "19.90" (floats lose cents)')
    text = str(raw).strip() if isinstance(raw, (str, int)) else None
    if text is None or not PRICE.match(text):
        raise ConfigError(key, 'must be a decimal string such as "19.90"')
    try:
        price = Decimal(text).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise ConfigError(key, 'must be a decimal string such as "19.90"') from None
    if price <= 0:
        raise ConfigError(key, "must be greater than zero")
    return price


def duration_seconds(value: Any, key: str) -> int:
    """ "90s", "10m", "3d" → seconds."""
    match = DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(key, 'must be a duration such as "90s", "10m", "2h" or "3d"')
    seconds = int(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if seconds > MAX_DELAY_SECONDS:
        raise ConfigError(key, "must be at most 365 days")
    return seconds


def _offer_ref(table: dict[str, Any], name: str, where: str, slugs: set[str]) -> str:
    slug = _req(table, name, where)
    if slug not in slugs:
        raise ConfigError(f"{where}.{name}", f"no offer {slug!r} in this bot's offers")
    return slug


@dataclass(frozen=True)
class _Selling:
    bumps: dict[str, Bump]
    upsells: tuple[FollowupConfig, ...]
    downsells: tuple[FollowupConfig, ...]
    remind_before: tuple[int, ...]
    texts: dict[str, str]  # [bots.subscriptions]' reminder_text and expired_text


def _selling(table: dict[str, Any], where: str, offers: list[OfferConfig]) -> _Selling:
    """Bumps' texts, upsells, downsells and subscriptions' reminders, every offer reference checked
    against this bot's offers."""
    slugs = {o.slug for o in offers}
    prices = {o.slug: o.price for o in offers}
    for i, offer in enumerate(offers):
        if offer.bump is not None:
            key = f"{where}.offers[{i}].bump"
            if offer.bump == offer.slug:
                raise ConfigError(key, "an offer cannot be its own bump")
            if offer.bump not in slugs:
                raise ConfigError(key, f"no offer {offer.bump!r} in this bot's offers")
    bumps: dict[str, Bump] = {}
    for slug, texts in _table(table.get("bumps", {}), f"{where}.bumps").items():
        at = f"{where}.bumps.{slug}"
        if slug not in slugs:
            raise ConfigError(at, f"no offer {slug!r} in this bot's offers")
        texts = _table(texts, at)
        _no_unknown(texts, BUMP_KEYS, at)
        bumps[slug] = Bump(**{name: _req(texts, name, at, max_len=64 if name != "text" else 1000) for name in texts})
    upsells = []
    for i, up in enumerate(_tables(table.get("upsells", []), f"{where}.upsells")):
        at = f"{where}.upsells[{i}]"
        _no_unknown(up, UPSELL_KEYS, at)
        target = _offer_ref(up, "offer", at, slugs)
        upsells.append(FollowupConfig(
            "upsell", i,
            after_offer=_offer_ref(up, "after_offer", at, slugs),
            delay_seconds=duration_seconds(up.get("delay", "0s"), f"{at}.delay"),
            text=_req(up, "text", at, max_len=1000),
            media_url=_str(up, "media_url", at, required=False, pattern=MEDIA, what=MEDIA_WHAT),
            offer=target,
            price=prices[target],
        ))  # fmt: skip
    downsells = []
    for i, down in enumerate(_tables(table.get("downsells", []), f"{where}.downsells")):
        at = f"{where}.downsells[{i}]"
        _no_unknown(down, DOWNSELL_KEYS, at)
        when = down.get("when")
        if when not in DOWNSELL_WHEN:
            raise ConfigError(f"{at}.when", f"must be one of {', '.join(DOWNSELL_WHEN)}")
        if "delay" not in down:
            raise ConfigError(f"{at}.delay", "is required")
        target = _offer_ref(down, "offer", at, slugs)
        if ("discount_percent" in down) == ("price" in down):
            raise ConfigError(f"{at}.discount_percent", "give discount_percent or price (one of them)")
        if "price" in down:
            price = _price(down, at)
        else:
            percent = down["discount_percent"]
            if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 99:
                raise ConfigError(f"{at}.discount_percent", "must be a whole number from 1 to 99")
            price = discounted(prices[target], percent)
        downsells.append(FollowupConfig(
            "downsell", i,
            when=when,
            delay_seconds=duration_seconds(down["delay"], f"{at}.delay"),
            text=_req(down, "text", at, max_len=1000),
            media_url=_str(down, "media_url", at, required=False, pattern=MEDIA, what=MEDIA_WHAT),
            offer=target,
            price=price,
        ))  # fmt: skip
    remind_before, texts = _subscriptions(_table(table.get("subscriptions", {}), f"{where}.subscriptions"),
                                          f"{where}.subscriptions")  # fmt: skip
    return _Selling(bumps, tuple(upsells), tuple(downsells), remind_before, texts)


def _subscriptions(table: dict[str, Any], where: str) -> tuple[tuple[int, ...], dict[str, str]]:
    """[bots.subscriptions]: reminders before the end (durations, each once, longest first), and the two texts."""
    _no_unknown(table, SUBSCRIPTION_KEYS, where)
    reminders = table.get("remind_before", [])
    if not isinstance(reminders, list):
        raise ConfigError(f"{where}.remind_before", 'must be a list of durations such as ["3d", "1d"]')
    seconds = sorted({duration_seconds(r, f"{where}.remind_before[{i}]") for i, r in enumerate(reminders)},
                     reverse=True)  # fmt: skip
    texts: dict[str, str] = {}
    for name in ("reminder_text", "expired_text"):
        value = _str(table, name, where, required=False, max_len=1000)
        if value is not None:
            texts[name] = value
    return tuple(seconds), texts


def _gateway(table: dict[str, Any], where: str) -> GatewayConfig:
    kind = _req(table, "kind", where)
    if kind not in OPTIONS:
        raise ConfigError(f"{where}.kind", f"must be one of {', '.join(OPTIONS)}")
    own = OPTIONS[kind]
    _no_unknown(table, {"id", "kind", "webhook_secret", *own}, where)
    settings: dict[str, str] = {}
    for name, required in own.items():
        value = _str(table, name, where, required=required, max_len=GATEWAY_LIMITS.get(name))
        if value is not None:
            settings[name] = value
    return GatewayConfig(
        id=_req(table, "id", where, pattern=SLUG, what="1–64 characters of A-Za-z0-9_-"),
        kind=kind,
        webhook_secret=_req(table, "webhook_secret", where),
        settings=settings,
    )


def _offer(table: dict[str, Any], where: str) -> OfferConfig:
    _no_unknown(table, OFFER_KEYS, where)
    link = _str(table, "delivery_link", where, required=False, pattern=URL, what="an http(s) URL")
    chat = table.get("delivery_chat_id")
    if chat is not None and (isinstance(chat, bool) or not isinstance(chat, int)):
        raise ConfigError(f"{where}.delivery_chat_id", "must be an integer chat id such as -100123")
    if link is None and chat is None:
        raise ConfigError(f"{where}.delivery_link", "is required (or delivery_chat_id)")
    if link is not None and chat is not None:
        raise ConfigError(f"{where}.delivery_chat_id", "give delivery_link or delivery_chat_id, not both")
    hidden = table.get("hidden", False)
    if not isinstance(hidden, bool):
        raise ConfigError(f"{where}.hidden", "must be true or false")
    duration = duration_seconds(table["duration"], f"{where}.duration") if "duration" in table else None
    if duration is not None and duration < 10:
        raise ConfigError(f"{where}.duration", "must be at least 10 seconds")
    by_request = table.get("join_by_request", False)
    if not isinstance(by_request, bool):
        raise ConfigError(f"{where}.join_by_request", "must be true or false")
    if (duration is not None or by_request) and chat is None:
        key = "duration" if duration is not None else "join_by_request"
        raise ConfigError(f"{where}.{key}", "needs delivery_chat_id (the chat the subscription gives access to)")
    return OfferConfig(
        hidden=hidden,
        duration_seconds=duration,
        join_by_request=by_request,
        bump=_str(table, "bump", where, required=False),
        slug=_req(table, "id", where, pattern=SLUG, what="1–64 characters of A-Za-z0-9_-"),
        label=_req(table, "label", where, max_len=128),
        price=_price(table, where),
        delivery_text=_str(table, "delivery_text", where, required=False, max_len=3000) or "",
        delivery_link=link,
        delivery_chat_id=chat,
    )


def _texts(table: dict[str, Any], where: str) -> dict[str, str]:
    _no_unknown(table, set(DEFAULT_TEXTS), where)
    texts: dict[str, str] = {}
    for name in table:
        limit = 200 if name in CALLBACK_TEXTS else 3000
        texts[name] = _req(table, name, where, max_len=limit)
    if "whatsapp_start" in texts and "{token}" not in texts["whatsapp_start"]:
        raise ConfigError(f"{where}.whatsapp_start", "must contain {token}, where the click's code goes")
    if "pix" in texts and "{code}" not in texts["pix"]:
        raise ConfigError(f"{where}.pix", "must contain {code}, where the copy-and-paste code goes")
    return texts


def _checkout(table: dict[str, Any], where: str) -> tuple[int, bool]:
    _no_unknown(table, CHECKOUT_KEYS, where)
    minutes = table.get("expires_minutes", 30)
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 5 <= minutes <= 7 * 24 * 60:
        raise ConfigError(f"{where}.expires_minutes", "must be a whole number of minutes from 5 to 10080")
    send_qr = table.get("send_qr", True)
    if not isinstance(send_qr, bool):
        raise ConfigError(f"{where}.send_qr", "must be true or false")
    return minutes, send_qr


def _whatsapp(table: dict[str, Any], where: str, channel: str) -> dict[str, Any]:
    """A WhatsApp bot's keys, each checked; Telegram's and the other channel's refused by name."""
    for name in TELEGRAM_ONLY:
        if name in table:
            raise ConfigError(f"{where}.{name}", f"is for Telegram bots (channel = {channel!r} has none)")
    own = WHATSAPP_KEYS[channel]
    for other, keys in WHATSAPP_KEYS.items():
        for name in keys:
            if other != channel and name not in own and name in table:
                raise ConfigError(f"{where}.{name}", f"is for channel = {other!r}, not {channel!r}")
    values: dict[str, Any] = {
        "number": _req(table, "number", where, pattern=PHONE, what="the WhatsApp number in digits, e.g. 5511999999999")
    }
    rate = table.get("rate_per_minute", KINDS[channel].rate_per_minute)
    if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 6000:
        raise ConfigError(f"{where}.rate_per_minute", "must be a whole number from 1 to 6000")
    values["rate_per_minute"] = rate
    patterns: dict[str, tuple[re.Pattern[str], str]] = {
        "evolution_url": (URL, "an http(s) URL"), "instance": (INSTANCE, "an Evolution instance name"),
        "phone_number_id": (DIGITS, "digits"), "waba_id": (DIGITS, "digits"),
        "webhook_secret": (TELEGRAM_SECRET, "1–256 characters of A-Za-z0-9_-"),
        "access_template": (TEMPLATE_NAME, "an approved template's name: lowercase letters, digits and _"),
        "access_template_language": (LANGUAGE, "a template language code such as pt_BR"),
    }  # fmt: skip
    for name, required in own.items():
        pattern, what = patterns.get(name, (None, ""))
        value = _str(table, name, where, required=required, max_len=512, pattern=pattern, what=what)
        if value is not None:
            values[name] = value
    if "access_template_language" in values and "access_template" not in values:
        raise ConfigError(f"{where}.access_template_language", "needs access_template (the template it names)")
    if "evolution_url" in values:
        values["evolution_url"] = values["evolution_url"].rstrip("/")
    return values


def _distinct_titles(offers: list[OfferConfig], where: str) -> None:
    """The Cloud API shows the welcome's offers as reply buttons (≤ 3) or list rows (4–10) whose
    titles are the labels cut short: two that cut to the same title would be one choice to the
    buyer (and Meta refuses the message). Refused here, naming both offers."""
    shown = [(i, o) for i, o in enumerate(offers) if not o.hidden]
    if not 0 < len(shown) <= CLOUD_MAX_ROWS:
        return  # none, or a numbered list: the full labels
    size = CLOUD_BUTTON_TITLE if len(shown) <= CLOUD_MAX_BUTTONS else CLOUD_ROW_TITLE
    first: dict[str, OfferConfig] = {}
    for i, offer in shown:
        title = offer.label[:size]
        if title in first:
            both = f"offers {first[title].slug!r} and {offer.slug!r}"
            raise ConfigError(f"{where}.offers[{i}].label", f"{both} both show as {title!r} on WhatsApp (labels cut "
                              f"to {size} characters): make them differ sooner")  # fmt: skip
        first[title] = offer


def _bot(table: dict[str, Any], where: str, gateway_ids: set[str]) -> BotConfig:
    _no_unknown(table, BOT_KEYS, where)
    channel = table.get("channel", "telegram")
    if channel not in CHANNELS:
        raise ConfigError(f"{where}.channel", f"must be one of {', '.join(CHANNELS)}")
    whatsapp = _whatsapp(table, where, channel) if KINDS[channel].numbered else None
    if whatsapp is None:
        for name in ("number", "rate_per_minute", *(k for keys in WHATSAPP_KEYS.values() for k in keys)):
            if name in table and name != "webhook_secret":
                raise ConfigError(f"{where}.{name}", 'is for WhatsApp bots (channel = "evolution" or "whatsapp_cloud")')
    welcome = _table(table.get("welcome", {}), f"{where}.welcome")
    _no_unknown(welcome, WELCOME_KEYS, f"{where}.welcome")
    text = _str(welcome, "text", f"{where}.welcome", required=False) or ""
    media = _str(welcome, "media_url", f"{where}.welcome", required=False, pattern=MEDIA, what=MEDIA_WHAT)
    if not text.strip() and media is None:
        raise ConfigError(f"{where}.welcome.text", "is required (or welcome.media_url)")
    offers = [
        _offer(o, f"{where}.offers[{i}]") for i, o in enumerate(_tables(table.get("offers", []), f"{where}.offers"))
    ]
    seen: set[str] = set()
    for i, offer in enumerate(offers):
        if offer.slug in seen:
            raise ConfigError(f"{where}.offers[{i}].id", f"duplicate offer id {offer.slug!r}")
        seen.add(offer.slug)
    gateway = _str(table, "gateway", where, required=False)
    if gateway is not None and gateway not in gateway_ids:
        raise ConfigError(f"{where}.gateway", f"no gateway {gateway!r} in this file or the database")
    if offers and gateway is None:
        raise ConfigError(f"{where}.gateway", "is required for a bot with offers")
    texts = _texts(_table(table.get("texts", {}), f"{where}.texts"), f"{where}.texts")
    selling = _selling(table, where, offers)
    charge_minutes, send_qr = _checkout(_table(table.get("checkout", {}), f"{where}.checkout"), f"{where}.checkout")
    pixel_id = _str(table, "pixel_id", where, required=False, pattern=re.compile(r"^\d{1,32}$"), what="digits")
    pixel_token = _str(table, "pixel_access_token", where, required=False)
    if pixel_id and not pixel_token:
        raise ConfigError(f"{where}.pixel_access_token", "is required with pixel_id (Conversions API access token)")
    if pixel_token and not pixel_id:
        raise ConfigError(f"{where}.pixel_id", "is required with pixel_access_token")
    tiktok_code = _str(table, "tiktok_pixel_code", where, required=False, pattern=re.compile(r"^[A-Za-z0-9]{1,64}$"),
                       what="TikTok's pixel code (letters and digits)")  # fmt: skip
    tiktok_token = _str(table, "tiktok_access_token", where, required=False, max_len=512)
    if tiktok_code and not tiktok_token:
        raise ConfigError(
            f"{where}.tiktok_access_token", "is required with tiktok_pixel_code (Events API access token)"
        )
    if tiktok_token and not tiktok_code:
        raise ConfigError(f"{where}.tiktok_pixel_code", "is required with tiktok_access_token")
    if whatsapp is not None:
        for i, offer in enumerate(offers):
            if offer.delivery_chat_id is not None:  # the VIP chat and its invite links are Telegram's
                raise ConfigError(f"{where}.offers[{i}].delivery_chat_id",
                                  "is for Telegram bots: a WhatsApp bot delivers a delivery_link")  # fmt: skip
    if channel == "whatsapp_cloud":
        _distinct_titles(offers, where)
    telegram = whatsapp is None
    return BotConfig(
        id=_req(table, "id", where, pattern=SLUG, what="1–64 characters of A-Za-z0-9_-"),
        token=_req(table, "token", where, pattern=BOT_TOKEN, what="a Telegram bot token (digits:characters)")
        if telegram
        else "",
        username=_req(table, "username", where, pattern=USERNAME, what="a Telegram username").lstrip("@")
        if telegram
        else "",
        webhook_secret=_req(
            table,
            "webhook_secret",
            where,
            pattern=TELEGRAM_SECRET,
            what="1–256 characters of A-Za-z0-9_- (Telegram's secret_token)",
        )
        if telegram
        else str((whatsapp or {}).get("webhook_secret", "")),
        channel=channel,
        whatsapp=WhatsAppConfig.of(whatsapp),
        gateway_id=gateway,
        pixel_id=pixel_id,
        pixel_access_token=pixel_token,
        pixel_test_event_code=_str(table, "pixel_test_event_code", where, required=False, max_len=64),
        welcome_text=text,
        welcome_media_url=media,
        offers=tuple(offers),
        texts={**selling.texts, **texts},  # [bots.texts] wins over [bots.subscriptions]' two
        charge_minutes=charge_minutes,
        send_qr=send_qr,
        bumps=selling.bumps,
        upsells=selling.upsells,
        downsells=selling.downsells,
        remind_before=selling.remind_before,
        utmify_token=_str(table, "utmify_token", where, required=False, max_len=512),
        tiktok_pixel_code=tiktok_code,
        tiktok_access_token=tiktok_token,
    )


def _pool(table: dict[str, Any], where: str, bot_ids: set[str]) -> PoolConfig:
    """`[[pools]]`: an id and its bots, each a bot id (weight 1) or `{ bot = "...", weight = N }`."""
    _no_unknown(table, POOL_KEYS, where)
    pool_id = _req(table, "id", where, pattern=SLUG)
    bots = table.get("bots")
    if not isinstance(bots, list) or not bots:
        raise ConfigError(f"{where}.bots", "must be a non-empty list of bot ids or { bot = ..., weight = ... }")
    members: list[tuple[str, int]] = []
    for i, item in enumerate(bots):
        at = f"{where}.bots[{i}]"
        if isinstance(item, str):
            bot_id, weight = item, 1
        elif isinstance(item, dict):
            _no_unknown(item, POOL_MEMBER_KEYS, at)
            bot_id = _req(item, "bot", at)
            weight = item.get("weight", 1)
            if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= MAX_WEIGHT:
                raise ConfigError(f"{at}.weight", f"must be an integer from 1 to {MAX_WEIGHT}")
        else:
            raise ConfigError(at, "must be a bot id or { bot = ..., weight = ... }")
        if bot_id not in bot_ids:
            raise ConfigError(at, f"unknown bot {bot_id!r} (not in this file nor applied before)")
        if any(b == bot_id for b, _ in members):
            raise ConfigError(at, f"bot {bot_id!r} is in the pool twice")
        members.append((bot_id, weight))
    return PoolConfig(pool_id, tuple(members))


def parse(data: dict[str, Any], known_gateways: set[str], known_bots: set[str] | None = None) -> ConfigFile:
    """Validate a decoded TOML document. `known_gateways`, `known_bots`: ids already in the database."""
    _no_unknown(data, {"account", "gateways", "bots", "pools"}, "")
    config = ConfigFile(account=account_of(data))
    for i, table in enumerate(_tables(data.get("gateways", []), "gateways")):
        gateway = _gateway(table, f"gateways[{i}]")
        if any(g.id == gateway.id for g in config.gateways):
            raise ConfigError(f"gateways[{i}].id", f"duplicate gateway id {gateway.id!r}")
        config.gateways.append(gateway)
    gateway_ids = known_gateways | {g.id for g in config.gateways}
    for i, table in enumerate(_tables(data.get("bots", []), "bots")):
        bot = _bot(table, f"bots[{i}]", gateway_ids)
        if any(b.id == bot.id for b in config.bots):
            raise ConfigError(f"bots[{i}].id", f"duplicate bot id {bot.id!r}")
        config.bots.append(bot)
    bot_ids = (known_bots or set()) | {b.id for b in config.bots}
    for i, table in enumerate(_tables(data.get("pools", []), "pools")):
        pool = _pool(table, f"pools[{i}]", bot_ids)
        if any(p.id == pool.id for p in config.pools):
            raise ConfigError(f"pools[{i}].id", f"duplicate pool id {pool.id!r}")
        config.pools.append(pool)
    return config


def account_of(data: dict[str, Any]) -> str | None:
    """The account a document names at its top (`account = "slug"`), or None."""
    if "account" not in data:
        return None
    return _req(data, "account", "", pattern=SLUG, what="an account's slug: 1–64 characters of A-Za-z0-9_-")


def load(path: Path, known_gateways: set[str], known_bots: set[str] | None = None) -> ConfigFile:
    return parse(read(path), known_gateways, known_bots)


def read(path: Path) -> dict[str, Any]:
    """A configuration file's TOML, decoded (not validated)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read file ({exc.strerror})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return data
