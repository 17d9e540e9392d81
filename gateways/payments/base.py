"""What every PIX gateway adapter offers, behind one Protocol: create a charge, authenticate and
parse a notification, fetch a charge's status. Statuses are mapped onto ours. The QR image is
not the gateway's: gateways/payments/qr.py renders it from the BR Code.

Errors, translated at each adapter's boundary:

    PaymentError
    ├── PaymentTransient      retry with backoff: timeouts, network errors, 5xx, 429
    └── PaymentPermanent      record it and show it to the seller: bad credentials, rejected amount
        └── BadNotification   authenticated but not understood: answered 400, nothing changes"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Protocol

import httpx

import settings
from gateways.http import network_errors


class ChargeStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    EXPIRED = "expired"
    REFUNDED = "refunded"
    FAILED = "failed"


class PaymentError(Exception):
    pass


class PaymentTransient(PaymentError):
    pass


class PaymentPermanent(PaymentError):
    pass


class BadNotification(PaymentPermanent):
    pass


@dataclass(frozen=True)
class ChargeRequest:
    amount: Decimal  # BRL
    description: str
    reference: str  # ours: lead and offer, echoed by gateways that keep one
    idempotency_key: str  # the same key on a retry can never charge twice
    expires_in_seconds: int


def expiry_in(seconds: int) -> dt.datetime:
    """When a charge created now expires, `seconds` on: naive UTC, as the database stores times."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class CreatedCharge:
    charge_id: str
    br_code: str
    expires_at: dt.datetime  # naive UTC


@dataclass(frozen=True)
class ChargeState:
    """What the gateway says about a charge now."""

    status: ChargeStatus
    amount: Decimal | None  # what was paid, when the gateway says


@dataclass(frozen=True)
class Notification:
    charge_id: str
    status: ChargeStatus | None  # None: the gateway's status must be fetched before acting
    amount: Decimal | None


def notification_url(gateway_id: str) -> str:
    """Where a gateway posts its notifications (CONTRACT §4)."""
    return f"{settings.PUBLIC_BASE_URL}/webhook/payment/{gateway_id}"


def cents(amount: Decimal) -> int:
    return int((amount * 100).to_integral_value())


def from_cents(value: Any) -> Decimal | None:
    try:
        return (Decimal(str(int(value))) / 100).quantize(Decimal("0.01"))
    except (TypeError, ValueError, ArithmeticError):
        return None


def request_json(client: httpx.Client, kind: str, method: str, url: str, **kwargs: Any) -> Any:
    """One call to a gateway's API, its errors translated into ours. Messages carry the HTTP status
    and the gateway's own short message, never a header, a key or the request."""
    with network_errors(kind, PaymentTransient):
        response = client.request(method, url, **kwargs)
    try:
        body = response.json()
    except ValueError:
        body = None
    status = response.status_code
    if status == 429 or status >= 500:
        raise PaymentTransient(f"{kind}: HTTP {status}")
    if status in (401, 403):
        raise PaymentPermanent(f"{kind}: credentials rejected (HTTP {status})")
    if status >= 400:
        raise PaymentPermanent(f"{kind}: HTTP {status}: {_message(body)}")
    if body is None:
        raise PaymentTransient(f"{kind}: HTTP {status} without a JSON body")
    return body


def _message(body: Any) -> str:
    if isinstance(body, dict):
        for key in ("message", "error", "description"):
            if isinstance(body.get(key), str):
                return body[key][:200]
    return "rejected"


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of a secret a request carried with ours. Bytes, not str:
    `hmac.compare_digest` raises on non-ASCII text, and a header can carry anything."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name."""
    lowered = name.lower()
    return next((value for key, value in headers.items() if key.lower() == lowered), None)


# Accepted by every kind that makes its own codes, so one file can switch a gateway's kind without
# editing these out; only the sandbox's static codes carry them.
MERCHANT: dict[str, bool] = {"merchant_name": False, "merchant_city": False}


class PaymentGateway(Protocol):
    kind: ClassVar[str]
    # Its own configuration keys (True = required), besides id, kind and webhook_secret: what
    # `from_config` reads from `options`, and what the configuration accepts for this kind.
    options: ClassVar[dict[str, bool]]
    # Whether a code can still be paid at the gateway after our charge expired (PushinPay's codes
    # never expire there; a static sandbox code neither): then we keep asking about it for a while.
    late_payable: ClassVar[bool]

    def create_charge(self, request: ChargeRequest) -> CreatedCharge: ...

    def authenticate(self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]) -> bool: ...

    def parse_notification(
        self, body: bytes, headers: Mapping[str, str], query: Mapping[str, str]
    ) -> Notification | None:
        """The notification's charge and status; None when it is about something else (a test
        ping, another kind of event): answered 200 and dropped. Raises BadNotification."""
        ...

    def fetch_status(self, charge_id: str) -> ChargeState: ...
