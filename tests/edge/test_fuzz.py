"""Every edge route under fuzzed requests: malformed and nested JSON, wrong types, any byte a header
can carry, huge bodies, correctly signed junk. No request may get a 5xx, and a refused request
(any 4xx) enqueues nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from actors.broker import QUEUES, broker
from catalog.schema import BotConfig
from edge.app import create_app
from gateways.payments.sandbox import sign
from tests.conftest import once

PATHS = [
    "/webhook/telegram/demo",
    "/webhook/telegram/demo/",
    "/webhook/telegram/nope",
    "/webhook/telegram/",
    "/webhook/payment/main",
    "/webhook/payment/main/",
    "/webhook/payment/nope",
    "/r/demo",
    "/r/demo/",
    "/r/nope",
    "/health/",
    "/metrics/",
]
HEADER_NAMES = [
    "x-telegram-bot-api-secret-token",
    "x-sandbox-signature",
    "x-signature",
    "x-request-id",
    "content-type",
    "cookie",
    "user-agent",
    "x-forwarded-for",
    "authorization",
]
# What an HTTP/1.1 header value can hold once on the wire: any byte but CR, LF and NUL.
header_value = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b""))
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
telegram_like = st.fixed_dictionaries(
    {"update_id": st.one_of(st.integers(), st.integers(min_value=2**63 - 2, max_value=2**70), json_value)},
    optional={"message": json_value, "callback_query": json_value, "my_chat_member": json_value},
)
sandbox_like = st.fixed_dictionaries(
    {"event": st.one_of(st.just("charge.paid"), json_value), "charge_id": st.one_of(st.just("A" * 25), json_value)},
    optional={"amount": st.one_of(st.just("19.90"), json_value)},
)
body = st.one_of(
    st.binary(max_size=200),
    json_value.map(lambda v: json.dumps(v).encode()),
    telegram_like.map(lambda v: json.dumps(v).encode()),
    sandbox_like.map(lambda v: json.dumps(v).encode()),
    st.integers(min_value=1, max_value=200_000).map(lambda n: b'{"update_id": 1, "x": ' + b"[" * n + b"]" * n + b"}"),
    st.text(max_size=50).map(lambda t: ('{"update_id": 5, "message": {"text": "' + t + '"}}').encode(errors="replace")),
)


@pytest.fixture
def client(demo_bot: BotConfig) -> Iterator[TestClient]:
    with TestClient(create_app(poll_seconds=60), raise_server_exceptions=False) as test_client:
        yield test_client


def queued() -> int:
    return sum(int(broker.client.llen(f"dramatiq:{q}")) for q in QUEUES)


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["POST", "POST", "GET", "PUT"]),
    headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_value, max_size=5),
    content=body,
    good_secret=st.booleans(),
    good_signature=st.booleans(),
    query=st.binary(max_size=60),
)
@once
def test_no_request_gets_a_5xx_and_refused_ones_enqueue_nothing(
    client: TestClient,
    path: str,
    method: str,
    headers: dict[str, bytes],
    content: bytes,
    good_secret: bool,
    good_signature: bool,
    query: bytes,
) -> None:
    if good_secret:
        headers["x-telegram-bot-api-secret-token"] = b"tg-secret-1"
    if good_signature:  # correctly signed junk: authenticated, then it must still be refused cleanly
        headers["x-sandbox-signature"] = sign("whsec-1", content).encode()
    url = path + ("?" + quote_from_bytes(query, safe="=&") if query else "")
    before = queued()
    response = client.request(method, url, content=content, headers=list(headers.items()), follow_redirects=False)
    assert response.status_code < 500, (path, response.status_code, response.text)
    if 400 <= response.status_code < 500:
        assert queued() == before


@pytest.mark.parametrize("path", ["/webhook/telegram/demo/", "/webhook/payment/main/", "/r/demo/", "/health/"])
def test_a_trailing_slash_is_404(client: TestClient, path: str) -> None:
    assert client.request("POST" if "webhook" in path else "GET", path).status_code == 404


@pytest.mark.parametrize("update_id", [0, -1, 2**63, 2**64 + 5])
def test_update_id_outside_bigint_is_400(client: TestClient, update_id: int) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}
    response = client.post("/webhook/telegram/demo", content=json.dumps({"update_id": update_id}), headers=headers)
    assert response.status_code == 400 and queued() == 0


def test_non_ascii_signatures_are_401_not_500(client: TestClient) -> None:
    body = json.dumps({"event": "charge.paid", "charge_id": "A" * 25}).encode()
    for name in ("x-sandbox-signature", "x-telegram-bot-api-secret-token"):
        path = "/webhook/payment/main" if name.startswith("x-sandbox") else "/webhook/telegram/demo"
        response = client.post(path, content=body, headers=[(name, "assinatura-é-ção".encode("latin-1"))])
        assert response.status_code == 401
    assert queued() == 0


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}
    nested = b'{"update_id": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert client.post("/webhook/telegram/demo", content=nested, headers=headers).status_code == 400
    signed = {"X-Sandbox-Signature": sign("whsec-1", nested[:-1] + b"}")}
    assert client.post("/webhook/payment/main", content=nested, headers=signed).status_code == 400


@pytest.mark.parametrize(
    "doc",
    [
        {"event": ["charge.paid"], "charge_id": "A" * 25},
        {"event": "charge.paid", "charge_id": "A" * 25, "amount": "NaN"},
    ],
)
def test_signed_junk_sandbox_notification_is_400(client: TestClient, doc: dict[str, object]) -> None:
    content = json.dumps(doc).encode()
    headers = {"X-Sandbox-Signature": sign("whsec-1", content)}
    response = client.post("/webhook/payment/main", content=content, headers=headers)
    assert response.status_code == 400 and queued() == 0
