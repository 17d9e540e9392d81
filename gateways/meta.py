"""Gateway to Meta's Conversions API: `POST {META_GRAPH_BASE}/{META_API_VERSION}/{pixel_id}/events`
with the pixel's access token, up to 1000 events per request (one invalid event rejects them all).

Errors, translated at this boundary:

    MetaError
    ├── MetaTransient   retry with backoff: network errors, timeouts, 429, 5xx
    └── MetaPermanent   never retried: 4xx (Meta's own message kept, e.g. an OAuthException)

The access token travels in the query string, so no message here carries a URL or httpx's own
error text. Also here: an event as Meta takes it (`build`), and the `user_data` rules (what is
hashed and how it is normalised first)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from gateways.ads import (
    AdEvent,
    AdKind,
    DestinationError,
    DestinationPermanent,
    DestinationTransient,
    Payload,
    Sent,
    sha256_hex,
)
from gateways.http import network_errors, pooled_client

MAX_BATCH = 1000


class MetaError(DestinationError):
    """`str()` is the whole story (kept with the events); `summary` leaves out Meta's message,
    which may quote a value we sent (an IP, say): that one is for log lines."""


class MetaTransient(MetaError, DestinationTransient):
    pass


class MetaPermanent(MetaError, DestinationPermanent):
    pass


def default_client(timeout: float = 10.0) -> httpx.Client:
    """One pooled client per process for the Graph API."""
    return pooled_client(timeout, max_connections=50)


class MetaGateway:
    """The Conversions API as an ad destination: target = the pixel (dataset) id; credentials
    `access_token` and, optionally, `test_event_code`."""

    name = "meta"
    max_batch = MAX_BATCH
    ordered = False

    def __init__(self, client: httpx.Client, base_url: str, version: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")
        self.version = version.strip("/")

    def send(self, target: str, credentials: Mapping[str, str | None], payloads: Sequence[dict[str, Any]]) -> Sent:
        token = credentials.get("access_token") or ""
        return self.send_events(target, token, list(payloads), credentials.get("test_event_code"))

    def send_events(
        self, pixel_id: str, access_token: str, events: list[dict[str, Any]], test_event_code: str | None = None
    ) -> Sent:
        if not 1 <= len(events) <= MAX_BATCH:
            raise ValueError(f"a Conversions API request takes 1 to {MAX_BATCH} events, not {len(events)}")
        body: dict[str, Any] = {"data": events}
        if test_event_code:
            body["test_event_code"] = test_event_code
        url = f"{self.base_url}/{self.version}/{pixel_id}/events"
        with network_errors("meta", MetaTransient):
            response = self.client.post(url, params={"access_token": access_token}, json=body)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        status = response.status_code
        if status == 429 or status >= 500:
            raise MetaTransient(f"meta: HTTP {status}{_describe(answer)}", f"meta: HTTP {status}{_codes(answer)}")
        if status >= 400:
            # 400 with code 100 ("Invalid parameter", Meta types it OAuthException too) is about what
            # the batch carried; 190 (the token), 10 and 200–299 (permissions) are about who sent it.
            error = answer.get("error") if isinstance(answer, dict) else None
            code = error.get("code") if isinstance(error, dict) else None
            raise MetaPermanent(f"meta: HTTP {status}{_describe(answer)}", f"meta: HTTP {status}{_codes(answer)}",
                                content=status == 400 and code in (100, None))  # fmt: skip
        if not isinstance(answer, dict) or not isinstance(answer.get("events_received"), int):
            raise MetaTransient(f"meta: HTTP {status} without events_received")
        trace = answer.get("fbtrace_id")
        return Sent(answer["events_received"], trace if isinstance(trace, str) else None)


def _codes(answer: Any) -> str:
    """Meta's error as `: type code subcode`."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return ""
    parts = [str(error[k]) for k in ("type", "code", "error_subcode") if error.get(k) is not None]
    return f": {' '.join(parts)}" if parts else ""


