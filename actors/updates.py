"""Update routing: every Telegram update the edge accepted is recorded once under (bot, update_id)
and routed: /start to the welcome funnel, button presses to their handler, blocks and unblocks
to the lead's reachability."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

import dramatiq
import redis

import clicks
import settings
from actors import followups, funnel, owed, payments, pixel, runtime, subscriptions
from actors.broker import UPDATES, counters, retry_when
from actors.enqueue import unit_of_work
from actors.outbox import NOT_NOW, hand_off
from actors.throttle import Throttle
from db import hot
from db.catalog import BotConfig
from db.database import utcnow
from db.models import BumpAnswer, Lead
from gateways.telegram import TelegramGateway

log = logging.getLogger(__name__)

INT64 = 2**63


class MalformedUpdate(ValueError):
    """An update that can never be processed: wrong types, ids out of range. Recorded once,
    never retried, and its content is never logged."""


def repaired(value: Any) -> Any:
    """The update with every string made encodable: a lone surrogate (valid JSON, invalid UTF-8)
    would fail every database write, so it becomes U+FFFD."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        return value
    if isinstance(value, dict):
        return {repaired(k): repaired(v) for k, v in value.items()}
    if isinstance(value, list):
        return [repaired(v) for v in value]
    return value


def telegram_id(value: Any) -> int:
    """A Telegram user or chat id: an integer that fits the database's BIGINT."""
    if not isinstance(value, int) or isinstance(value, bool) or not -INT64 < value < INT64:
        raise MalformedUpdate("id is not a 64-bit integer")
    return value


START = re.compile(r"^/start(?:@\w+)?(?:\s+(?P<payload>\S+))?\s*$")
PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Routed:
    kind: str  # start | message | callback | block | unblock | other
    update_id: int
    lead: funnel.Recipient | None = None
    repeated: bool = False  # seen before: nothing was written this time

    @property
    def lead_id(self) -> int | None:
        return self.lead.lead_id if self.lead is not None else None


def classify(update: dict[str, Any]) -> str:
    message = update.get("message")
    if isinstance(message, dict):
        if (message.get("chat") or {}).get("type") != "private" or not isinstance(message.get("from"), dict):
            return "other"
        text = message.get("text")
        if isinstance(text, str) and START.match(text.strip()):
            return "start"
        return "message"
    if isinstance(update.get("callback_query"), dict):
        return "callback"
    if isinstance(update.get("chat_join_request"), dict):
        return "join_request"
    if isinstance(update.get("chat_member"), dict):
        return "chat_member"
    member = update.get("my_chat_member")
    if isinstance(member, dict) and (member.get("chat") or {}).get("type") == "private":
        status = (member.get("new_chat_member") or {}).get("status")
        if status == "kicked":
            return "block"
        if status == "member":
            return "unblock"
    return "other"


def start_payload(text: str) -> str | None:
    match = START.match(text.strip())
    payload = match.group("payload") if match else None
    return payload if payload and PAYLOAD.match(payload) else None


def upsert_lead(
    bot_id: str, user: dict[str, Any], chat_id: int, *, payload: str | None = None, reachable: bool | None = True
) -> funnel.Recipient:
    """Insert or refresh the lead; first_seen_at stays, the rest follows the latest update."""
    names = (
        str(user.get("first_name") or "")[:255],
        str(user["last_name"])[:255] if user.get("last_name") else None,
        str(user["username"])[:64] if user.get("username") else None,
        str(user["language_code"])[:16] if user.get("language_code") else None,
    )
    lead_id, chat, is_reachable = hot.upsert_lead(bot_id, int(user["id"]), chat_id, names, payload, utcnow(), reachable)
    return funnel.Recipient(lead_id, chat, is_reachable)


