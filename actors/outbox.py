"""Telegram sends made at most once each, under keys of our choosing, with durable progress.

Every send is a row in outbound_message. A worker claims it (pending → sending, a conditional
update only one worker can win, committed before the request leaves), calls Telegram and records
the outcome. A redelivered message finds the row done and moves on, so repeating the work that
led to a send never repeats the send.

One window cannot be closed from our side: the request reached Telegram but the worker died (or
the answer was lost) before the outcome was recorded. Telegram has no idempotency key, so each
send says what to do then (CONTRACT §5.5): `if_unknown="resend"` for what the buyer is owed (a
welcome, a code, a delivery: a gap is worse than a rare duplicate), `"skip"` for marketing.

A redelivered send whose row a live (or dead) worker still holds in `sending` is not skipped: it
comes back (dramatiq.Retry) once the claim is stale, and is then resent or given up as above."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import dramatiq

import settings
from actors.broker import counters
from actors.throttle import Throttle, Ticket
from db import hot
from db.database import utcnow
from db.models import OutboundMessage
from gateways.telegram import (
    TelegramBlocked,
    TelegramGateway,
    TelegramMaybeSent,
    TelegramPermanent,
    TelegramRetryAfter,
    TelegramTransient,
)

log = logging.getLogger(__name__)

# A send left in `sending` longer than this by a worker that is gone counts as unknown.
STALE_CLAIM_SECONDS = settings.OUTBOX_STALE_CLAIM_SECONDS
# Flood waits up to this long are slept through; longer ones go back to the queue with a delay.
MAX_INLINE_FLOOD_WAIT = 3.0
_UNKNOWN = object()
# The two policies for a send whose fate a crash left unknown (CONTRACT §5.5).
OWED: Literal["resend"] = "resend"  # what the buyer is owed: a welcome, a code, a delivery
MARKETING: Literal["skip"] = "skip"  # follow-ups, reminders, broadcasts


# What a stage run inline raises when it cannot finish now: its own actor takes it over (hand_off).
NOT_NOW = (dramatiq.Retry, TelegramTransient)


def hand_off(actor: dramatiq.Actor[Any, Any], args: tuple[Any, ...], exc: BaseException) -> None:
    """Give a stage that could not finish inline to its own actor, after the delay a
    dramatiq.Retry (a flood wait) asked for."""
    delay = exc.delay if isinstance(exc, dramatiq.Retry) else None
    actor.send_with_options(args=args, delay=delay)


@dataclass(frozen=True)
class Send:
    key: str
    method: str
    params: dict[str, Any]
    if_unknown: Literal["skip", "resend"] = "skip"
    # A second form to try once when Telegram rejects the first with 400 (a stale file_id, say).
    fallback: dict[str, Any] | None = None
    # Answers (answerCallbackQuery) are not messages: they take no slot of the bot's window.
    throttled: bool = True
    # A short flood wait (429) is slept through and the send made again; False: the send goes back
    # to its caller (dramatiq.Retry) at once: a broadcast must be stoppable while it waits.
    wait_inline: bool = True
    # Uploads: field → (file name, bytes, content type); the call goes out as multipart.
    files: dict[str, tuple[str, bytes, str]] | None = field(default=None, repr=False)
    on_sent: Callable[[Any], None] | None = field(default=None, compare=False)


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)  # keys sent by this call
    skipped: list[str] = field(default_factory=list)  # keys already done (or unknown) before
    blocked: bool = False  # the chat refused the bot (403)
    failed: str | None = None  # a permanent error's description


def _existing(key: str) -> OutboundMessage | None:
    return OutboundMessage.get_or_none(OutboundMessage.key == key)


def _insert_claimed(bot_id: str, chat_id: int, send: Send) -> bool:
    """The first attempt creates the row already claimed: one commit instead of two."""
    return hot.claim_new_send(send.key, bot_id, chat_id, send.method, utcnow())


def _claim(key: str, states: Sequence[str]) -> bool:
    won = (
        OutboundMessage.update(state="sending", attempts=OutboundMessage.attempts + 1, claimed_at=utcnow())
        .where((OutboundMessage.key == key) & OutboundMessage.state.in_(list(states)))
        .execute()
    )
    return bool(won)


def _finish(key: str, state: str, *, message_id: int | None = None, error: str | None = None) -> None:
    hot.finish_send(key, state, message_id, error, utcnow())


def _release(key: str) -> None:
    OutboundMessage.update(state="pending").where(
        (OutboundMessage.key == key) & (OutboundMessage.state == "sending")
    ).execute()


def _resolve_stale(row: OutboundMessage, send: Send) -> bool:
    """A claim left behind by a dead worker: decide per the send's policy. True = send now."""
    age = (utcnow() - row.claimed_at).total_seconds() if row.claimed_at is not None else STALE_CLAIM_SECONDS
    if age < STALE_CLAIM_SECONDS:
        # Another worker may still be on it, or may have died on it: come back when the claim is
        # stale and decide then. Skipping it now would leave it `sending` for ever.
        raise dramatiq.Retry(f"{send.method}: claimed by another worker", delay=int((STALE_CLAIM_SECONDS - age) * 1000)
                             + 1000)  # fmt: skip
    if send.if_unknown == "resend":
        return _claim(send.key, ["sending"])
    _finish(send.key, "unknown", error="worker stopped while the request was in flight")
    return False


