"""PushinPay PIX (DOMAIN.md): POST /api/pix/cashIn (value in cents); notifications carry a shared
token in `x-pushinpay-token` and are not signed, so their status is never trusted: the
transaction is always fetched from GET /api/transactions/{id}. PushinPay has no idempotency key:
a create retried after a timeout may leave an unused charge at PushinPay (never shown to a buyer)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx
import redis

import settings
from gateways.payments.base import (
    MERCHANT,
    BadNotification,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    CreatedCharge,
    Notification,
    PaymentPermanent,
    PaymentTransient,
    cents,
    expiry_in,
    from_cents,
    header,
    notification_url,
    request_json,
    same_secret,
)

STATUSES = {
    "created": ChargeStatus.PENDING,
    "paid": ChargeStatus.PAID,
    "canceled": ChargeStatus.EXPIRED,
    "expired": ChargeStatus.EXPIRED,
    "refunded": ChargeStatus.REFUNDED,
}
MINIMUM_CENTS = 50
TOKEN_HEADER = "x-pushinpay-token"


class PushinPayGateway:
    kind: ClassVar[str] = "pushinpay"
    options: ClassVar[dict[str, bool]] = {"api_token": True, **MERCHANT}
    late_payable: ClassVar[bool] = True  # its codes carry no expiry

    def __init__(
        self, *, api_token: str, webhook_secret: str, client: httpx.Client, base_url: str, notification_url: str
    ) -> None:
        self.api_token = api_token
        self.webhook_secret = webhook_secret
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.notification_url = notification_url

    @classmethod
    def from_config(
        cls, *, gateway_id: str, webhook_secret: str, options: Mapping[str, str], client: httpx.Client,
        bank: redis.Redis,
    ) -> PushinPayGateway:  # fmt: skip
        return cls(api_token=options["api_token"], webhook_secret=webhook_secret, client=client,
                   base_url=settings.PUSHINPAY_API_BASE, notification_url=notification_url(gateway_id))  # fmt: skip

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}", "Accept": "application/json"}

    def create_charge(self, request: ChargeRequest) -> CreatedCharge:
        value = cents(request.amount)
        if value < MINIMUM_CENTS:
            raise PaymentPermanent(f"pushinpay: amount below the minimum of {MINIMUM_CENTS} cents")
        body = {"value": value, "webhook_url": self.notification_url}
        doc = request_json(self.client, self.kind, "POST", f"{self.base_url}/api/pix/cashIn", json=body,
                           headers=self._headers())  # fmt: skip
        if not isinstance(doc, dict) or not doc.get("id") or not doc.get("qr_code"):
            raise PaymentTransient("pushinpay: answer without id or qr_code")
        # PushinPay's codes carry no expiry of their own: the charge expires on our clock.
        expires = expiry_in(request.expires_in_seconds)
        return CreatedCharge(str(doc["id"]).lower(), str(doc["qr_code"]), expires)

    def fetch_status(self, charge_id: str) -> ChargeState:
        doc = request_json(self.client, self.kind, "GET", f"{self.base_url}/api/transactions/{charge_id}",
                           headers=self._headers())  # fmt: skip
        if not isinstance(doc, dict):
            raise PaymentTransient("pushinpay: unexpected answer")
        status = STATUSES.get(str(doc.get("status")).lower(), ChargeStatus.PENDING)
        # The transaction's value, read from PushinPay as paid (its API documents no other field).
        return ChargeState(status, from_cents(doc.get("value")) if status is ChargeStatus.PAID else None)

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = header(headers, TOKEN_HEADER)
        return given is not None and same_secret(given.strip(), self.webhook_secret)

    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Notification | None:
        doc = _fields(body, header(headers, "content-type") or "")
        charge_id = doc.get("id")
        if not isinstance(charge_id, str) or not charge_id.strip() or len(charge_id) > 128:
            raise BadNotification("id is missing")
        amount = from_cents(doc["value"]) if doc.get("value") not in (None, "") else None
        # Unsigned body: the status is fetched before anything is done with it.
        return Notification(charge_id.strip().lower(), None, amount if isinstance(amount, Decimal) else None)


def _fields(body: bytes, content_type: str) -> dict[str, Any]:
    """PushinPay posts JSON or a form; either way, a flat dict of its fields."""
    text = body.decode("utf-8", errors="replace").strip()
    if "json" in content_type or text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            raise BadNotification("body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadNotification("body is not a JSON object")
        return {k: str(v) if isinstance(v, (int, str)) else v for k, v in doc.items()}
    return dict(parse_qsl(text, keep_blank_values=True))
