"""Housekeeping the clock schedules: pruning records whose job is done."""

from __future__ import annotations

import datetime as dt
import logging

import dramatiq

import settings
from actors.broker import MAINTENANCE, retry_when
from db.database import utcnow
from db.models import OutboundMessage, ProcessedUpdate

log = logging.getLogger(__name__)

OUTBOUND_RETENTION_DAYS = 30
BATCH = 5_000


def prune_processed_updates(older_than: dt.datetime) -> int:
    """Delete update records older than the cutoff, in batches (no long lock on a big table). Telegram
    stops repeating an update after 24 h, so past that its record has done its job."""
    total = 0
    while True:
        ids = [
            row.id
            for row in ProcessedUpdate.select(ProcessedUpdate.id)
            .where(ProcessedUpdate.received_at < older_than)
            .limit(BATCH)
        ]
        if not ids:
            return total
        total += ProcessedUpdate.delete().where(ProcessedUpdate.id.in_(ids)).execute()


def prune_outbound(older_than: dt.datetime) -> int:
    total = 0
    while True:
        ids = [
            row.id
            for row in OutboundMessage.select(OutboundMessage.id)
            .where((OutboundMessage.created_at < older_than) & (OutboundMessage.state != "sending"))
            .limit(BATCH)
        ]
        if not ids:
            return total
        total += OutboundMessage.delete().where(OutboundMessage.id.in_(ids)).execute()


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
    log.info("pruned processed_updates=%d outbound_messages=%d", updates, outbound)
