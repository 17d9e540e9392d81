"""Update routing: every event the edge accepted (a Telegram update, a WhatsApp message, read by the
bot's channel into `Inbound` events) is recorded once under (bot, update_id) and routed: the
funnel's entry (/start, a WhatsApp number's first message) to the welcome, picks (buttons, numbered
answers) to their handler, blocks and unblocks to the lead's reachability."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from typing import Any

import dramatiq
import redis

import clicks
import settings
from actors import delivery, followups, funnel, payments, pixel, pools, redrive, runtime, statuses, subscriptions
from actors.broker import UPDATES, counters, retry_when
from actors.channels import Channels, patience_ms
from actors.enqueue import unit_of_work
from actors.outbox import NOT_NOW, hand_off
from actors.throttle import Throttle
from catalog.schema import BotConfig
from db import sql
from db.database import utcnow
from db.models import BumpAnswer, Lead
from gateways.channel import Inbound, JoinRequest, Malformed, MemberJoined, Person, usable_event_id

log = logging.getLogger(__name__)


MalformedUpdate = Malformed  # an update that can never be processed: recorded once, never retried


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


@dataclass(frozen=True)
class Routed:
    kind: str  # start | message | callback | block | unblock | join_request | chat_member | connection | other
    update_id: int
    lead: funnel.Recipient | None = None
    repeated: bool = False  # seen before: nothing was written this time
    event: Inbound | None = None
    data: str | None = None  # the choice picked (a button, or a number answering a numbered list)
    hint: bool = False  # a message that picks nothing from a lead shown choices: tell them how to pick
    rewelcome: bool = False  # a message that picks nothing from a lead whose menu is gone or stale: the offers again

    @property
    def lead_id(self) -> int | None:
        return self.lead.lead_id if self.lead is not None else None


def upsert_lead(bot_id: str, person: Person, chat_id: int, *, payload: str | None = None,
                reachable: bool | None = True) -> funnel.Recipient:  # fmt: skip
    """Insert or refresh the lead; first_seen_at stays, the rest follows the latest update."""
    names = (person.first_name, person.last_name, person.username, person.language_code)
    lead_id, chat, is_reachable = sql.upsert_lead(bot_id, person.id, chat_id, names, payload, utcnow(), reachable)
    return funnel.Recipient(lead_id, chat, is_reachable)


def _record(bot: BotConfig, event: Inbound, data: str | None) -> funnel.Recipient | None:
    """The event's database writes; returns the lead it concerns."""
    if event.person is None or event.chat_id is None or event.kind not in LEAD_KINDS:
        return None
    kind = event.kind
    if kind == "start":
        lead = upsert_lead(bot.id, event.person, event.chat_id, payload=event.payload, reachable=True)
    elif kind == "message":
        lead = upsert_lead(bot.id, event.person, event.chat_id, reachable=True)
    elif kind == "callback":
        lead = upsert_lead(bot.id, event.person, event.chat_id, reachable=None)
    else:
        return upsert_lead(bot.id, event.person, event.chat_id, reachable=kind == "unblock")
    if event.ctwa_clid:  # a Click-to-WhatsApp ad brought them: its events carry the click id
        Lead.update(ctwa_clid=event.ctwa_clid).where(Lead.id == lead.lead_id).execute()
    action, target = parse_callback_data(data)
    if action in ("bump_yes", "bump_no"):
        record_bump_answer(bot, lead.lead_id, target, action == "bump_yes")
    return lead


LEAD_KINDS = ("start", "message", "callback", "block", "unblock")


def record_bump_answer(bot: BotConfig, lead_id: int, offer_id: int, accepted: bool) -> None:
    """The lead's answer to the offer's order bump: the first one stands (a late or repeated press
    of either button changes nothing)."""
    offer = bot.offer(offer_id)
    bump = bot.bump_for(offer) if offer is not None else None
    if bump is None:
        return
    values = {"lead_id": lead_id, "offer_id": offer_id, "bump_offer_id": bump.id, "accepted": accepted,
              "answered_at": utcnow()}  # fmt: skip
    if sql.insert(BumpAnswer, values, ignore_conflicts=True) is not None:
        counters.inc("grimbots_bumps_total", {"outcome": "accepted" if accepted else "declined"})


