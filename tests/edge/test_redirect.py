import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from dramatiq import Message
from starlette.testclient import TestClient

import clicks
import settings
from actors.broker import broker
from catalog.schema import BotConfig
from edge.app import create_app

TOKEN_URL = re.compile(r"^https://t\.me/demo_bot\?start=([A-Za-z0-9_-]{1,64})$")
UA = "Mozilla/5.0 (Linux; Android 14)"


@pytest.fixture
def client(demo_bot: BotConfig) -> Iterator[TestClient]:
    with TestClient(create_app(poll_seconds=0.1), follow_redirects=False) as test_client:
        yield test_client


def queued_clicks() -> list[Message[Any]]:
    ids = broker.client.lrange("dramatiq:pixel", 0, -1)
    return [Message.decode(broker.client.hget("dramatiq:pixel.msgs", i)) for i in ids]


def test_a_click_redirects_to_the_bot_with_a_token_that_maps_back_to_it(client: TestClient) -> None:
    query = "fbclid=IwAR0-Ab_c&utm_source=facebook&utm_medium=cpc&utm_campaign=bf&utm_term=x&utm_content=ad1"
    response = client.get(f"/r/demo?{query}", headers={"User-Agent": UA, "Cookie": "_fbp=fb.1.1700000000000.42"})
    assert response.status_code == 302 and response.headers["cache-control"] == "no-store"
    match = TOKEN_URL.match(response.headers["location"])
    assert match is not None
    token = match.group(1)
    click = clicks.load(broker.client, "demo", token)
    assert click is not None
    assert click.fbclid == "IwAR0-Ab_c" and click.fbc == f"fb.1.{click.at_ms}.IwAR0-Ab_c"
    assert click.fbp == "fb.1.1700000000000.42" and click.user_agent == UA
    assert click.utm == {"utm_source": "facebook", "utm_medium": "cpc", "utm_campaign": "bf", "utm_term": "x",
                         "utm_content": "ad1"}  # fmt: skip
    assert click.source_url == f"http://127.0.0.1:8000/r/demo?{query}"
    ttl = broker.client.ttl(clicks.key(token))
    assert clicks.TTL_SECONDS - 5 < ttl <= clicks.TTL_SECONDS  # 7 days
    [message] = queued_clicks()  # its PageView is the workers' business
    assert message.actor_name == "pixel.click" and message.args == ("demo", json.loads(click.to_json()))


@pytest.mark.parametrize("query", ["", "fbclid=", "fbclid=a%20b&utm_source=%ff%fe", "utm_source=" + "x" * 5000, "%%%"])
def test_bad_or_missing_parameters_still_redirect(client: TestClient, query: str) -> None:
    response = client.get(f"/r/demo?{query}", headers={"Cookie": "_fbc=garbage; _fbp="})
    assert response.status_code == 302 and TOKEN_URL.match(response.headers["location"])
    [message] = queued_clicks()
    assert message.args[1]["fbc"] is None and message.args[1]["fbclid"] is None


def test_every_click_gets_its_own_token(client: TestClient) -> None:
    locations = {client.get("/r/demo?fbclid=SAME").headers["location"] for _ in range(5)}
    assert len(locations) == 5 and len(queued_clicks()) == 5


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(client: TestClient) -> None:
    client.get("/r/demo", headers={"X-Forwarded-For": "198.51.100.7"})
    [message] = queued_clicks()
    assert message.args[1]["ip"] != "198.51.100.7"  # TRUSTED_PROXIES is empty: the socket's peer counts


def test_unknown_bot_is_404_and_nothing_is_stored(client: TestClient) -> None:
    assert client.get("/r/nope?fbclid=X").status_code == 404
    assert queued_clicks() == [] and not list(broker.client.scan_iter("grimbots:click:*"))


def test_other_methods_are_405(client: TestClient) -> None:
    assert client.post("/r/demo").status_code == 405


def test_with_redis_down_the_buyer_still_reaches_the_bot(demo_bot: BotConfig) -> None:
    with TestClient(create_app(redis_url="redis://127.0.0.1:1/0", poll_seconds=0.1), follow_redirects=False) as c:
        response = c.get("/r/demo?fbclid=X")
    assert response.status_code == 302 and response.headers["location"] == "https://t.me/demo_bot"


@pytest.mark.parametrize(
    "agent",
    ["facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", "TelegramBot (like TwitterBot)",
     "WhatsApp/2.23.20.0", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"],
)  # fmt: skip
def test_crawlers_and_link_previews_are_sent_on_but_not_counted(client: TestClient, agent: str) -> None:
    response = client.get("/r/demo?fbclid=X", headers={"User-Agent": agent})
    assert response.status_code == 302 and response.headers["location"] == "https://t.me/demo_bot"
    assert queued_clicks() == [] and not list(broker.client.scan_iter("grimbots:click:*"))


def location_has_token(response: Any) -> bool:
    return TOKEN_URL.match(response.headers["location"]) is not None


def test_clicks_over_the_per_ip_limit_still_redirect_untracked(client: TestClient) -> None:
    """A flood from one address stores and enqueues nothing past the limit (30 a minute): 61
    clicks span at most two one-minute windows, so at least one is untracked."""
    responses = [client.get("/r/demo?utm_source=fb", headers={"User-Agent": UA}) for _ in range(61)]
    assert all(r.status_code == 302 for r in responses)
    tracked = sum(location_has_token(r) for r in responses)
    assert settings.CLICKS_PER_IP_PER_MINUTE <= tracked <= 2 * settings.CLICKS_PER_IP_PER_MINUTE
    assert len(queued_clicks()) == tracked == len(list(broker.client.scan_iter("grimbots:click:*")))


def test_clicks_over_the_per_bot_limit_are_untracked_whatever_their_addresses() -> None:
    store = broker.client.register_script(clicks.STORE)
    now = time.time()
    outcomes = []
    for i in range(8):  # eight addresses, one second's window
        click = clicks.capture("demo", "", peer=f"10.9.0.{i}", user_agent=UA)
        args = clicks.store_args(click.to_json(), per_ip=30, per_bot=5, ceiling_bytes=0)
        outcomes.append(store(keys=clicks.store_keys(click, now), args=args).decode())
    assert outcomes == ["tracked"] * 5 + ["limited_bot"] * 3


def test_click_data_stops_at_its_memory_ceiling(client: TestClient) -> None:
    edge = client.app.state.edge  # type: ignore[attr-defined]
    click = clicks.capture("demo", "utm_source=fb", peer="10.0.0.1", user_agent=UA)
    edge.click_ceiling = 3 * len(click.to_json())  # a tiny ceiling: three clicks
    outcomes = []
    for i in range(5):
        click = clicks.capture("demo", "utm_source=fb", peer=f"10.0.0.{i}", user_agent=UA)
        outcomes.append(client.portal.call(edge.store_click, click, click.to_json()))  # type: ignore[union-attr]
    assert outcomes == ["tracked"] * 3 + ["memory_ceiling"] * 2


def test_a_click_is_capped_in_size() -> None:
    query = "&".join(f"utm_{c}={'x' * 200}" for c in "abcdefghij") + "&fbclid=" + "F" * 500
    click = clicks.capture("demo", query, peer="10.0.0.1", user_agent="U" * 900, source_url="https://e/r?" + query)
    assert len(click.to_json().encode()) <= clicks.MAX_CLICK_BYTES
    assert click.fbclid == "F" * 500 and click.user_agent == "U" * clicks.USER_AGENT_MAX  # what Meta matches on
