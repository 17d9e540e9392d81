"""Telegram sends made at most once each, under keys of our choosing, with durable progress.

Every send is a row in outbound_message. A worker claims it (pending → sending, a conditional
update only one worker can win, committed before the request leaves), calls Telegram and records
the outcome. A redelivered message finds the row done and moves on, so repeating the work that
led to a send never repeats the send.

One window cannot be closed from our side: the request reached Telegram but the worker died (or
the answer was lost) before the outcome was recorded. Telegram has no idempotency key, so each
send says what to do then: `if_unknown="skip"` (a welcome: a duplicate is worse than a gap) or
`"resend"` (a paid delivery: a gap is worse than a duplicate)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dramatiq

from actors.throttle import Throttle
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
STALE_CLAIM_SECONDS = 120
# Flood waits up to this long are slept through; longer ones go back to the queue with a delay.
MAX_INLINE_FLOOD_WAIT = 3.0
_UNKNOWN = object()


@dataclass(frozen=True)
class Send:
    key: str
    method: str
    params: dict[str, Any]
    if_unknown: Literal["skip", "resend"] = "skip"
    # A second form to try once when Telegram rejects the first with 400 (a stale file_id, say).
    fallback: dict[str, Any] | None = None
    # Answers (answerCallbackQuery) are not messages: they do not count against the chat's rate.
    throttled: bool = True
    on_sent: Callable[[Any], None] | None = field(default=None, compare=False)


@dataclass
class Outcome:
    sent: list[str] = field(default_factory=list)  # keys sent by this call
    skipped: list[str] = field(default_factory=list)  # keys already done (or unknown) before
    blocked: bool = False  # the chat refused the bot (403)
    failed: str | None = None  # a permanent error's description


def _row(bot_id: str, chat_id: int, send: Send) -> OutboundMessage:
    OutboundMessage.insert(key=send.key, bot_id=bot_id, chat_id=chat_id, method=send.method).on_conflict_ignore().execute()
    return OutboundMessage.get(OutboundMessage.key == send.key)


def _claim(row: OutboundMessage, states: Sequence[str]) -> bool:
    now = utcnow()
    won = (
        OutboundMessage.update(state="sending", attempts=OutboundMessage.attempts + 1, claimed_at=now)
        .where((OutboundMessage.id == row.id) & OutboundMessage.state.in_(list(states)))
        .execute()
    )
    return bool(won)


def _finish(row: OutboundMessage, state: str, *, message_id: int | None = None, error: str | None = None) -> None:
    OutboundMessage.update(state=state, telegram_message_id=message_id, error=error, finished_at=utcnow()).where(
        OutboundMessage.id == row.id
    ).execute()


def _release(row: OutboundMessage) -> None:
    OutboundMessage.update(state="pending").where((OutboundMessage.id == row.id) & (OutboundMessage.state == "sending")).execute()


def _resolve_stale(row: OutboundMessage, send: Send) -> bool:
    """A claim left behind by a dead worker: decide per the send's policy. True = send now."""
    if row.claimed_at is None or (utcnow() - row.claimed_at).total_seconds() < STALE_CLAIM_SECONDS:
        return False  # another worker may still be on it
    if send.if_unknown == "resend":
        return _claim(row, ["sending"])
    _finish(row, "unknown", error="worker stopped while the request was in flight")
    return False


def deliver(telegram: TelegramGateway, throttle: Throttle, token: str, bot_id: str, chat_id: int,
            sends: Sequence[Send]) -> Outcome:  # fmt: skip
    """Make each send at most once, in order. Raises dramatiq.Retry / TelegramTransient for the
    caller's retry machinery; permanent failures are recorded and end the sequence."""
    outcome = Outcome()
    for send in sends:
        row = _row(bot_id, chat_id, send)
        if row.state in ("sent", "unknown"):
            outcome.skipped.append(send.key)
            continue
        if row.state == "failed":
            outcome.failed = row.error
            return outcome
        if send.throttled:
            throttle.acquire(bot_id, chat_id)
        if row.state == "sending":
            if not _resolve_stale(row, send):
                outcome.skipped.append(send.key)
                continue
        elif not _claim(row, ["pending"]):
            outcome.skipped.append(send.key)
            continue
        result = _call(telegram, throttle, token, bot_id, row, send)
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


def _call(telegram: TelegramGateway, throttle: Throttle, token: str, bot_id: str, row: OutboundMessage,
          send: Send) -> Any:  # fmt: skip
    params = send.params
    for attempt in range(2):
        try:
            result = telegram.call(token, send.method, params)
        except TelegramRetryAfter as exc:
            throttle.pause_bot(bot_id, exc.retry_after)
            if exc.retry_after <= MAX_INLINE_FLOOD_WAIT and attempt == 0:
                time.sleep(exc.retry_after)
                if send.throttled:
                    throttle.acquire(bot_id, row.chat_id)
                continue
            _release(row)
            raise dramatiq.Retry(f"{send.method}: flood wait {exc.retry_after}s", delay=int(exc.retry_after * 1000) + 50) from None
        except TelegramMaybeSent as exc:
            if send.if_unknown == "skip":
                _finish(row, "unknown", error=exc.description)
                log.warning("telegram send state unknown key=%s method=%s", send.key, send.method)
                return _UNKNOWN
            _release(row)
            raise
        except TelegramTransient:
            _release(row)
            raise
        except TelegramBlocked as exc:
            _finish(row, "failed", error=exc.description)
            return Outcome(blocked=True, failed=exc.description)
        except TelegramPermanent as exc:
            if send.fallback is not None and params is send.params:
                params = send.fallback
                continue
            _finish(row, "failed", error=exc.description)
            log.warning("telegram send rejected key=%s method=%s error=%s", send.key, send.method, exc.description)
            return Outcome(failed=exc.description)
        message_id = result.get("message_id") if isinstance(result, dict) else None
        _finish(row, "sent", message_id=message_id)
        return result
    _release(row)
    raise dramatiq.Retry(f"{send.method}: flood wait", delay=1000)