def _lead_row(bot: BotConfig, event: Inbound) -> Lead | None:
    if event.person is None:
        return None
    return Lead.get_or_none((Lead.bot == bot.id) & (Lead.person_id == event.person.id))


def _known_lead(bot: BotConfig, event: Inbound) -> tuple[funnel.Recipient | None, Lead | None]:
    lead = _lead_row(bot, event) if event.kind in LEAD_KINDS else None
    return (funnel.Recipient.of(lead) if lead is not None else None), lead


def ad_click(bot: BotConfig, event: Inbound, cache: redis.Redis) -> clicks.Click | None:
    """The ad click the funnel's entry came from (`/start {token}`, or a token in a WhatsApp
    message), while its token is valid (7 days); else None."""
    if event.kind not in ("start", "message") or not event.payload:
        return None
    return clicks.load(cache, bot.id, event.payload)


def picked(event: Inbound, menu: Any) -> str | None:
    """The choice a message picks: a button's data, or a number answering the numbered list the
    lead was shown last (WhatsApp)."""
    if event.kind == "callback":
        return event.data
    text = (event.text or "").strip().rstrip(".)")
    if event.kind == "message" and isinstance(menu, list) and text.isdigit() and 0 < int(text) <= len(menu):
        return str(menu[int(text) - 1])
    return None


def route_event(bot: BotConfig, event: Inbound, cache: redis.Redis | None = None, *,
                first_message_starts: bool = False) -> Routed:  # fmt: skip
    """Take one event in: its database writes happen the first time only, in the same transaction
    as its (bot, update_id) record. A repeat (the provider's, or our own redelivery after a worker
    died) writes nothing and is routed again: the stages it reaches are idempotent per update.
    The funnel's entry attaches the ad click it came with to the lead and records its ViewContent.

    `first_message_starts` (WhatsApp): a number's first message, or one carrying a click token, is
    the funnel's entry (kind `start`, kept with the record so a repeat routes the same way)."""
    kind = event.kind
    click = ad_click(bot, event, cache or runtime.cache())
    now = utcnow()
    with unit_of_work():
        record_id = sql.record_update(bot.id, event.update_id, kind, now)
        new = record_id is not None
        if new:
            entry = first_message_starts and kind == "message" and event.person is not None
            known = _lead_row(bot, event) if entry else None
            if entry and (click is not None or known is None):
                kind = "start"
                event = replace(event, kind="start")
            menu = current_menu(known, now)
            data = picked(event, menu)
            lead = _record(bot, event, data)
        else:
            if first_message_starts and kind == "message" and sql.update_kind(bot.id, event.update_id) == "start":
                kind = "start"
                event = replace(event, kind="start")
            lead, row = _known_lead(bot, event)
            menu = current_menu(row, now)
            data = picked(event, menu)
        if kind == "message" and data is not None:
            kind = "callback"
        owes = owed_by(kind, data, lead) if lead is not None else join_owed(kind, event)
        if record_id is not None and owes is not None:  # the clock re-drives it unless its stage says done first
            due = now + dt.timedelta(seconds=settings.OWED_REDRIVE_SECONDS)
            sql.owe(record_id, lead.lead_id if lead is not None else None, owes, due, kind)
        if new and kind == "start" and lead is not None and event.person is not None:
            followups.schedule_downsells(bot, lead.lead_id, "not_bought", now)  # once per lead
            attached = pixel.attach_click(bot, lead.lead_id, click) if click is not None else None
            pixel.view_content(bot, lead.lead_id, event.update_id, event.person.id, attached)
    counters.inc("grimbots_updates_total", {"kind": kind, "repeated": "false" if new else "true"})
    if new:
        log.info("update routed bot=%s update=%s kind=%s", bot.id, event.update_id, kind)
    else:
        log.info("update repeated bot=%s update=%s kind=%s", bot.id, event.update_id, kind)
    unpicked = kind == "message" and first_message_starts and data is None
    return Routed(kind, event.update_id, lead, repeated=not new, event=event, data=data,
                  hint=unpicked and menu is not None, rewelcome=unpicked and menu is None)  # fmt: skip


