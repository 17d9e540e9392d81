"""Gateway to Utmify's orders API: `POST {UTMIFY_API_BASE}/api-credentials/orders` with header
`x-api-token`, one order state per request. An order is our charge (`orderId` = its id); its
states go in order (waiting_payment, then paid or refunded), `createdAt` never changes, and Utmify
refuses orders older than 7 days.

Errors: network, 429 and 5xx are transient; any other 4xx is Utmify refusing the order (its message
kept). The token travels in a header: no message here carries it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx

from gateways.ads import AdEvent, AdKind, DestinationPermanent, DestinationTransient, Payload, Sent
from gateways.http import network_errors, pooled_client

PLATFORM = "GrimBots"
TRACKING_KEYS = ("src", "sck", "utm_source", "utm_campaign", "utm_medium", "utm_content", "utm_term")


def default_client(timeout: float = 10.0) -> httpx.Client:
    return pooled_client(timeout, max_connections=20)


def when(at: dt.datetime | None) -> str | None:
    """Utmify's time format: "YYYY-MM-DD HH:MM:SS", UTC."""
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else None


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def order(*, order_id: str, status: str, created_at: dt.datetime, approved_at: dt.datetime | None,
          refunded_at: dt.datetime | None, customer_name: str, customer_id: str,
          products: Sequence[tuple[str, str, Decimal]], tracking: Mapping[str, str],
          total: Decimal) -> dict[str, Any]:  # fmt: skip
    """One state of an order as Utmify takes it. `products`: (id, name, price) per line (an offer,
    its bump). Chat buyers have no e-mail: a placeholder that names them by id."""
    email, total_cents = f"{customer_id}@buyers.grimbots.invalid", cents(total)
    lines = [{"id": pid, "name": name, "planId": None, "planName": None, "quantity": 1, "priceInCents": cents(price)}
             for pid, name, price in products]  # fmt: skip
    return {
        "orderId": order_id,
        "platform": PLATFORM,
        "paymentMethod": "pix",
        "status": status,
        "createdAt": when(created_at),
        "approvedDate": when(approved_at),
        "refundedAt": when(refunded_at),
        "customer": {"name": customer_name or "Cliente", "email": email, "phone": None, "document": None},
        "products": lines,
        "trackingParameters": {key: tracking.get(key) for key in TRACKING_KEYS},
        "commission": {
            "totalPriceInCents": total_cents,
            "gatewayFeeInCents": 0,
            "userCommissionInCents": total_cents,
        },
        "isTest": False,
    }


class UtmifyGateway:
    """Utmify as an ad destination: target = the bot; credentials `token`. One order state per
    request, in order (`ordered`): a state waits for the ones before it."""

    name = "utmify"
    max_batch = 1
    ordered = True

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    def send(self, target: str, credentials: Mapping[str, str | None], payloads: Sequence[dict[str, Any]]) -> Sent:
        if len(payloads) != 1:
            raise ValueError(f"a Utmify request takes one order, not {len(payloads)}")
        headers = {"x-api-token": credentials.get("token") or ""}
        with network_errors("utmify", DestinationTransient):
            response = self.client.post(f"{self.base_url}/api-credentials/orders", json=payloads[0], headers=headers)
        status = response.status_code
        if status < 300:
            return Sent(1)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        message = str(answer.get("message") or answer.get("error") or "")[:300] if isinstance(answer, dict) else ""
        if status == 429 or status >= 500:
            raise DestinationTransient(f"utmify: HTTP {status}: {message}".rstrip(": "), f"utmify: HTTP {status}")
        raise DestinationPermanent(f"utmify: HTTP {status}: {message}".rstrip(": "), f"utmify: HTTP {status}")


STATUS = {"InitiateCheckout": "waiting_payment", "Purchase": "paid", "Refund": "refunded"}
MAX_AGE = dt.timedelta(days=7)  # Utmify refuses orders created longer ago


def build(event: AdEvent) -> Payload | None:
    """One state of the charge's order (waiting_payment, paid, refunded), kept under its own id
    (once each) at the order's creation time (Utmify's 7 days count from there); none for an order
    older than Utmify takes."""
    status, charge = STATUS.get(event.name), event.order
    if status is None or charge is None or charge.created_at < event.at - MAX_AGE:
        return None
    bump = charge.bump
    main = charge.total - (bump.price if bump is not None else Decimal(0))
    offer = charge.offer
    products = [(offer.id if offer else str(charge.offer_id), offer.name if offer else "", main)]
    if bump is not None:
        products.append((bump.id, bump.name, bump.price))
    doc = order(order_id=str(charge.id), status=status, created_at=charge.created_at, approved_at=charge.paid_at,
                refunded_at=charge.refunded_at, customer_name=event.buyer.name, customer_id=charge.customer_id,
                products=products, tracking=event.buyer.utm, total=charge.total)  # fmt: skip
    return Payload(f"order.{charge.id}.{status}", status, charge.created_at, doc)


KIND = AdKind("utmify", target="id", credentials={"token": "utmify_token"}, required=("utmify_token",), build=build)
