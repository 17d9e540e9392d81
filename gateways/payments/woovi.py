"""OpenPix / Woovi PIX (DOMAIN.md): POST /api/v1/charge keyed by our correlationID (so a retried
create returns the same charge); notifications signed by Woovi with RSA-SHA256 over the raw body
(`x-webhook-signature`, base64), checked with Woovi's public key (configurable per gateway)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, ClassVar

import httpx
import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

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
    request_json,
)

STATUSES = {"ACTIVE": ChargeStatus.PENDING, "COMPLETED": ChargeStatus.PAID, "EXPIRED": ChargeStatus.EXPIRED}
EVENTS = {
    "OPENPIX:CHARGE_COMPLETED": ChargeStatus.PAID,
    "OPENPIX:TRANSACTION_RECEIVED": ChargeStatus.PAID,
    "OPENPIX:CHARGE_EXPIRED": ChargeStatus.EXPIRED,
}
SIGNATURE_HEADER = "x-webhook-signature"
# The key Woovi publishes for production webhooks (developers.woovi.com, "webhook public keys");
# a gateway's `public_key` setting overrides it (Woovi's sandbox signs with another one).
WOOVI_PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC/+NtIkjzevvqD+I3MMv3bLXDt
pvxBjY4BsRrSdca3rtAwMcRYYvxSnd7jagVLpctMiOxQO8ieUCKLSWHpsMAjO/zZ
WMKbqoG8MNpi/u3fp6zz0mcHCOSqYsPUUG19buW8bis5ZZ2IZgBObWSpTvJ0cnj6
HKBAA82Jln+lGwS1MwIDAQAB
-----END PUBLIC KEY-----
"""


@lru_cache(maxsize=16)
def _public_key(pem: str) -> rsa.RSAPublicKey:
    key = load_pem_public_key(pem.encode())
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("woovi public_key must be an RSA key")
    return key


class WooviGateway:
    kind: ClassVar[str] = "woovi"
    options: ClassVar[dict[str, bool]] = {"app_id": True, "public_key": False, **MERCHANT}
    late_payable: ClassVar[bool] = False  # expiresIn: the code dies with the charge

    def __init__(self, *, app_id: str, client: httpx.Client, base_url: str, public_key: str = WOOVI_PUBLIC_KEY) -> None:
        self.app_id = app_id
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.public_key = _public_key(public_key)

    @classmethod
    def from_config(
        cls, *, gateway_id: str, webhook_secret: str, options: Mapping[str, str], client: httpx.Client,
        bank: redis.Redis,
    ) -> WooviGateway:  # fmt: skip
        return cls(app_id=options["app_id"], client=client, base_url=settings.WOOVI_API_BASE,
                   public_key=options.get("public_key") or WOOVI_PUBLIC_KEY)  # fmt: skip

    def create_charge(self, request: ChargeRequest) -> CreatedCharge:
        body = {
            "correlationID": request.idempotency_key,
            "value": cents(request.amount),
            "comment": request.description[:140],
            "expiresIn": request.expires_in_seconds,
        }
        doc = request_json(self.client, self.kind, "POST", f"{self.base_url}/api/v1/charge",
                           params={"return_existing": "true"}, json=body,
                           headers={"Authorization": self.app_id})  # fmt: skip
        charge = doc.get("charge") if isinstance(doc, dict) else None
        if not isinstance(charge, dict) or not charge.get("brCode"):
            raise PaymentTransient("woovi: answer without charge.brCode")
        expires = _parse_time(charge.get("expiresDate")) or expiry_in(request.expires_in_seconds)
        return CreatedCharge(
            str(charge.get("correlationID") or request.idempotency_key), str(charge["brCode"]), expires
        )

    def fetch_status(self, charge_id: str) -> ChargeState:
        doc = request_json(self.client, self.kind, "GET", f"{self.base_url}/api/v1/charge/{charge_id}",
                           headers={"Authorization": self.app_id})  # fmt: skip
        charge = doc.get("charge") if isinstance(doc, dict) else None
        if not isinstance(charge, dict):
            raise PaymentPermanent("woovi: no such charge")
        status = STATUSES.get(str(charge.get("status")), ChargeStatus.PENDING)
        return ChargeState(status, from_cents(charge.get("value")) if status is ChargeStatus.PAID else None)

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
        given = header(headers, SIGNATURE_HEADER)
        if not given:
            return False
        try:
            signature = base64.b64decode(given.strip(), validate=True)
            self.public_key.verify(signature, body, padding.PKCS1v15(), hashes.SHA256())
        except (binascii.Error, ValueError, InvalidSignature):
            return False
        return True

    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Notification | None:
        try:
            doc: Any = json.loads(body)
        except ValueError:
            raise BadNotification("body is not JSON") from None
        if not isinstance(doc, dict):
            raise BadNotification("body is not a JSON object")
        status = EVENTS.get(str(doc.get("event")))
        if status is None:
            return None  # test pings and events about other things
        charge = doc.get("charge")
        if not isinstance(charge, dict) or not charge.get("correlationID"):
            raise BadNotification("charge.correlationID is missing")
        # Woovi signs every customer's webhooks with one key: the signature proves the sender, not
        # that the charge is this merchant's. Its status (and amount) are fetched with our app_id.
        return Notification(str(charge["correlationID"]), None, None)


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