def current_menu(lead: Lead | None, now: dt.datetime) -> Any:
    """The numbered menu a WhatsApp lead can still answer: the last one sent, unless older than
    WHATSAPP_MENU_TTL (a returning buyer's "1" does not pick from what they saw days ago)."""
    if lead is None or not isinstance(lead.menu, list):
        return None
    if lead.menu_at is None or now - lead.menu_at > dt.timedelta(seconds=settings.WHATSAPP_MENU_TTL):
        return None
    return lead.menu


def owed_by(kind: str, data: str | None, lead: funnel.Recipient) -> str | None:
    """What an event owes its buyer, as recorded for the clock: the funnel's entry its welcome, a
    pick of an offer its PIX code. Nothing for a lead who blocked the bot."""
    if kind == "start" and lead.reachable:
        return redrive.WELCOME
    if kind == "callback":
        action, target = parse_callback_data(data)
        if action in BUYING:
            return redrive.checkout(target)
        if action == "followup":
            return redrive.followup(target)
    return None


def join_owed(kind: str, event: Inbound) -> str | None:
    """A join request owes the requester a decision (a malformed one owes nothing: refused later)."""
    if kind != "join_request":
        return None
    return subscriptions.join_key(event.member) if isinstance(event.member, JoinRequest) else None


def follow_up(bot: BotConfig, routed: Routed, channels: Channels, throttle: Throttle) -> None:
    """Run the next stage right here: a second queue hop would add a fetch, an ack and a poll
    interval to every welcome. When the stage cannot finish now (a flood wait, the provider down),
    it is handed to its own actor, which retries it on its own schedule."""
    lead, event = routed.lead, routed.event
    assert event is not None
    if routed.kind in ("join_request", "chat_member"):
        members(bot, routed, event, channels, throttle)
        return
    if routed.kind == "start" and lead is not None:
        try:
            funnel.send_welcome(bot, lead, routed.update_id, channels, throttle)
        except NOT_NOW as exc:
            reason = type(exc).__name__
            log.info("welcome handed to funnel.welcome bot=%s lead=%s reason=%s", bot.id, lead.lead_id, reason)
            hand_off(funnel.welcome, (bot.id, lead.lead_id, routed.update_id), exc,
                     patience_ms(bot, funnel.WELCOME_MAX_AGE_MS))  # fmt: skip
    elif routed.kind == "callback" and lead is not None:
        chat_id, callback_id = lead.chat_id, event.callback_id or f"wa{routed.update_id}"
        action, target = parse_callback_data(routed.data)
        if action == "check":  # answered by the check itself, with where the payment stands
            payments.check.send(bot.id, lead.lead_id, target, chat_id, callback_id)
            return
        if event.callback_id is not None:
            try:
                funnel.answer_callback(bot, chat_id, callback_id, channels, throttle)
            except NOT_NOW as exc:  # after the flood wait, if that is what it was
                hand_off(funnel.callback, (bot.id, chat_id, callback_id), exc)
        # Gateways are slow and sometimes down: buying runs on the payments queue, never holding a
        # thread that welcomes need.
        max_age = patience_ms(bot, payments.CHECKOUT_MAX_AGE_MS)  # a long line on a slow number
        if action in BUYING:
            args: tuple[Any, ...] = (bot.id, lead.lead_id, chat_id, target, routed.update_id)
            payments.checkout_actor.send_with_options(args=args, max_age=max_age)
        elif action == "followup":
            args = (bot.id, lead.lead_id, chat_id, 0, routed.update_id, target)
            payments.checkout_actor.send_with_options(args=args, max_age=max_age)
    elif (routed.hint or routed.rewelcome) and lead is not None and lead.reachable and not routed.repeated:
        hint(bot, lead, routed.update_id, channels, throttle, offers_again=routed.rewelcome)


HINT_QUIET = 3600  # seconds: the "pick a number" hint at most once per lead in this long


