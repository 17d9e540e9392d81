"""Housekeeping the clock schedules: pruning records whose job is done."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import dramatiq
from peewee import Model

import settings
from actors.broker import MAINTENANCE, retry_when
from db.database import utcnow
from db.models import Click, Followup, OutboundMessage, PaymentNotification, PixelEvent, ProcessedUpdate

log = logging.getLogger(__name__)

OUTBOUND_RETENTION_DAYS = 30
PIXEL_EVENT_RETENTION_DAYS = 30  # Meta takes nothing older than 7 days; a month keeps `ops pixel-events` useful
CLICK_RETENTION_DAYS = 8  # a day past the token's 7
NOTIFICATION_RETENTION_DAYS = 90
BATCH = 5_000


def prune_rows(model: type[Model], where: Any) -> int:
    """Delete the rows matching `where`, in batches (no long lock on a big table)."""
    total = 0
    while True:
        ids = [row.id for row in model.select(model.id).where(where).limit(BATCH)]  # type: ignore[attr-defined]
        if not ids:
            return total
        total += model.delete().where(model.id.in_(ids)).execute()  # type: ignore[attr-defined]


def prune_processed_updates(older_than: dt.datetime) -> int:
    """Telegram stops repeating an update after 24 h: past that its record has done its job."""
    return prune_rows(ProcessedUpdate, ProcessedUpdate.received_at < older_than)


def prune_outbound(older_than: dt.datetime) -> int:
    return prune_rows(OutboundMessage, (OutboundMessage.created_at < older_than) & (OutboundMessage.state != "sending"))


def prune_pixel_events(older_than: dt.datetime) -> int:
    """Events whose fate is settled (sent, failed, expired); pending ones are the sweep's."""
    done = PixelEvent.state.in_(["sent", "failed", "expired"])
    return prune_rows(PixelEvent, (PixelEvent.created_at < older_than) & done)


def prune_unattached_clicks(older_than: dt.datetime) -> int:
    """Clicks whose token expired (7 days) without a /start: they can never become a lead. Clicks
    that did are kept: they are leads' first and last touch."""
    return prune_rows(Click, (Click.clicked_at < older_than) & Click.lead_id.is_null())


def prune_followups(older_than: dt.datetime) -> int:
    """Follow-ups whose fate is settled; scheduled ones are the clock's."""
    return prune_rows(Followup, (Followup.created_at < older_than) & (Followup.state != "scheduled"))


def prune_notifications(older_than: dt.datetime) -> int:
    """Payment notifications: the charge keeps what they changed; the log of them is for a while."""
    return prune_rows(PaymentNotification, PaymentNotification.received_at < older_than)


@dramatiq.actor(
    actor_name="maintenance.prune",
    queue_name=MAINTENANCE,
    max_retries=3,
    min_backoff=60_000,
    retry_when=retry_when(3),
    time_limit=600_000,
    max_age=3600 * 1000,  # the next run will do it
)
def prune() -> None:
    now = utcnow()
    updates = prune_processed_updates(now - dt.timedelta(hours=settings.PROCESSED_UPDATE_RETENTION_HOURS))
    outbound = prune_outbound(now - dt.timedelta(days=OUTBOUND_RETENTION_DAYS))
    events = prune_pixel_events(now - dt.timedelta(days=PIXEL_EVENT_RETENTION_DAYS))
    clicks = prune_unattached_clicks(now - dt.timedelta(days=CLICK_RETENTION_DAYS))
    notifications = prune_notifications(now - dt.timedelta(days=NOTIFICATION_RETENTION_DAYS))
    followups = prune_followups(now - dt.timedelta(days=NOTIFICATION_RETENTION_DAYS))
    log.info("pruned processed_updates=%d outbound_messages=%d pixel_events=%d clicks=%d notifications=%d "
             "followups=%d", updates, outbound, events, clicks, notifications, followups)  # fmt: skip
