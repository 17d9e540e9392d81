"""The sandbox gateway (CONTRACT §6): no network; static BR Codes carrying a fresh 25-character
txid as the charge id; notifications signed with HMAC-SHA256 of the raw body.

Its "bank" is a Redis hash per charge (the platform's own Redis, no outside network): created
charges are pending there, `pay()` (the `ops sandbox pay` command, or a test) marks one paid
without sending a notification, and `fetch_status` reads it, so the check button and
reconciliation work against the sandbox exactly as against a real gateway."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import string
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import ClassVar

import httpx
import redis

from gateways.payments import brcode
from gateways.payments.base import (
    BadNotification,
    ChargeRequest,
    ChargeState,
    ChargeStatus,
    CreatedCharge,
    Notification,
    PaymentPermanent,
    PaymentTransient,
    expiry_in,
    header,
    same_secret,
)

SIGNATURE_HEADER = "X-Sandbox-Signature"
TXID_ALPHABET = string.ascii_letters + string.digits
EVENTS = {"charge.paid": ChargeStatus.PAID, "charge.expired": ChargeStatus.EXPIRED,
          "charge.refunded": ChargeStatus.REFUNDED}  # fmt: skip


BANK_KEY = "grimbots:sandbox:charge:{txid}"
BANK_TTL_SECONDS = 30 * 24 * 3600


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class SandboxGateway:
    kind: ClassVar[str] = "sandbox"
    options: ClassVar[dict[str, bool]] = {"pix_key": True, "merchant_name": True, "merchant_city": True}
    late_payable: ClassVar[bool] = True  # a static BR Code

    def __init__(
        self, *, webhook_secret: str, pix_key: str, merchant_name: str, merchant_city: str, bank: redis.Redis
    ) -> None:
        self.webhook_secret = webhook_secret
        self.pix_key = pix_key
        self.merchant_name = merchant_name
        self.merchant_city = merchant_city
        self.bank = bank

    @classmethod
    def from_config(
        cls,
        *,
        gateway_id: str,
        webhook_secret: str,
        options: Mapping[str, str],
        client: httpx.Client,
        bank: redis.Redis,
    ) -> SandboxGateway:
        return cls(webhook_secret=webhook_secret, pix_key=options["pix_key"], merchant_name=options["merchant_name"],
                   merchant_city=options["merchant_city"], bank=bank)  # fmt: skip

    def create_charge(self, request: ChargeRequest) -> CreatedCharge:
        txid = "".join(secrets.choice(TXID_ALPHABET) for _ in range(25))
        code = brcode.static_pix(pix_key=self.pix_key, amount=request.amount, merchant_name=self.merchant_name,
                                 merchant_city=self.merchant_city, txid=txid)  # fmt: skip
        key = BANK_KEY.format(txid=txid)
        try:
            self.bank.hset(key, mapping={"status": ChargeStatus.PENDING.value, "amount": str(request.amount)})
            self.bank.expire(key, BANK_TTL_SECONDS)
        except redis.RedisError as exc:
            raise PaymentTransient(f"sandbox bank unavailable ({type(exc).__name__})") from None
        return CreatedCharge(txid, code, expiry_in(request.expires_in_seconds))

    def fetch_status(self, charge_id: str) -> ChargeState:
        try:
            state = self.bank.hgetall(BANK_KEY.format(txid=charge_id))
        except redis.RedisError as exc:
            raise PaymentTransient(f"sandbox bank unavailable ({type(exc).__name__})") from None
        if not state:
            raise PaymentPermanent("sandbox: no such charge")
        status = ChargeStatus(_text(state[b"status"]))
        paid = state.get(b"paid_amount")
        return ChargeState(status, Decimal(_text(paid)) if paid else None)

    def pay(self, charge_id: str, amount: Decimal | None = None) -> Decimal:
        """Mark a charge paid in the bank, as a buyer's PIX would (no notification is sent).
        Returns the amount paid: the charge's own unless given."""
        key = BANK_KEY.format(txid=charge_id)
        owed = self.bank.hget(key, "amount")
        if owed is None:
            raise PaymentPermanent("sandbox: no such charge")
        paid = amount if amount is not None else Decimal(_text(owed))
        self.bank.hset(key, mapping={"status": ChargeStatus.PAID.value, "paid_amount": str(paid)})
        return paid

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = header(headers, SIGNATURE_HEADER)
        return given is not None and same_secret(given.strip().lower(), sign(self.webhook_secret, body))

    def parse_notification(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> Notification:
        try:
            doc = json.loads(body)
        except ValueError:
            raise BadNotification("body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadNotification("body is not a JSON object")
        event = doc.get("event")
        status = EVENTS.get(event) if isinstance(event, str) else None
        charge_id = doc.get("charge_id")
        if status is None:
            raise BadNotification("event must be one of " + ", ".join(EVENTS))
        if not isinstance(charge_id, str) or not brcode.TXID.match(charge_id):
            raise BadNotification("charge_id must be the charge's txid")
        amount = doc.get("amount")
        if amount is None:
            return Notification(charge_id, status, None)
        try:
            value = Decimal(amount) if isinstance(amount, str) else None
        except InvalidOperation:
            value = None
        if value is None or not value.is_finite() or value <= 0 or value != value.quantize(Decimal("0.01")):
            raise BadNotification('amount must be a decimal string such as "19.90"')
        return Notification(charge_id, status, value)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
