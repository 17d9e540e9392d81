"""Mercado Pago PIX (DOMAIN.md): POST /v1/payments with an X-Idempotency-Key; notifications carry
only the payment id, authenticated by the `x-signature` HMAC manifest, and the status is always
fetched from GET /v1/payments/{id}."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

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
    PaymentTransient,
    header,
    notification_url,
    request_json,
    same_secret,
)

STATUSES = {
    "pending": ChargeStatus.PENDING,
    "in_process": ChargeStatus.PENDING,
    "authorized": ChargeStatus.PENDING,
    "in_mediation": ChargeStatus.PENDING,  # disputed: not ours to deliver on
    "approved": ChargeStatus.PAID,
    "rejected": ChargeStatus.FAILED,
    "cancelled": ChargeStatus.EXPIRED,  # Mercado Pago cancels a PIX nobody paid in time
    "refunded": ChargeStatus.REFUNDED,
    "charged_back": ChargeStatus.REFUNDED,
}
DEFAULT_PAYER_EMAIL = "comprador@grimbots.com.br"


def manifest(data_id: str | None, request_id: str | None, ts: str | None) -> str:
    """The signed string: `id:{data.id lowercased};request-id:{x-request-id};ts:{ts};`, absent parts left out."""
    parts = []
    if data_id:
        parts.append(f"id:{data_id.lower()};")
    if request_id:
        parts.append(f"request-id:{request_id};")
    if ts:
        parts.append(f"ts:{ts};")
    return "".join(parts)


def signature_parts(value: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in value.split(","):
        key, _, val = item.strip().partition("=")
        parts[key.strip()] = val.strip()
    return parts


class MercadoPagoGateway:
    kind: ClassVar[str] = "mercadopago"
    options: ClassVar[dict[str, bool]] = {"access_token": True, "payer_email": False, **MERCHANT}
    late_payable: ClassVar[bool] = False  # date_of_expiration: the code dies with the charge

    def __init__(
        self, *, access_token: str, webhook_secret: str, client: httpx.Client, base_url: str,
        notification_url: str, payer_email: str = DEFAULT_PAYER_EMAIL,
    ) -> None:  # fmt: skip
        self.access_token = access_token
        self.webhook_secret = webhook_secret
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.notification_url = notification_url
        self.payer_email = payer_email

    @classmethod
    def from_config(
        cls, *, gateway_id: str, webhook_secret: str, options: Mapping[str, str], client: httpx.Client,
        bank: redis.Redis,
    ) -> MercadoPagoGateway:  # fmt: skip
        return cls(access_token=options["access_token"], webhook_secret=webhook_secret, client=client,
                   base_url=settings.MERCADOPAGO_API_BASE, notification_url=notification_url(gateway_id),
                   payer_email=options.get("payer_email") or DEFAULT_PAYER_EMAIL)  # fmt: skip

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    def create_charge(self, request: ChargeRequest) -> CreatedCharge:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=request.expires_in_seconds)
        body = {
            "transaction_amount": float(request.amount),
            "description": request.description[:256],
            "payment_method_id": "pix",
            "payer": {"email": self.payer_email},
            "notification_url": self.notification_url,
            "external_reference": request.reference,
            "date_of_expiration": expires.strftime("%Y-%m-%dT%H:%M:%S.000+00:00"),
        }
        headers = {**self._auth(), "X-Idempotency-Key": request.idempotency_key}
        doc = request_json(self.client, self.kind, "POST", f"{self.base_url}/v1/payments", json=body, headers=headers)
        try:
            payment_id = str(doc["id"])
            code = doc["point_of_interaction"]["transaction_data"]["qr_code"]
        except (KeyError, TypeError):
            raise PaymentTransient("mercadopago: answer without id or qr_code") from None
        return CreatedCharge(payment_id, str(code), expires.replace(tzinfo=None))

    def fetch_status(self, charge_id: str) -> ChargeState:
        doc = request_json(self.client, self.kind, "GET", f"{self.base_url}/v1/payments/{charge_id}",
                           headers=self._auth())  # fmt: skip
        status = STATUSES.get(str(doc.get("status")), ChargeStatus.PENDING)
        # What the payer paid, not what was asked: transaction_details.total_paid_amount.
        details = doc.get("transaction_details")
        paid = details.get("total_paid_amount") if isinstance(details, dict) else None
        if status is not ChargeStatus.PAID or not isinstance(paid, (int, float, str)):
            return ChargeState(status, None)
        try:
            return ChargeState(status, Decimal(str(paid)).quantize(Decimal("0.01")))
        except ArithmeticError:
            return ChargeState(status, None)

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = header(headers, "x-signature")
        if not given:
            return False
        parts = signature_parts(given)
        ts, v1 = parts.get("ts"), parts.get("v1")
        if not ts or not v1:
            return False
        signed = manifest(query.get("data.id"), header(headers, "x-request-id"), ts)
        expected = hmac.new(self.webhook_secret.encode(), signed.encode(), hashlib.sha256).hexdigest()
        return same_secret(v1.lower(), expected)

    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Notification | None:
        try:
            doc: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            raise BadNotification("body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadNotification("body is not a JSON object")
        kind = doc.get("type") or query.get("type") or query.get("topic")
        if kind != "payment":
            return None  # merchant orders, test pings...
        data = doc.get("data")
        payment_id = query.get("data.id") or (data.get("id") if isinstance(data, dict) else None)
        if payment_id is None or not str(payment_id).strip():
            raise BadNotification("data.id is missing")
        # The signature covers the id in the query string only: never act on a different one.
        if query.get("data.id") and isinstance(data, dict) and data.get("id") is not None:
            if str(data["id"]).lower() != query["data.id"].lower():
                raise BadNotification("data.id in the body differs from the signed one")
        return Notification(str(payment_id), None, None)
