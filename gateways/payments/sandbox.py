"""The sandbox gateway (CONTRACT §6): no network; static BR Codes carrying a fresh 25-character
txid as the charge id; notifications signed with HMAC-SHA256 of the raw body."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import ClassVar

from db.database import utcnow
from gateways.payments import brcode
from gateways.payments.base import (
    BadNotification,
    ChargeRequest,
    ChargeStatus,
    CreatedCharge,
    Notification,
    header,
)

SIGNATURE_HEADER = "X-Sandbox-Signature"
TXID_ALPHABET = string.ascii_letters + string.digits
EVENTS = {"charge.paid": ChargeStatus.PAID, "charge.expired": ChargeStatus.EXPIRED,
          "charge.refunded": ChargeStatus.REFUNDED}  # fmt: skip


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SandboxGateway:
    kind: ClassVar[str] = "sandbox"

    def __init__(self, *, webhook_secret: str, pix_key: str, merchant_name: str, merchant_city: str) -> None:
        self.webhook_secret = webhook_secret
        self.pix_key = pix_key
        self.merchant_name = merchant_name
        self.merchant_city = merchant_city

    def create_charge(self, request: ChargeRequest) -> CreatedCharge:
        txid = "".join(secrets.choice(TXID_ALPHABET) for _ in range(25))
        code = brcode.static_pix(pix_key=self.pix_key, amount=request.amount, merchant_name=self.merchant_name,
                                 merchant_city=self.merchant_city, txid=txid)  # fmt: skip
        return CreatedCharge(txid, code, utcnow() + dt.timedelta(seconds=request.expires_in_seconds))

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = header(headers, SIGNATURE_HEADER)
        return given is not None and hmac.compare_digest(given.strip().lower(), sign(self.webhook_secret, body))

    def parse_notification(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Notification:
        try:
            doc = json.loads(body)
        except ValueError:
            raise BadNotification("body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadNotification("body is not a JSON object")
        status = EVENTS.get(doc.get("event"))  # type: ignore[arg-type]
        charge_id = doc.get("charge_id")
        if status is None:
            raise BadNotification("event must be one of " + ", ".join(EVENTS))
        if not isinstance(charge_id, str) or not brcode.TXID.match(charge_id):
            raise BadNotification("charge_id must be the charge's txid")
        try:
            amount = Decimal(str(doc["amount"])) if doc.get("amount") is not None else None
        except InvalidOperation:
            raise BadNotification('amount must be a decimal such as "19.90"') from None
        return Notification(charge_id, status, amount)
