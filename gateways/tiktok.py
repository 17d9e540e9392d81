"""Gateway to TikTok's Events API: `POST {TIKTOK_API_BASE}/open_api/v1.3/event/track/` with header
`Access-Token`, body `{"event_source": "web", "event_source_id": <pixel code>, "data": [...]}`.

TikTok answers HTTP 200 with `{"code": 0, "message": "OK", "request_id": ...}` when it took the
events; any other `code` is an error: rate limits (40100) and its own failures (5xxxx) are
transient, the rest (a bad token, a bad parameter) permanent, with TikTok's message kept. The
access token travels in a header: no message here carries it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from gateways.ads import AdEvent, AdKind, DestinationPermanent, DestinationTransient, Payload, Sent, sha256_hex
from gateways.http import network_errors, pooled_client

MAX_BATCH = 1000
RATE_LIMITED = {40100, 40016}


def default_client(timeout: float = 10.0) -> httpx.Client:
    return pooled_client(timeout, max_connections=20)


def tiktok_event(name: str, event_id: str, at: dt.datetime, *, user_id: int | None, ttclid: str | None, ttp: str | None,
          ip: str | None, user_agent: str | None, page_url: str | None,
          properties: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """One event as TikTok takes it: `external_id` is the SHA-256 of the chat user id (as Meta's);
    ttclid, _ttp, IP and user agent as they came with the click."""
    user: dict[str, Any] = {}
    if ttclid:
        user["ttclid"] = ttclid
    if ttp:
        user["ttp"] = ttp
    if user_id is not None:
        user["external_id"] = sha256_hex(str(user_id))
    if ip:
        user["ip"] = ip
    if user_agent:
        user["user_agent"] = user_agent
    doc: dict[str, Any] = {"event": name, "event_time": int(at.replace(tzinfo=dt.UTC).timestamp()),
                           "event_id": event_id, "user": user}  # fmt: skip
    if page_url:
        doc["page"] = {"url": page_url}
    if properties:
        doc["properties"] = properties
    return doc


class TikTokGateway:
    """TikTok's Events API as an ad destination: target = the pixel code; credentials
    `access_token` and, optionally, `test_event_code`."""

    name = "tiktok"
    max_batch = MAX_BATCH
    ordered = False

    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    def send(self, target: str, credentials: Mapping[str, str | None], payloads: Sequence[dict[str, Any]]) -> Sent:
        if not 1 <= len(payloads) <= MAX_BATCH:
            raise ValueError(f"a TikTok Events API request takes 1 to {MAX_BATCH} events, not {len(payloads)}")
        body: dict[str, Any] = {"event_source": "web", "event_source_id": target, "data": list(payloads)}
        if credentials.get("test_event_code"):
            body["test_event_code"] = credentials["test_event_code"]
        headers = {"Access-Token": credentials.get("access_token") or ""}
        with network_errors("tiktok", DestinationTransient):
            response = self.client.post(f"{self.base_url}/open_api/v1.3/event/track/", json=body, headers=headers)
        status = response.status_code
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if status == 429 or status >= 500:
            raise DestinationTransient(f"tiktok: HTTP {status}")
        code = answer.get("code") if isinstance(answer, dict) else None
        message = str(answer.get("message") or "")[:300] if isinstance(answer, dict) else ""
        if status >= 400 or not isinstance(code, int):
            raise DestinationPermanent(f"tiktok: HTTP {status}: {message}".rstrip(": "), f"tiktok: HTTP {status}")
        if code == 0:
            request_id = answer.get("request_id") if isinstance(answer, dict) else None
            return Sent(len(payloads), request_id if isinstance(request_id, str) else None)
        if code in RATE_LIMITED or code >= 50000:
            raise DestinationTransient(f"tiktok: code {code}: {message}", f"tiktok: code {code}")
        raise DestinationPermanent(f"tiktok: code {code}: {message}", f"tiktok: code {code}")


NAMES = {"ViewContent": "ViewContent", "InitiateCheckout": "InitiateCheckout", "Purchase": "CompletePayment"}


def build(event: AdEvent) -> Payload | None:
    """A /start, a checkout or a purchase (TikTok's CompletePayment) as TikTok takes it."""
    name = NAMES.get(event.name)
    if name is None:
        return None
    properties: dict[str, Any] = {"content_type": "product"}
    order = event.order
    if order is not None:
        properties = {"currency": "BRL", "value": float(event.value or order.total), "content_type": "product"}
        if order.offer is not None:
            properties["contents"] = [{"content_id": order.offer.id, "content_name": order.offer.name,
                                       "quantity": 1, "price": float(order.total)}]  # fmt: skip
    buyer = event.buyer
    doc = tiktok_event(name, event.event_id, event.at, user_id=buyer.person_id, ttclid=buyer.ttclid, ttp=buyer.ttp,
                       ip=buyer.ip, user_agent=buyer.user_agent, page_url=buyer.source_url,
                       properties=properties)  # fmt: skip
    return Payload(event.event_id, name, event.at, doc)


KIND = AdKind("tiktok", target="tiktok_pixel_code", credentials={"access_token": "tiktok_access_token"},
              required=("tiktok_pixel_code", "tiktok_access_token"), build=build)  # fmt: skip
