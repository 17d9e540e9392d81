"""Redirect pools (CONTRACT §11): configuration, GET /p/{pool_id} by weight among healthy bots, a
refused token taking its bot out, getMe bringing it back, and `ops pools`."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import catalog
from actors import health, pixel, pools, runtime
from actors.broker import broker
from actors.channels import Channels
from catalog.snapshot import load_pools
from db.models import Click
from edge.app import create_app
from gateways.evolution import EvolutionGateway
from gateways.telegram import TelegramGateway, TelegramPermanent
from gateways.whatsapp_cloud import CloudGateway
from ops.cli import cli
from tests.conftest import TELEGRAM_BASE, FakeTelegramTransport, apply_config, demo_with, telegram_error


def three_bots(pools_doc: list[dict[str, Any]]) -> dict[str, Any]:
    data = demo_with(("demo2", 2), ("demo3", 3))
    data["pools"] = pools_doc
    return data


POOL = [{"id": "campanha1", "bots": [{"bot": "demo", "weight": 2}, "demo2", {"bot": "demo3"}]}]


@pytest.fixture
def pool() -> None:
    apply_config(three_bots(POOL))


@pytest.fixture
def client(pool: None) -> Iterator[TestClient]:
    with TestClient(create_app(poll_seconds=0.05), follow_redirects=False) as test_client:
        yield test_client


def test_pools_are_applied_with_their_weights(pool: None) -> None:
    assert load_pools()["campanha1"].members == (("demo", 2), ("demo2", 1), ("demo3", 1))
    changed = apply_config(three_bots([{"id": "campanha1", "bots": ["demo3"]}]))
    assert changed == ["updated pool campanha1 (GET /p/campanha1)"]
    assert load_pools()["campanha1"].members == (("demo3", 1),)


@pytest.mark.parametrize(
    ("pools_doc", "key"),
    [
        ([{"id": "p", "bots": ["nope"]}], "pools[0].bots[0]"),
        ([{"id": "p", "bots": []}], "pools[0].bots"),
        ([{"id": "p", "bots": [{"bot": "demo", "weight": 0}]}], "pools[0].bots[0].weight"),
        ([{"id": "p", "bots": [{"bot": "demo", "weight": "2"}]}], "pools[0].bots[0].weight"),
        ([{"id": "p", "bots": [{"bot": "demo", "share": 2}]}], "pools[0].bots[0].share"),
        ([{"id": "p", "bots": ["demo", "demo"]}], "pools[0].bots[1]"),
        ([{"id": "p b", "bots": ["demo"]}], "pools[0].id"),
        ([{"id": "p", "bots": ["demo"], "mode": "x"}], "pools[0].mode"),
        ([{"id": "p", "bots": ["demo"]}, {"id": "p", "bots": ["demo2"]}], "pools[1].id"),
    ],
)
def test_a_bad_pool_names_its_key(pools_doc: list[dict[str, Any]], key: str) -> None:
    with pytest.raises(catalog.ConfigError) as exc:
        catalog.parse(three_bots(pools_doc), set())
    assert exc.value.key == key


def test_a_pool_may_name_a_bot_applied_before() -> None:
    apply_config(three_bots([]))
    parsed = catalog.parse({"pools": [{"id": "p", "bots": ["demo2"]}]}, set(), {"demo", "demo2"})
    assert parsed.pools[0].members == (("demo2", 1),)


def chosen(response: httpx.Response) -> str:
    assert response.status_code == 302, response.text
    return response.headers["location"].split("/")[3].split("?")[0]


def test_clicks_are_spread_by_weight_with_the_click_captured(client: TestClient) -> None:
    spread = Counter(chosen(client.get("/p/campanha1?utm_campaign=bf")) for _ in range(800))
    assert set(spread) == {"demo_bot", "demo2_bot", "demo3_bot"}
    # weights 2:1:1 → 400, 200, 200 expected; within 5 standard deviations (a false alarm ~1 in 10^6)
    assert 330 <= spread["demo_bot"] <= 470 and all(139 <= spread[b] <= 261 for b in ("demo2_bot", "demo3_bot"))
    ids = broker.client.lrange("dramatiq:pixel", 0, 0)
    from dramatiq import Message

    message = Message.decode(broker.client.hget("dramatiq:pixel.msgs", ids[0]))
    doc = message.args[1]
    assert doc["pool"] == "campanha1" and doc["utm"] == {"utm_campaign": "bf"}
    assert doc["source_url"].endswith("/p/campanha1?utm_campaign=bf")
    pixel.record_click(message.args[0], doc)  # the worker's part: the click row knows its pool
    assert Click.get(Click.token == doc["token"]).pool_id == "campanha1"


def test_unknown_pool_is_404(client: TestClient) -> None:
    assert client.get("/p/nope").status_code == 404
    assert client.get("/p/campanha1/").status_code == 404


def wait_until(condition: Any, seconds: float = 3.0) -> None:
    ends = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < ends, "timed out"
        time.sleep(0.02)


def unused_whatsapp() -> tuple[EvolutionGateway, CloudGateway]:
    client = httpx.Client(transport=httpx.MockTransport(lambda request: httpx.Response(500)))
    return EvolutionGateway(client), CloudGateway(client, "http://graph.test", "v21.0")


def refusing_gateway(fake: FakeTelegramTransport) -> TelegramGateway:
    return TelegramGateway(httpx.Client(transport=httpx.MockTransport(fake)), TELEGRAM_BASE,
                           on_token_refused=runtime.token_refused)  # fmt: skip


def test_a_refused_token_takes_the_bot_out_of_every_pool_until_get_me_succeeds(
    client: TestClient, fake_telegram: FakeTelegramTransport
) -> None:
    from actors import runtime

    runtime.catalog().refresh()
    fake_telegram.queue("sendMessage", telegram_error(401, "Unauthorized"))
    with pytest.raises(TelegramPermanent):
        refusing_gateway(fake_telegram).call("123456:TEST", "sendMessage", {"chat_id": 1, "text": "x"})
    assert set(health.unhealthy(broker.client)) == {"demo"}

    def demo_out() -> bool:
        return all(chosen(client.get("/p/campanha1")) != "demo_bot" for _ in range(40))

    wait_until(demo_out)  # within a poll of the edge
    # getMe still refused: still out; then accepted: back in
    fake_telegram.queue("getMe", telegram_error(401, "Unauthorized"))
    assert pools.recheck(Channels(refusing_gateway(fake_telegram), *unused_whatsapp())) == {"healthy": 0,
                                                                                           "unhealthy": 1}  # fmt: skip
    assert health.unhealthy(broker.client)["demo"]["checked_at"] is not None
    assert pools.recheck(Channels(refusing_gateway(fake_telegram), *unused_whatsapp())) == {"healthy": 1,
                                                                                           "unhealthy": 0}  # fmt: skip
    wait_until(lambda: any(chosen(client.get("/p/campanha1")) == "demo_bot" for _ in range(40)))


def test_no_healthy_bot_is_503_and_ops_pools_says_so(client: TestClient) -> None:
    for bot_id in ("demo", "demo2", "demo3"):
        health.mark_unhealthy(broker.client, bot_id, 401, "Unauthorized")
    wait_until(lambda: client.get("/p/campanha1").status_code == 503)
    result = CliRunner().invoke(cli, ["pools", "--json"])
    [shown] = json.loads(result.output)
    assert shown["id"] == "campanha1" and shown["healthy_bots"] == 0
    assert [(m["bot"], m["weight"], m["healthy"], m["error"]) for m in shown["bots"]] == [
        ("demo", 2, False, "Unauthorized"),
        ("demo2", 1, False, "Unauthorized"),
        ("demo3", 1, False, "Unauthorized"),
    ]
    assert "NO HEALTHY BOT" in CliRunner().invoke(cli, ["pools"]).output
    assert json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)["unhealthy_bots"] == [
        "demo",
        "demo2",
        "demo3",
    ]
    assert "UNHEALTHY" in CliRunner().invoke(cli, ["status"]).output
    from prometheus_client import REGISTRY  # the gauges are the edge process's own

    assert REGISTRY.get_sample_value("grimbots_pool_healthy_bots", {"pool": "campanha1"}) == 0
    assert REGISTRY.get_sample_value("grimbots_bot_healthy", {"bot": "demo"}) == 0


def test_other_refusals_do_not_touch_health(pool: None, fake_telegram: FakeTelegramTransport) -> None:
    from actors import runtime

    runtime.catalog().refresh()
    fake_telegram.queue("sendMessage", telegram_error(403, "Forbidden: bot was blocked by the user"),
                        telegram_error(400, "Bad Request: chat not found"))  # fmt: skip
    gateway = refusing_gateway(fake_telegram)
    for _ in range(2):
        with pytest.raises(TelegramPermanent):
            gateway.call("123456:TEST", "sendMessage", {"chat_id": 1, "text": "x"})
    assert health.unhealthy(broker.client) == {}
