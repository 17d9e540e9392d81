"""What the provider says later about a message it accepted: the Cloud API posts a `failed` status
(with the message's wamid and an error) for a message it took with 200 and then could not deliver.

The outbox row that sent it (found by `provider_id`) turns `failed` with Meta's code and title, and
what counted it as sent is corrected: a broadcast's recipient, a follow-up. What the buyer is owed
(a welcome, a code, a delivery) is sent again when the error may pass (Meta's transient codes,
up to MAX_ATTEMPTS sends): its row goes back to `pending` and its debt is re-opened (the update's
row for a welcome or a code, the delivery for a delivery), so the stage that owes it sends it again.
An error that will not pass (131026 undeliverable, 131047 outside the 24-hour window, 131049
withheld by Meta, ...) stays recorded: the delivery is failed with it (`ops payments`), and every
owed failure is counted (`grimbots_whatsapp_failed_total{owed="true"}`: alert
GrimbotsWhatsAppOwedUndelivered) and shown by `ops status`."""

from __future__ import annotations

import logging
from typing import Any

from actors import delivery
from actors.broker import counters
from actors.enqueue import after_commit, unit_of_work
from db.database import utcnow
from db.models import BroadcastRecipient, Delivery, Followup, OutboundMessage, ProcessedUpdate

log = logging.getLogger(__name__)

# Meta's codes for failures that may pass on a later send (rate limits, Meta's own trouble).
TRANSIENT = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056, 133004})
MAX_ATTEMPTS = 4  # sends of one owed message, failed statuses included
OWED_PREFIXES = ("welcome", "pix", "delivery")


def failed(bot_id: str, provider_id: str, raw: dict[str, Any]) -> str | None:
    """A `failed` status for the message the provider knows as `provider_id`: what became of it
    (redriven | recorded | corrected | None when it is not ours or was already handled)."""
    code, title = raw.get("code"), str(raw.get("title") or "failed")
    error = f"whatsapp {code if code is not None else '?'}: {title}"[:500]
    with unit_of_work():
        row = OutboundMessage.get_or_none((OutboundMessage.provider_id == provider_id)
                                          & (OutboundMessage.bot_id == bot_id))  # fmt: skip
        if row is None:
            log.info("failed status for an unknown message bot=%s", bot_id)
            return None
        won = (
            OutboundMessage.update(state="failed", error=error, finished_at=utcnow())
            .where((OutboundMessage.id == row.id) & (OutboundMessage.state == "sent"))
            .execute()
        )
        if not won:  # a repeated status, or already resent
            return None
        kind = row.key.split(":", 1)[0]
        owed = kind in OWED_PREFIXES
        outcome = _owed(row, kind, code, error) if owed else _correct(row, kind, error)
    counters.inc("grimbots_whatsapp_failed_total", {"owed": str(owed).lower(), "code": str(code)})
    log.warning("whatsapp send failed at the provider bot=%s key=%s code=%s outcome=%s", bot_id, row.key, code, outcome)
    return outcome


def _correct(row: OutboundMessage, kind: str, error: str) -> str:
    """Marketing: what counted it as sent counts it failed now (not sent again: marketing policy)."""
    parts = row.key.split(":")
    if kind == "broadcast" and len(parts) >= 3 and parts[1].isdigit() and parts[2].isdigit():
        BroadcastRecipient.update(state="failed", error=error).where(
            (BroadcastRecipient.broadcast_id == int(parts[1])) & (BroadcastRecipient.lead_id == int(parts[2]))
            & (BroadcastRecipient.state == "sent")).execute()  # fmt: skip
    elif kind == "followup" and len(parts) >= 2 and parts[1].isdigit():
        Followup.update(state="failed", error=error).where(
            (Followup.id == int(parts[1])) & (Followup.state == "sent")).execute()  # fmt: skip
    return "corrected"


def _owed(row: OutboundMessage, kind: str, code: Any, error: str) -> str:
    """A welcome, a code or a delivery: sent again when the error may pass, else recorded."""
    parts = row.key.split(":")
    again = code in TRANSIENT and row.attempts < MAX_ATTEMPTS
    if kind == "delivery" and len(parts) >= 2 and parts[1].isdigit():
        charge_id = int(parts[1])
        if not again:
            Delivery.update(state="failed", error=error, updated_at=utcnow()).where(
                Delivery.charge_id == charge_id).execute()  # fmt: skip
            return "recorded"
        OutboundMessage.update(state="pending").where(OutboundMessage.id == row.id).execute()
        Delivery.update(state="pending", updated_at=utcnow()).where(Delivery.charge_id == charge_id).execute()
        after_commit(lambda: delivery.deliver_actor.send(charge_id))
        return "redriven"
    update_id = parts[2] if len(parts) >= 3 else ""
    if not again or not update_id.isdigit():
        return "recorded"
    OutboundMessage.update(state="pending").where(OutboundMessage.id == row.id).execute()
    ProcessedUpdate.update(done_at=None, due_at=utcnow()).where(
        (ProcessedUpdate.bot_id == row.bot_id) & (ProcessedUpdate.update_id == int(update_id))).execute()  # fmt: skip
    return "redriven"  # the clock's owed.redrive runs the stage again: it sends the pending part
