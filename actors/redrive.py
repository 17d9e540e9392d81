"""What recorded updates still owe their buyers, re-driven from the database whatever Redis lost.

A /start owes a welcome, a press on an offer's button owes a PIX code, and a join request to a
chat a bot sells owes a decision. `updates.route` writes
that debt on the update's row (processed_update: `owed`, `due_at`) in the transaction that records
the update; the stage that pays it (funnel.send_welcome, payments.checkout_actor) marks it done
when it has recorded its outcome. The clock's `owed.redrive` claims debts whose `due_at` passed
(a conditional update: one claimer per round) and enqueues their stage again, with backoff, for
as long as the stage itself would still act; then it gives up, counted and logged. Stages are
idempotent per update, so a re-drive of work that was only slow costs a no-op."""

from __future__ import annotations

import datetime as dt
import logging

import dramatiq

import settings
from actors import funnel, payments, runtime, subscriptions
from actors.broker import MAINTENANCE, counters
from actors.channels import patience
from db import sql
from db.database import utcnow
from db.models import Lead, ProcessedUpdate

log = logging.getLogger(__name__)

WELCOME = "welcome"
CHECKOUT = "checkout:"
FOLLOWUP = "followup:"  # a press on an upsell's or downsell's button: a code at its price
JOIN = subscriptions.JOIN_OWED  # a join request owes a decision: "join:{chat}:{user}:{date}"
# How long a debt is worth re-driving: as long as its stage's own max_age (on a slow number, longer:
# channels.patience).
_CODE = dt.timedelta(milliseconds=payments.CHECKOUT_MAX_AGE_MS)
WINDOWS = {WELCOME: dt.timedelta(milliseconds=funnel.WELCOME_MAX_AGE_MS), CHECKOUT: _CODE, FOLLOWUP: _CODE,
           JOIN: subscriptions.JOIN_WAIT}  # fmt: skip
MAX_BACKOFF = dt.timedelta(minutes=30)
BATCH = 500


def checkout(offer_id: int) -> str:
    return f"{CHECKOUT}{offer_id}"


def followup(followup_id: int) -> str:
    return f"{FOLLOWUP}{followup_id}"


def paid(bot_id: str, update_id: int) -> None:
    """The stage an update owed has recorded its outcome (sent, refused, or nothing to do)."""
    sql.settle_owed(bot_id, update_id, utcnow())


def _window(owed: str, bot_id: str) -> dt.timedelta:
    return patience(runtime.bot_config(bot_id), WINDOWS[_prefix(owed)])


def _prefix(owed: str) -> str:
    return next((p for p in (CHECKOUT, FOLLOWUP, JOIN) if owed.startswith(p)), owed)


def _backoff(redrives: int, first: dt.timedelta) -> dt.timedelta:
    return min(first * 2 ** min(redrives, 10), MAX_BACKOFF)


def due(first: dt.timedelta, limit: int = BATCH) -> list[ProcessedUpdate]:
    """Debts whose time has come, each claimed for one re-drive as every durable schedule is
    (db/sql.claim_due: a lease of `first`, counted in `redrives`); then each re-drive's next look
    backs off (`_backoff`), and a debt past its stage's window is abandoned (no due time)."""
    now = utcnow()
    ids = sql.claim_due("processed_update", '"done_at" IS NULL', now, first, counter="redrives", limit=limit)
    claimed = []
    for row in ProcessedUpdate.select().where(ProcessedUpdate.id.in_(ids)).order_by(ProcessedUpdate.due_at):
        expired = now - row.received_at > _window(row.owed or WELCOME, row.bot_id)
        later = _backoff(row.redrives - 1, first)
        if expired or later != first:
            ProcessedUpdate.update(due_at=None if expired else now + later).where(
                ProcessedUpdate.id == row.id).execute()  # fmt: skip
        if expired:
            counters.inc("grimbots_owed_total", {"owed": _kind(row.owed), "outcome": "abandoned"})
            log.warning("owed work abandoned bot=%s update=%s owed=%s redrives=%d", row.bot_id, row.update_id,
                        _kind(row.owed), row.redrives - 1)  # fmt: skip
            continue
        claimed.append(row)
    return claimed


def _kind(owed: str | None) -> str:
    return _prefix(owed or "").rstrip(":")


def _max_age(row: ProcessedUpdate) -> int:
    """The re-driven stage's message lives as long as its debt does (ms)."""
    left = row.received_at + _window(row.owed or WELCOME, row.bot_id) - utcnow()
    return max(int(left.total_seconds() * 1000), 1000)


def redrive_row(row: ProcessedUpdate) -> None:
    """Enqueue the stage the row owes, as routing would have."""
    if row.owed is None:
        return
    if row.owed.startswith(JOIN):
        request = subscriptions.owed_join(row.owed)
        subscriptions.join_actor.send(row.bot_id, row.update_id, subscriptions.join_args(request))
    elif row.lead_id is None:
        return
    elif row.owed == WELCOME:
        funnel.welcome.send_with_options(args=(row.bot_id, row.lead_id, row.update_id), max_age=_max_age(row))
    elif row.owed.startswith((CHECKOUT, FOLLOWUP)):
        lead = Lead.get_or_none(Lead.id == row.lead_id)
        if lead is None:
            return
        target = int(row.owed.split(":", 1)[1])
        offer_id, followup_id = (target, 0) if row.owed.startswith(CHECKOUT) else (0, target)
        payments.checkout_actor.send_with_options(
            args=(row.bot_id, row.lead_id, lead.chat_id, offer_id, row.update_id, followup_id), max_age=_max_age(row)
        )
    counters.inc("grimbots_owed_total", {"owed": _kind(row.owed), "outcome": "redriven"})
    log.info("owed work re-driven bot=%s update=%s owed=%s redrives=%d", row.bot_id, row.update_id,
             _kind(row.owed), row.redrives)  # fmt: skip


@dramatiq.actor(
    actor_name="owed.redrive",
    queue_name=MAINTENANCE,
    max_retries=0,
    time_limit=120_000,
    max_age=60_000,  # the next round does it
)
def redrive() -> None:
    for row in due(dt.timedelta(seconds=settings.OWED_REDRIVE_SECONDS)):
        redrive_row(row)