def _take(bot_id: str, chat_id: int, send: Send, outcome: Outcome) -> bool | None:
    """Claim the send for this worker: True = send it now, False = skip it, None = stop here.
    The common case, a first attempt, costs one statement: the insert that claims it."""
    if _insert_claimed(bot_id, chat_id, send):
        return True
    row = _existing(send.key)
    assert row is not None
    if row.state == "pending":
        return _claim(send.key, ["pending"])
    if row.state == "sending":
        return _resolve_stale(row, send)
    if row.state == "failed":
        outcome.failed = row.error
        return None
    return False  # sent, or unknown


def deliver(
    telegram: TelegramGateway,
    throttle: Throttle,
    token: str,
    bot_id: str,
    chat_id: int,
    sends: Sequence[Send],
    slot: Callable[[], Ticket] | None = None,
) -> Outcome:
    """Make each send at most once, in order. Raises dramatiq.Retry / TelegramTransient for the
    caller's retry machinery; permanent failures are recorded and end the sequence.

    A send takes its slot of the bot's window after its claim, right before the request, so the
    window is kept as Telegram sees it (a slot taken before a database write would leave that
    write's delay between slot and request). `slot` takes it instead of the funnel's
    `throttle.acquire` (a broadcast: marketing priority, stoppable); whatever it raises releases
    the claim first."""
    outcome = Outcome()
    for send in sends:
        taken = _take(bot_id, chat_id, send, outcome)
        if taken is None:
            return outcome
        if not taken:
            outcome.skipped.append(send.key)
            continue
        take = (slot or partial(throttle.acquire, bot_id, chat_id)) if send.throttled else None
        result = _call(telegram, throttle, token, bot_id, chat_id, send, take)
        if isinstance(result, Outcome):
            outcome.blocked, outcome.failed = result.blocked, result.failed
            return outcome
        if result is _UNKNOWN:
            outcome.skipped.append(send.key)
            continue
        outcome.sent.append(send.key)
        if send.on_sent is not None:
            send.on_sent(result)
    return outcome


def _slot(send: Send, take: Callable[[], Ticket] | None) -> Ticket | None:
    """A slot for one request of the send (`take` None: it needs none); whatever taking it raises
    releases the claim first."""
    if take is None:
        return None
    try:
        return take()
    except BaseException:
        _release(send.key)
        raise


def _call(telegram: TelegramGateway, throttle: Throttle, token: str, bot_id: str, chat_id: int, send: Send,
          take: Callable[[], Ticket] | None) -> Any:  # fmt: skip
    """Make the call (again after a short flood wait, or in its fallback form): each request takes
    a slot of the bot's window first, stamped with the time its answer came back, whatever it was."""
    params = send.params
    for attempt in range(2):
        ticket = _slot(send, take)
        try:
            try:
                result = telegram.call(token, send.method, params, send.files)
            finally:
                throttle.done(ticket)
        except TelegramRetryAfter as exc:
            counters.inc("grimbots_telegram_flood_waits_total", {"method": send.method})
            throttle.pause_bot(bot_id, exc.retry_after)
            if exc.retry_after <= MAX_INLINE_FLOOD_WAIT and attempt == 0 and send.wait_inline:
                time.sleep(exc.retry_after)
                continue
            _release(send.key)
            raise dramatiq.Retry(
                f"{send.method}: flood wait {exc.retry_after}s", delay=int(exc.retry_after * 1000) + 50
            ) from None
        except TelegramMaybeSent as exc:
            if send.if_unknown == "skip":
                _finish(send.key, "unknown", error=exc.description)
                log.warning("telegram send state unknown key=%s method=%s", send.key, send.method)
                return _UNKNOWN
            _release(send.key)
            raise
        except TelegramTransient:
            _release(send.key)
            raise
        except TelegramBlocked as exc:
            counters.inc("grimbots_telegram_sends_total", {"method": send.method, "outcome": "blocked"})
            _finish(send.key, "failed", error=exc.description)
            return Outcome(blocked=True, failed=exc.description)
        except TelegramPermanent as exc:
            if send.fallback is not None and params is send.params:
                params = send.fallback
                continue
            counters.inc("grimbots_telegram_sends_total", {"method": send.method, "outcome": "rejected"})
            _finish(send.key, "failed", error=exc.description)
            log.warning("telegram send rejected key=%s method=%s error=%s", send.key, send.method, exc.description)
            return Outcome(failed=exc.description)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        _finish(send.key, "sent", message_id=message_id)
        counters.inc("grimbots_telegram_sends_total", {"method": send.method, "outcome": "sent"})
        return result
    _release(send.key)
    raise dramatiq.Retry(f"{send.method}: flood wait", delay=1000)