def _describe(answer: Any) -> str:
    """Meta's error as `: type code subcode: message` (its message never holds the token we sent)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    message = (error.get("error_user_msg") or error.get("message") or "") if isinstance(error, dict) else ""
    return f"{_codes(answer)}: {str(message)[:300]}".rstrip(": ")


# --- user_data -------------------------------------------------------------------------------


def hashed_email(email: str) -> str | None:
    normalized = email.strip().lower()
    return sha256_hex(normalized) if "@" in normalized else None


def hashed_phone(phone: str, default_country: str = "55") -> str | None:
    """Digits only, with the country code (Brazil's when a local number has none)."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) in (10, 11):  # DDD + number, no country code
        digits = default_country + digits
    return sha256_hex(digits) if len(digits) >= 8 else None


def user_data(
    *,
    person_id: int | None = None,
    fbc: str | None = None,
    fbp: str | None = None,
    ip: str | None = None,
    user_agent: str | None = None,
    email: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """Meta's user_data: click identifiers, IP and user agent as they are; everything that
    identifies a person SHA-256 hashed after normalisation."""
    data: dict[str, Any] = {}
    if fbc:
        data["fbc"] = fbc
    if fbp:
        data["fbp"] = fbp
    if ip:
        data["client_ip_address"] = ip
    if user_agent:
        data["client_user_agent"] = user_agent
    if person_id is not None:
        data["external_id"] = [sha256_hex(str(person_id))]
    if email and (em := hashed_email(email)):
        data["em"] = [em]
    if phone and (ph := hashed_phone(phone)):
        data["ph"] = [ph]
    return data


# --- an event as Meta takes it -------------------------------------------------------------------


def _custom_data(event: AdEvent) -> dict[str, Any] | None:
    if event.name == "ViewContent":
        return {"content_name": event.content_name, "content_type": "product"}
    order = event.order
    if order is None:
        return None
    data: dict[str, Any] = {"currency": "BRL", "value": float(event.value or order.total), "content_type": "product"}
    if order.offer is not None:
        data["content_ids"] = [order.offer.id]
        data["content_name"] = order.offer.name
    return data


def build(event: AdEvent) -> Payload | None:
    """One event as Meta takes it (a refund is not one). A lead a Click-to-WhatsApp ad brought to a
    bot with a WhatsApp business account is a `business_messaging` event on `whatsapp` with its
    ctwa_clid (Conversions API for WhatsApp). Otherwise, with a click (a browser was there) it is a
    `website` event with the click's URL, IP and user agent, which Meta requires of website events;
    without one it happened in the chat. A WhatsApp buyer's number is sent hashed (`ph`)."""
    if event.name not in ("PageView", "ViewContent", "InitiateCheckout", "Purchase"):
        return None
    buyer = event.buyer
    phone = str(buyer.person_id) if event.whatsapp and buyer.person_id is not None else None
    user = user_data(person_id=buyer.person_id, fbc=buyer.fbc, fbp=buyer.fbp, ip=buyer.ip,
                     user_agent=buyer.user_agent, phone=phone)  # fmt: skip
    doc: dict[str, Any] = {
        "event_name": event.name,
        "event_time": int(event.at.replace(tzinfo=dt.UTC).timestamp()),
        "event_id": event.event_id,
        "action_source": "website" if buyer.user_agent else "chat",
        "user_data": user,
    }
    if event.whatsapp and buyer.ctwa_clid and event.business_account:
        # Meta takes business_messaging events only with the WhatsApp business account (a Cloud bot's
        # waba_id); an Evolution number has none: its events go as chat events.
        doc["action_source"] = "business_messaging"
        doc["messaging_channel"] = "whatsapp"
        user["ctwa_clid"] = buyer.ctwa_clid
        user["whatsapp_business_account_id"] = event.business_account
        for browser_only in ("client_ip_address", "client_user_agent"):
            user.pop(browser_only, None)
    elif buyer.user_agent and buyer.source_url:
        doc["event_source_url"] = buyer.source_url
    if (custom := _custom_data(event)) is not None:
        doc["custom_data"] = custom
    return Payload(event.event_id, event.name, event.at, doc)


KIND = AdKind("meta", target="pixel_id",
              credentials={"access_token": "pixel_access_token", "test_event_code": "pixel_test_event_code"},
              required=("pixel_id", "pixel_access_token"), build=build)  # fmt: skip
