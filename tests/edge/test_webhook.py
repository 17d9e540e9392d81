import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dramatiq import Message
from starlette.testclient import TestClient

from actors.broker import broker
from catalog.schema import BotConfig
from edge.app import create_app
from ops.procs import free_port
from tests.conftest import apply_config

URL = "/webhook/telegram/demo"
GOOD = {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1"}


@pytest.fixture
def metrics_port() -> int:
    return free_port()


@pytest.fixture
def client(demo_bot: BotConfig, metrics_port: int) -> Iterator[TestClient]:
    with TestClient(create_app(poll_seconds=0.1, metrics_port=metrics_port)) as test_client:
        yield test_client


def scrape(port: int) -> str:
    """/metrics from the private listener, as Prometheus reads it."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return response.text


def queued_updates() -> list[Message[Any]]:
    client = broker.client
    ids = client.lrange("dramatiq:updates", 0, -1)
    return [Message.decode(client.hget("dramatiq:updates.msgs", i)) for i in ids]


def test_update_is_enqueued_then_acked(client: TestClient) -> None:
    update = {"update_id": 1001, "message": {"text": "/start"}}
    response = client.post(URL, json=update, headers=GOOD)
    assert response.status_code == 200
    [message] = queued_updates()
    assert message.actor_name == "updates.route" and message.args == ("demo", update)
    assert message.options["redis_message_id"]


@pytest.mark.parametrize(
    "headers", [{}, {"X-Telegram-Bot-Api-Secret-Token": "wrong"}, {"X-Telegram-Bot-Api-Secret-Token": "tg-secret-1x"}]
)
def test_bad_or_missing_secret_is_401_and_nothing_enqueued(client: TestClient, headers: dict[str, str]) -> None:
    assert client.post(URL, json={"update_id": 1}, headers=headers).status_code == 401
    assert queued_updates() == []


def test_unknown_bot_is_404(client: TestClient) -> None:
    assert client.post("/webhook/telegram/nope", json={"update_id": 1}, headers=GOOD).status_code == 404


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        b'{"update_id": "12"}',
        b'{"message": {}}',
        b'{"update_id": true}',
        b'{"update_id": 1.5}',
        b"\xff\xfe",
    ],
)
def test_bad_body_is_400(client: TestClient, body: bytes) -> None:
    assert client.post(URL, content=body, headers=GOOD).status_code == 400
    assert queued_updates() == []


def test_body_over_limit_is_413_declared_or_streamed(client: TestClient) -> None:
    big = json.dumps({"update_id": 1, "pad": "x" * 1_100_000}).encode()
    assert client.post(URL, content=big, headers=GOOD).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(40):
            yield b" " * 65536

    assert client.post(URL, content=chunks(), headers=GOOD).status_code == 413
    assert queued_updates() == []


def test_redis_down_is_a_fast_503(demo_bot: BotConfig) -> None:
    with TestClient(create_app(redis_url="redis://127.0.0.1:1/0")) as down:
        started = time.monotonic()
        response = down.post(URL, json={"update_id": 1}, headers=GOOD)
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert elapsed < 2.0  # bounded by the enqueue timeout: never a hang
        ready = down.get("/ready")
        assert ready.status_code == 503 and "redis" in ready.json()["failed"]


def test_health_ready_metrics_and_unknown_routes(client: TestClient, metrics_port: int) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/ready").json()["ready"] is True
    client.post(URL, json={"update_id": 5}, headers=GOOD)
    metrics = scrape(metrics_port)
    assert 'grimbots_edge_requests_total{route="/webhook/telegram/{bot_id}",status="200"}' in metrics
    assert client.get("/nope").status_code == 404
    assert client.get(URL).status_code == 405


def test_bot_applied_while_running_is_served_within_seconds(client: TestClient) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": "s2"}
    assert client.post("/webhook/telegram/second", json={"update_id": 1}, headers=headers).status_code == 404
    apply_config(
        {
            "bots": [
                {
                    "id": "second",
                    "token": "9:X",
                    "username": "second_bot",
                    "webhook_secret": "s2",
                    "welcome": {"text": "oi"},
                }
            ]
        }
    )
    deadline = time.monotonic() + 5
    status = 404
    while time.monotonic() < deadline and status != 200:
        time.sleep(0.05)
        status = client.post("/webhook/telegram/second", json={"update_id": 1}, headers=headers).status_code
    assert status == 200


def test_spliced_message_is_what_dramatiq_would_encode() -> None:
    from actors import updates
    from edge.enqueue import message_bytes

    update = {"update_id": 9, "message": {"text": 'Olá \u2028 "quoted" 😀', "chat": {"id": -1}}}
    raw = json.dumps(update, ensure_ascii=False, indent=1)
    redis_id, data = message_bytes(updates.route, ("demo",), raw)
    ours = Message.decode(data)
    theirs = updates.route.message("demo", update)
    assert (ours.queue_name, ours.actor_name, ours.args, ours.kwargs) == (
        theirs.queue_name, theirs.actor_name, theirs.args, theirs.kwargs)  # fmt: skip
    assert ours.message_id == redis_id == ours.options["redis_message_id"]
    assert abs(ours.message_timestamp - theirs.message_timestamp) < 5_000


def test_metrics_show_queues_and_shared_worker_counters(client: TestClient, metrics_port: int) -> None:
    from actors.metrics import SharedCounters

    client.post(URL, json={"update_id": 6}, headers=GOOD)
    client.post(URL, json={"update_id": 7}, headers=GOOD)
    worker_counters = SharedCounters(broker.client)
    worker_counters.inc(
        "grimbots_worker_messages_total", {"actor": "updates.route", "queue": "updates", "outcome": "done"}, 5
    )
    worker_counters.flush()
    text = scrape(metrics_port)
    assert 'grimbots_queue_ready{queue="updates"} 2.0' in text
    assert 'grimbots_queue_dead{queue="updates"} 0.0' in text
    assert 'grimbots_worker_messages_total{actor="updates.route",outcome="done",queue="updates"} 5.0' in text
    assert "grimbots_metrics_redis_up 1.0" in text


def test_public_metrics_are_refused_without_the_token(client: TestClient, metrics_port: int) -> None:
    """Revenue per seller is on /metrics: the public listener serves it to no one by default."""
    assert client.get("/metrics").status_code == 404
    assert "grimbots_edge_requests_total" in scrape(metrics_port)


def test_public_metrics_with_a_bearer_token(demo_bot: BotConfig) -> None:
    with TestClient(create_app(poll_seconds=0.1, metrics_token="scrape-me")) as public:
        assert public.get("/metrics").status_code == 401
        assert public.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert public.get("/metrics", headers={"Authorization": "Bearer ção".encode()}).status_code == 401
        ok = public.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert ok.status_code == 200 and "grimbots_edge_requests_total" in ok.text