def hint(bot: BotConfig, lead: funnel.Recipient, update_id: int, channels: Channels, throttle: Throttle, *,
         offers_again: bool = False) -> None:  # fmt: skip
    """A message that picks nothing gets an answer, not silence: the welcome again when the lead has
    no menu it can still answer (a returning buyer sees the offers), else a short hint how to pick,
    at most once an hour. Sent by funnel.send_reply (marketing: never resent after a crash, at
    marketing priority); when it cannot go now, funnel.reply sends it later."""
    if not offers_again and not runtime.cache().set(f"grimbots:hint:{bot.id}:{lead.lead_id}", update_id, nx=True,
                                                    ex=HINT_QUIET):  # fmt: skip
        return
    try:
        funnel.send_reply(bot, lead, update_id, offers_again, channels, throttle)
    except NOT_NOW as exc:
        log.info("reply handed to funnel.reply bot=%s lead=%s reason=%s", bot.id, lead.lead_id, type(exc).__name__)
        hand_off(funnel.reply, (bot.id, lead.lead_id, update_id, offers_again), exc)


CALLBACKS = {"buy": "buy", "chk": "check", "fu": "followup", "bmp:y": "bump_yes", "bmp:n": "bump_no"}
BUYING = ("buy", "bump_yes", "bump_no")  # presses that end in a charge for the offer they name


def members(bot: BotConfig, routed: Routed, event: Inbound, channels: Channels, throttle: Throttle) -> None:
    """Who joins a subscription's chat: a join request approved or declined (or, for a payer whose
    payment is being settled, decided when it settles); a member who came through a link issued
    to someone else removed."""
    if isinstance(event.member, JoinRequest):
        if subscriptions.decide_join(bot, event.member, routed.update_id, channels, throttle) == "wait":
            subscriptions.join_actor.send_with_options(args=(bot.id, routed.update_id,
                                                             subscriptions.join_args(event.member)),
                                                       delay=subscriptions.JOIN_RECHECK_MS)  # fmt: skip
    elif isinstance(event.member, MemberJoined):
        subscriptions.check_member(bot, event.member, routed.update_id, channels, throttle)


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
    """One payload the edge accepted for the bot: a Telegram update, or a WhatsApp webhook body
    (which may hold several messages), read by the bot's channel into events, each routed."""
    bot = runtime.bot_config(bot_id)
    if bot is None:
        log.warning("update dropped: unknown bot bot=%s", bot_id)
        return
    update = repaired(update)
    channels = runtime.channels()
    channel = channels.of(bot)
    try:
        events = channel.inbound(update)
    except Malformed as exc:
        refuse(bot, update, exc)
        return
    for event in events:
        if event.kind == "connection":  # Evolution's connection.update: the number's health, nothing to record
            pools.connection(bot.id, event.data or "")
            continue
        if event.kind == "status":  # the Cloud API could not deliver a message it had taken
            statuses.failed(bot.id, event.data or "", event.raw)
            continue
        try:
            routed = route_event(bot, event, runtime.cache(), first_message_starts=channel.first_message_starts)
        except Malformed as exc:
            refuse(bot, update, exc)
            continue
        follow_up(bot, routed, channels, runtime.throttle())
        if channel.service_window and routed.lead is not None and not routed.repeated:
            delivery.reopen_outside_window(bot.id, routed.lead.lead_id)  # the buyer's window is open again


def refuse(bot: BotConfig, update: dict[str, Any], exc: Malformed) -> None:
    """A permanent failure: counted, logged by id and reason only, recorded under its update_id
    when it has a usable one (so a redelivery is a repeat), and never retried."""
    update_id = update.get("update_id")
    if usable_event_id(update_id):
        with unit_of_work():
            sql.record_update(bot.id, update_id, "malformed", utcnow())
    shown = update_id if usable_event_id(update_id) else "?"
    counters.inc("grimbots_updates_total", {"kind": "malformed", "repeated": "false"})
    log.warning("update refused: malformed bot=%s update=%s reason=%s", bot.id, shown, exc)