def _sender(kind: str, update: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    """(the Telegram user an update is from, the private chat it concerns), for kinds with a lead."""
    try:
        if kind in ("start", "message"):
            user, chat = update["message"]["from"], update["message"]["chat"]["id"]
        elif kind == "callback":
            if not isinstance(update["callback_query"].get("id"), str):
                raise MalformedUpdate("callback_query without its id")
            user, chat = update["callback_query"]["from"], _callback_chat(update["callback_query"])
        elif kind in ("block", "unblock"):
            user, chat = update["my_chat_member"]["from"], update["my_chat_member"]["chat"]["id"]
        else:
            return None
    except (KeyError, TypeError) as exc:
        raise MalformedUpdate(f"{kind} update without its sender or chat") from exc
    if not isinstance(user, dict):
        raise MalformedUpdate(f"{kind} update without its sender")
    telegram_id(user.get("id"))
    return user, telegram_id(chat)


def _record(bot: BotConfig, kind: str, update: dict[str, Any]) -> funnel.Recipient | None:
    """The update's database writes; returns the lead it concerns."""
    sender = _sender(kind, update)
    if sender is None:
        return None
    user, chat_id = sender
    if kind == "start":
        payload = start_payload(update["message"].get("text") or "")
        return upsert_lead(bot.id, user, chat_id, payload=payload, reachable=True)
    if kind == "message":
        return upsert_lead(bot.id, user, chat_id, reachable=True)
    if kind == "callback":
        lead = upsert_lead(bot.id, user, chat_id, reachable=None)
        action, target = parse_callback_data(update["callback_query"].get("data"))
        if action in ("bump_yes", "bump_no"):
            record_bump_answer(bot, lead.lead_id, target, action == "bump_yes")
        return lead
    return upsert_lead(bot.id, user, chat_id, reachable=kind == "unblock")


def record_bump_answer(bot: BotConfig, lead_id: int, offer_id: int, accepted: bool) -> None:
    """The lead's answer to the offer's order bump: the first one stands (a late or repeated press
    of either button changes nothing)."""
    offer = bot.offer(offer_id)
    if offer is None or offer.bump_id is None:
        return
    values = {"lead_id": lead_id, "offer_id": offer_id, "bump_offer_id": offer.bump_id, "accepted": accepted,
              "answered_at": utcnow()}  # fmt: skip
    if hot.insert(BumpAnswer, values, ignore_conflicts=True) is not None:
        counters.inc("grimbots_bumps_total", {"outcome": "accepted" if accepted else "declined"})


def _known_lead(bot: BotConfig, kind: str, update: dict[str, Any]) -> funnel.Recipient | None:
    sender = _sender(kind, update)
    if sender is None:
        return None
    lead = Lead.get_or_none((Lead.bot == bot.id) & (Lead.telegram_user_id == int(sender[0]["id"])))
    return funnel.Recipient.of(lead) if lead is not None else None


def _callback_chat(query: dict[str, Any]) -> int:
    message = query.get("message")
    chat = message.get("chat") if isinstance(message, dict) else None
    chat_id = chat.get("id") if isinstance(chat, dict) else None
    return telegram_id(chat_id or query["from"]["id"])


def ad_click(bot: BotConfig, kind: str, update: dict[str, Any], cache: redis.Redis) -> clicks.Click | None:
    """The ad click a `/start {token}` came from, while its token is valid (7 days); else None."""
    if kind != "start":
        return None
    payload = start_payload(update["message"].get("text") or "")
    return clicks.load(cache, bot.id, payload) if payload else None


def route_update(bot: BotConfig, update: dict[str, Any], cache: redis.Redis | None = None) -> Routed:
    """Take one update in: its database writes happen the first time only, in the same
    transaction as its (bot, update_id) record. A repeat (Telegram's, or our own redelivery after a
    worker died) writes nothing and is routed again: the stages it reaches are idempotent per update.
    A /start attaches the ad click it came with to the lead and records its ViewContent."""
    update_id = update["update_id"]
    if not isinstance(update_id, int) or isinstance(update_id, bool) or not 0 < update_id < INT64:
        raise MalformedUpdate("update_id is not a positive 64-bit integer")
    kind = classify(update)
    click = ad_click(bot, kind, update, cache or runtime.cache())
    now = utcnow()
    with unit_of_work():
        record_id = hot.record_update(bot.id, update_id, kind, now)
        new = record_id is not None
        lead = _record(bot, kind, update) if new else _known_lead(bot, kind, update)
        if record_id is not None and lead is not None:
            owes = owed_by(kind, update, lead)
            if owes is not None:  # the clock re-drives it unless its stage says done first
                hot.owe(record_id, lead.lead_id, owes, now + dt.timedelta(seconds=settings.OWED_REDRIVE_SECONDS))
        if new and kind == "start" and lead is not None:
            followups.schedule_downsells(bot, lead.lead_id, "not_bought", now)  # once per lead
            row = pixel.attach_click(bot, lead.lead_id, click) if click is not None else None
            pixel.view_content(bot, lead.lead_id, update_id, int(update["message"]["from"]["id"]), row)
    counters.inc("grimbots_updates_total", {"kind": kind, "repeated": "false" if new else "true"})
    if new:
        log.info("update routed bot=%s update=%s kind=%s", bot.id, update_id, kind)
    else:
        log.info("update repeated bot=%s update=%s kind=%s", bot.id, update_id, kind)
    return Routed(kind, update_id, lead, repeated=not new)


def owed_by(kind: str, update: dict[str, Any], lead: funnel.Recipient) -> str | None:
    """What an update owes its buyer, as recorded for the clock: a /start its welcome, a press on
    an offer's button its PIX code. Nothing for a lead who blocked the bot."""
    if kind == "start" and lead.reachable:
        return owed.WELCOME
    if kind == "callback":
        action, target = parse_callback_data(update["callback_query"].get("data"))
        if action in BUYING:
            return owed.checkout(target)
        if action == "followup":
            return owed.followup(target)
    return None


def follow_up(
    bot: BotConfig,
    routed: Routed,
    update: dict[str, Any],
    telegram: TelegramGateway,
    throttle: Throttle,
    cache: redis.Redis,
) -> None:
    """Run the next stage right here: a second queue hop would add a fetch, an ack and a poll
    interval to every welcome. When the stage cannot finish now (a flood wait, Telegram down), it
    is handed to its own actor, which retries it on its own schedule."""
    lead = routed.lead
    if routed.kind in ("join_request", "chat_member"):
        members(bot, routed, update, telegram, throttle)
        return
    if routed.kind == "start" and lead is not None:
        try:
            funnel.send_welcome(bot, lead, routed.update_id, telegram, throttle, cache)
        except NOT_NOW as exc:
            reason = type(exc).__name__
            log.info("welcome handed to funnel.welcome bot=%s lead=%s reason=%s", bot.id, lead.lead_id, reason)
            hand_off(funnel.welcome, (bot.id, lead.lead_id, routed.update_id), exc)
    elif routed.kind == "callback" and lead is not None:
        query = update["callback_query"]
        chat_id, callback_id = _callback_chat(query), str(query["id"])
        action, target = parse_callback_data(query.get("data"))
        if action == "check":  # answered by the check itself, with where the payment stands
            payments.check.send(bot.id, lead.lead_id, target, chat_id, callback_id)
            return
        try:
            funnel.answer_callback(bot, chat_id, callback_id, telegram, throttle)
        except NOT_NOW as exc:  # after the flood wait, if that is what it was
            hand_off(funnel.callback, (bot.id, chat_id, callback_id), exc)
        # Gateways are slow and sometimes down: buying runs on the payments queue, never holding a
        # thread that welcomes need.
        if action in BUYING:
            payments.checkout_actor.send(bot.id, lead.lead_id, chat_id, target, routed.update_id)
        elif action == "followup":
            payments.checkout_actor.send(bot.id, lead.lead_id, chat_id, 0, routed.update_id, target)


CALLBACKS = {"buy": "buy", "chk": "check", "fu": "followup", "bmp:y": "bump_yes", "bmp:n": "bump_no"}
BUYING = ("buy", "bump_yes", "bump_no")  # presses that end in a charge for the offer they name


def members(bot: BotConfig, routed: Routed, update: dict[str, Any], telegram: TelegramGateway,
            throttle: Throttle) -> None:  # fmt: skip
    """Who joins a subscription's chat: a join request approved or declined (or, for a payer whose
    payment is being settled, decided when it settles); a member who came through a link issued
    to someone else removed."""
    try:
        if routed.kind == "join_request":
            request = update["chat_join_request"]
            if subscriptions.decide_join(bot, request, routed.update_id, telegram, throttle) == "wait":
                subscriptions.join_actor.send_with_options(args=(bot.id, routed.update_id, request),
                                                           delay=subscriptions.JOIN_RECHECK_MS)  # fmt: skip
        else:
            subscriptions.check_member(bot, update["chat_member"], routed.update_id, telegram, throttle)
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("member update refused: malformed bot=%s update=%s error=%s", bot.id, routed.update_id,
                    type(exc).__name__)  # fmt: skip


def parse_callback_data(data: Any) -> tuple[str | None, int]:
    """(action, id) of our buttons: ("buy", offer) an offer's button, ("check", charge) "check
    payment", ("followup", followup id) an upsell's or downsell's, ("bump_yes" | "bump_no", offer)
    the answer to an offer's order bump (`bmp:{offer}:y|n`); else (None, 0)."""
    if isinstance(data, str):
        prefix, _, rest = data.partition(":")
        if prefix == "bmp":
            rest, _, answer = rest.partition(":")
            prefix = f"bmp:{answer}"
        if rest.isdigit() and len(rest) <= 18 and prefix in CALLBACKS:
            return CALLBACKS[prefix], int(rest)
    return None, 0


@dramatiq.actor(
    actor_name="updates.route",
    queue_name=UPDATES,
    max_retries=10,
    min_backoff=500,
    max_backoff=120_000,
    retry_when=retry_when(10),
    time_limit=60_000,
    max_age=24 * 3600 * 1000,  # Telegram itself gives up on an update after 24 h
)
def route(bot_id: str, update: dict[str, Any]) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        log.warning("update dropped: unknown bot bot=%s", bot_id)
        return
    update = repaired(update)
    try:
        routed = route_update(bot, update, runtime.cache())
    except MalformedUpdate as exc:
        refuse(bot, update, exc)
        return
    follow_up(bot, routed, update, runtime.telegram(), runtime.throttle(), runtime.cache())


def refuse(bot: BotConfig, update: dict[str, Any], exc: MalformedUpdate) -> None:
    """A permanent failure: counted, logged by id and reason only, recorded under its update_id
    when it has a usable one (so a redelivery is a repeat), and never retried."""
    update_id = update.get("update_id")
    usable = isinstance(update_id, int) and not isinstance(update_id, bool) and 0 < update_id < INT64
    if isinstance(update_id, int) and usable:
        with unit_of_work():
            hot.record_update(bot.id, update_id, "malformed", utcnow())
    counters.inc("grimbots_updates_total", {"kind": "malformed", "repeated": "false"})
    log.warning("update refused: malformed bot=%s update=%s reason=%s", bot.id, update_id if usable else "?", exc)
