"""A lead's journey, oldest first: the ad clicks that brought them (with their UTMs), the start, each
code (charge) with its payment, each delivery, and their subscriptions. Read from the database,
for the seller panel's sale page."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from db.models import Charge, Click, Delivery, Lead, Offer, Subscription


@dataclass(frozen=True)
class Step:
    at: dt.datetime
    kind: str  # click | start | charge | paid | refunded | delivery | subscription
    what: str  # an offer's label (charge, paid, refunded) or a state (delivery, subscription)
    details: dict[str, str] = field(default_factory=dict)  # amount, state, paid, until, renewals, a click's UTMs
    charge_id: int | None = None


def journey(lead: Lead) -> list[Step]:
    steps: list[Step] = []
    click_ids = {i for i in (lead.first_click_id, lead.last_click_id) if i}
    clicks = Click.select().where((Click.lead_id == lead.id) | Click.id.in_(list(click_ids) or [0]))
    for click in clicks:
        utm = {k: str(v) for k, v in (click.utm or {}).items() if v}
        if click.pool_id:
            utm["pool"] = click.pool_id
        steps.append(Step(click.clicked_at, "click", "", utm))
    steps.append(Step(lead.first_seen_at, "start", ""))
    charges = list(Charge.select().where(Charge.lead_id == lead.id).order_by(Charge.id))
    offers = {o.id: o for o in Offer.select().where(Offer.id.in_([c.offer_id for c in charges] or [0]))}
    for charge in charges:
        offer = offers.get(charge.offer_id)
        label = offer.label if offer is not None else str(charge.offer_id)
        asked = {"amount": _money(charge.amount), "state": charge.status}
        steps.append(Step(charge.created_at, "charge", label, asked, charge.id))
        if charge.paid_at is not None:
            paid = charge.paid_amount if charge.paid_amount is not None else charge.amount
            steps.append(Step(charge.paid_at, "paid", label, {"paid": _money(paid)}, charge.id))
        if charge.status == "refunded":
            steps.append(Step(charge.updated_at, "refunded", label, {}, charge.id))
    for delivery in Delivery.select().where(Delivery.charge_id.in_([c.id for c in charges] or [0])):
        at = delivery.delivered_at or delivery.updated_at
        steps.append(Step(at, "delivery", delivery.state, {}, delivery.charge_id))
    for sub in Subscription.select().where(Subscription.lead_id == lead.id):
        until = {"until": sub.ends_at.isoformat(timespec="seconds"), "renewals": str(sub.renewals)}
        steps.append(Step(sub.started_at, "subscription", sub.state, until))
    return sorted(steps, key=lambda s: s.at)


def _money(value: Decimal) -> str:
    return f"{value:.2f}"
