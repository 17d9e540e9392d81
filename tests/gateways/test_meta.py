import hashlib
import json
from typing import Any

import httpx
import pytest

from gateways.meta import MetaGateway, MetaPermanent, MetaTransient, hashed_email, hashed_phone, user_data

TOKEN = "EAAB-secret-token"


def gateway(handler: Any) -> MetaGateway:
    return MetaGateway(httpx.Client(transport=httpx.MockTransport(handler)), "https://graph.test/", "v21.0")


def test_events_go_to_the_pixel_with_token_and_test_code() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"events_received": 2, "fbtrace_id": "AbC"})

    events = [{"event_name": "PageView", "event_id": "a"}, {"event_name": "Purchase", "event_id": "b"}]
    sent = gateway(handler).send_events("123", TOKEN, events, "TEST42")
    [request] = seen
    assert request.method == "POST" and request.url.path == "/v21.0/123/events"
    assert request.url.params["access_token"] == TOKEN
    assert json.loads(request.content) == {"data": events, "test_event_code": "TEST42"}
    assert sent.events_received == 2 and sent.fbtrace_id == "AbC"
    gateway(handler).send_events("123", TOKEN, events)
    assert "test_event_code" not in json.loads(seen[-1].content)


def test_a_400_is_permanent_with_metas_message_and_no_token() -> None:
    error = {"error": {"message": "Invalid parameter", "type": "OAuthException", "code": 100,
                       "error_subcode": 2804003, "fbtrace_id": "x"}}  # fmt: skip

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json=error)

    with pytest.raises(MetaPermanent) as caught:
        gateway(handler).send_events("123", TOKEN, [{"event_name": "PageView"}])
    assert str(caught.value) == "meta: HTTP 400: OAuthException 100 2804003: Invalid parameter"
    assert caught.value.summary == "meta: HTTP 400: OAuthException 100 2804003"  # for log lines
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(500, json={"error": {"message": "Service unavailable", "code": 2}}),
        httpx.Response(503, text="<html>down</html>"),
        httpx.Response(429, json={}),
        httpx.Response(200, text="not json"),
        httpx.ReadTimeout("timed out"),
        httpx.ConnectError(f"https://graph.test/v21.0/123/events?access_token={TOKEN}"),
    ],
)
def test_5xx_429_and_network_errors_are_transient_without_the_url(reply: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(reply, Exception):
            raise reply
        return reply  # type: ignore[no-any-return]

    with pytest.raises(MetaTransient) as caught:
        gateway(handler).send_events("123", TOKEN, [{"event_name": "PageView"}])
    assert TOKEN not in str(caught.value)


def test_batches_are_one_to_a_thousand_events() -> None:
    meta = gateway(lambda request: httpx.Response(200, json={"events_received": 1}))
    with pytest.raises(ValueError):
        meta.send_events("1", TOKEN, [])
    with pytest.raises(ValueError):
        meta.send_events("1", TOKEN, [{}] * 1001)


def test_user_data_hashes_identifiers_and_leaves_click_data_as_is() -> None:
    data = user_data(person_id=901, fbc="fb.1.1.ABC", fbp="fb.1.2.3", ip="203.0.113.9", user_agent="UA",
                     email="  Bia@Example.COM ", phone="(11) 99999-8888")  # fmt: skip
    assert data == {
        "fbc": "fb.1.1.ABC",
        "fbp": "fb.1.2.3",
        "client_ip_address": "203.0.113.9",
        "client_user_agent": "UA",
        "external_id": [hashlib.sha256(b"901").hexdigest()],
        "em": [hashlib.sha256(b"bia@example.com").hexdigest()],
        "ph": [hashlib.sha256(b"5511999998888").hexdigest()],
    }
    assert user_data() == {}
    assert hashed_email("not an email") is None and hashed_phone("12") is None
    assert hashed_phone("+55 11 99999-8888") == hashlib.sha256(b"5511999998888").hexdigest()
