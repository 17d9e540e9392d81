"""The end of a scheduled row's life (a `followup`: upsell, downsell, reminder, expiry), shared by
the stages that send them: each is closed once, by a conditional update from `scheduled`, and
counted by kind and outcome."""

from __future__ import annotations

from typing import Any

from actors.broker import counters
from actors.outbox import Outcome
from db.database import utcnow
from db.models import Followup


def close(row: Followup, state: str, error: str | None = None) -> str:
    """scheduled → `state` (sent | cancelled | failed | unknown); returns `state`."""
    values: dict[str, Any] = {"state": state, "error": error}
    if state == "sent":
        values["sent_at"] = utcnow()
    if Followup.update(**values).where((Followup.id == row.id) & (Followup.state == "scheduled")).execute():
        counters.inc("grimbots_followups_total", {"kind": row.kind, "outcome": state})
    return state


def close_after(row: Followup, outcome: Outcome) -> str:
    """Closed as its send ended: failed (with Telegram's description), sent, or unknown (its fate
    was left unknown by a crash: marketing is not sent again)."""
    if outcome.failed is not None:
        return close(row, "failed", outcome.failed[:500])
    return close(row, "sent" if outcome.sent else "unknown")
