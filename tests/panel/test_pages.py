"""The seller's read pages (issue: seller accounts): the dashboard's charts per day and per campaign
hold `ops report`'s numbers; sales filter by bot, state and period, export as CSV and open each
sale's lead journey; bots show their health, tracked link with UTMs, subscriptions and broadcasts;
the account page's e-mail and API keys ask the password again. And the isolation walk: every route
of the panel, called with another account's ids, answers 404 (or nothing of theirs)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Iterator

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from accounts import api_keys, passwords
from actors.health import UNHEALTHY, mark_unhealthy
from db.database import utcnow
from db.models import Account, ApiKey, AuditEntry, Broadcast, Charge, Lead, Pool
from gateways import media
from panel.app import PANEL, make_app
from reports import funnel as report
from tests.ops.test_report import data  # noqa: F401 - the fixture: bots demo and other, leads, clicks, charges
from tests.panel.test_panel import PASSWORD, client, csrf, login, make_seller, shops  # noqa: F401 - fixture

OWNER = "dono@loja.com.br"


@pytest.fixture
def owner(client: TestClient, data: None) -> Iterator[TestClient]:  # noqa: F811
    """The seller whose bots `data` made (the default account), logged in."""
    Account.update(email=OWNER, password_hash=passwords.hashed(PASSWORD)).where(Account.slug == "default").execute()
    assert login(client, OWNER) == 303
    yield client


def test_each_campaign_is_charted_over_the_days_with_the_reports_numbers(owner: TestClient) -> None:
    page = owner.get("/", params={"bot": "demo", "days": "7"}).text
    charts = dict(re.findall(r'data-chart="(Campanha [^"]+)"(.*?)</svg>', page, re.S))
    assert "Campanha bf por dia — demo" in charts and "Campanha natal por dia — demo" in charts
    bars = re.findall(r'data-series="([^"]+)" data-label="([\d-]+)" data-value="([\d.]+)"',
                      charts["Campanha bf por dia — demo"])  # fmt: skip
    drawn = {(series, day): float(value) for series, day, value in bars}
    expected = report.over_time("utm_campaign", "demo", 7)["bf"]
    assert len({day for _, day in drawn}) == 7
    for row in expected:
        assert drawn[("cliques", row.key)] == (row.clicks or 0) and drawn[("pagos", row.key)] == row.paid
    assert 'data-chart="Funil por dia — demo"' in page and 'data-chart="Faturamento por dia — demo"' in page
    assert 'data-figure="revenue">R$ 34,90' in page  # refunds apart, not in revenue
    everything = owner.get("/", params={"days": "30"}).text
    assert 'data-bot="demo"' in everything and 'data-bot="other"' in everything
    assert 'data-figure="paid">4<' in everything


def test_sales_filter_export_as_csv_and_open_a_journey(owner: TestClient) -> None:
    paid = owner.get("/sales", params={"state": "paid", "days": "7"}).text
    assert paid.count("data-charge=") == 3  # demo's two and other's one; the 40-day-old one is out of the period
    assert owner.get("/sales", params={"state": "paid", "days": "90"}).text.count("data-charge=") == 4
    exported = owner.get("/sales.csv", params={"bot": "demo", "days": "30"})
    assert exported.headers["content-type"].startswith("text/csv") and "attachment" in exported.headers[
        "content-disposition"]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["bot"] for r in rows} == {"demo"} and len(rows) == 5  # the 40-day-old one is out of the period
    assert {r["state"] for r in rows} == {"paid", "expired", "refunded", "creating"}
    assert {r["paid_amount"] for r in rows if r["state"] == "paid"} == {"19.90", "15.00"}
    lead = Lead.get(Lead.id == Charge.get(Charge.status == "refunded").lead_id)
    refunded = Charge.get(Charge.status == "refunded")
    journey = owner.get(f"/sales/{refunded.id}").text
    steps = re.findall(r'data-step="(\w+)"', journey)
    assert steps[:2] == ["click", "start"] and steps.count("charge") == 2 and "refunded" in steps
    assert "utm_campaign: bf" in journey and lead.first_name in journey
    assert owner.get("/sales/999999").status_code == 404 and owner.get("/sales/x1").status_code == 404


def test_bots_show_health_today_and_a_tracked_link_with_utms(owner: TestClient) -> None:
    mark_unhealthy(PANEL.redis, "other", 401, "Unauthorized")
    try:
        page = owner.get("/bots").text
        assert re.search(r'data-bot="demo".*?data-health="ok"', page, re.S)
        assert re.search(r'data-bot="other".*?data-health="down".*?token', page, re.S)
    finally:
        PANEL.redis.hdel(UNHEALTHY, "other")
    bot = owner.get("/bots/demo", params={"utm_source": "facebook", "utm_campaign": "black friday"}).text
    assert "/r/demo?utm_source=facebook&amp;utm_campaign=black+friday" in bot
    assert 'data-figure="active">0<' in bot and "Nenhuma transmissão" in bot


def test_the_email_and_api_keys_ask_the_password_again(owner: TestClient) -> None:
    page = owner.get("/account").text
    refused = owner.post("/account/email", data={"csrf": csrf(page), "email": "novo@loja.com.br", "current": "nope"})
    assert refused.status_code == 422 and Account.get(Account.slug == "default").email == OWNER
    owner.post("/account/email", data={"csrf": csrf(page), "email": "Novo@Loja.com.br", "current": PASSWORD})
    assert Account.get(Account.slug == "default").email == "novo@loja.com.br"
    assert owner.post("/account/keys", data={"csrf": csrf(page), "current": "nope"}).status_code == 422
    made = owner.post("/account/keys", data={"csrf": csrf(page), "current": PASSWORD}).text
    key = re.search(r"<code data-new-key>(gbk_\w+_[\w-]+)</code>", made).group(1)  # type: ignore[union-attr]
    api = TestClient(make_app(), base_url="http://127.0.0.1:8100")
    assert api.get("/api/v1/bots", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert key not in owner.get("/account").text  # shown once
    owner.post("/account/keys/revoke", data={"csrf": csrf(page), "prefix": key.split("_")[1], "current": PASSWORD})
    assert api.get("/api/v1/bots", headers={"Authorization": f"Bearer {key}"}).status_code == 401
    actions = [e.action for e in AuditEntry.select().order_by(AuditEntry.id)]
    assert {"e-mail changed", "api key created", "api key revoked"} <= set(actions)


# --- the isolation walk -------------------------------------------------------------------------

# Every route of the panel (the API has its own walk in test_api.py) → what a logged-in seller gets
# when it names another account's objects: 404 where it carries their id; for the rest, the
# seller's own page (and nothing of theirs). A route missing here fails the test.
WALK: dict[tuple[str, str], int] = {
    ("GET", "/health"): 200,
    ("GET", "/login"): 303,  # logged in already: to the panel
    ("POST", "/login"): 401,  # their e-mail, our password
    ("POST", "/login/code"): 303,  # no second factor pending: back to the login
    ("GET", "/signup"): 404,  # sign-up by invite only
    ("POST", "/signup"): 404,
    ("GET", "/signup/{token}"): 404,  # their invite's token is unknown to us: no good
    ("POST", "/signup/{token}"): 404,
    ("GET", "/forgot"): 200,
    ("POST", "/forgot"): 404,  # no SMTP_URL: no mail
    ("GET", "/reset/{token}"): 404,
    ("POST", "/reset/{token}"): 404,
    ("GET", "/"): 404,  # ?bot=theirs
    ("GET", "/sales"): 404,
    ("GET", "/sales.csv"): 404,
    ("GET", "/sales/{charge_id}"): 404,
    ("POST", "/sales/{charge_id}/purchase"): 404,
    ("GET", "/bots"): 200,
    ("GET", "/media/{name}"): 404,  # their upload
    ("GET", "/bots/{bot_id}"): 404,
    ("GET", "/bots/new"): 200,
    ("POST", "/bots/new"): 422,  # no token given
    ("GET", "/bots/new/whatsapp"): 404,  # no channel asked
    ("POST", "/bots/new/whatsapp"): 404,
    ("GET", "/bots/{bot_id}/edit"): 404,
    ("POST", "/bots/{bot_id}/edit"): 404,
    ("POST", "/bots/{bot_id}/webhook"): 404,
    ("GET", "/bots/{bot_id}/selling"): 404,
    ("POST", "/bots/{bot_id}/selling"): 404,
    ("GET", "/bots/{bot_id}/texts"): 404,
    ("GET", "/bots/{bot_id}/channel"): 404,
    ("POST", "/bots/{bot_id}/channel"): 404,
    ("GET", "/bots/{bot_id}/funnel.toml"): 404,
    ("POST", "/bots/{bot_id}/funnel"): 404,
    ("POST", "/bots/{bot_id}/texts"): 404,
    ("GET", "/pools"): 200,
    ("GET", "/pools/new"): 200,
    ("POST", "/pools/new"): 404,  # their bot in the pool
    ("GET", "/pools/{pool_id}"): 404,
    ("POST", "/pools/{pool_id}"): 404,
    ("GET", "/broadcasts"): 404,  # ?bot=theirs
    ("POST", "/broadcasts"): 404,
    ("POST", "/broadcasts/{broadcast_id}/stop"): 404,
    ("GET", "/gateways"): 200,
    ("GET", "/gateways/new"): 404,  # no kind asked
    ("POST", "/gateways/new"): 404,
    ("GET", "/gateways/{gateway_id}"): 404,
    ("POST", "/gateways/{gateway_id}"): 404,
    ("POST", "/gateways/{gateway_id}/test"): 404,
    ("GET", "/account"): 200,
    ("POST", "/account/password"): 422,
    ("POST", "/account/email"): 422,  # their e-mail is taken: refused, and nothing of theirs shown
    ("GET", "/account/2fa"): 200,
    ("POST", "/account/2fa"): 303,  # no valid secret: back to the setup
    ("POST", "/account/2fa/disable"): 422,
    ("POST", "/account/2fa/codes"): 303,
    ("POST", "/account/keys"): 200,
    ("POST", "/account/keys/revoke"): 422,  # their key's prefix: not ours to revoke
    ("GET", "/operator/accounts"): 404,
    ("POST", "/operator/accounts/{slug}/suspend"): 404,
    ("POST", "/operator/accounts/{slug}/resume"): 404,
    ("GET", "/operator/audit"): 404,
    ("GET", "/operator/system"): 404,
    ("POST", "/logout/everywhere"): 303,
    ("POST", "/logout"): 303,
}


def test_every_route_with_another_accounts_ids_answers_404_and_shows_nothing_of_theirs(client: TestClient) -> None:  # noqa: F811
    shops()  # acme and beta: a bot, a gateway and a paid sale each
    beta = Account.get(Account.slug == "beta")
    theirs_key = api_keys.create(beta)
    prefix = theirs_key.split("_")[1]
    charge = Charge.get(Charge.bot_id == "beta-bot").id
    pool = Pool.create(id="beta-pool", account=beta, members=[["beta-bot", 1]])
    broadcast = Broadcast.create(bot_id="beta-bot", segment="all", text="Oferta da Beta", state="scheduled",
                                 starts_at=utcnow() + dt.timedelta(days=1))  # fmt: skip
    theirs_media = media.store(b"\x89PNG\r\n\x1a\n" + b"beta" * 50)
    Broadcast.update(media_url=theirs_media).where(Broadcast.id == broadcast.id).execute()
    ids = {"name": theirs_media.removeprefix("media:"), "bot_id": "beta-bot", "gateway_id": "beta-main",
           "charge_id": str(charge), "slug": "beta",
           "token": "their-token", "pool_id": pool.id, "broadcast_id": str(broadcast.id)}  # fmt: skip
    assert login(client, "ana@acme.com.br") == 303
    routes = [(m, r.path) for r in make_app().routes if isinstance(r, Route) and not r.path.startswith("/api/")
              for m in sorted((r.methods or set()) - {"HEAD"})]  # fmt: skip
    assert sorted(routes) == sorted(WALK), "a route of the panel is missing from the walk (or gone from the app)"
    form = {"bot": "beta-bot", "bots-0-bot": "beta-bot",
            "slug": "beta", "prefix": prefix, "email": "bia@beta.com.br", "current": PASSWORD,
            "password": "x", "confirm": "y", "code": "000000", "secret": "beta", "next": "/"}  # fmt: skip
    for method, path in WALK:  # in order: the logouts last
        url = path.format(**ids)
        if method == "GET":
            answer = client.get(url, params={"bot": "beta-bot"}, follow_redirects=False)
        else:
            token = csrf(client.get("/account").text)
            answer = client.post(url, params={"bot": "beta-bot"}, data={**form, "csrf": token}, follow_redirects=False)
        assert answer.status_code == WALK[(method, path)], (method, path, answer.status_code)
        body = answer.text.replace('value="bia@beta.com.br"', "")  # what the seller typed, echoed in a form
        assert "77,70" not in body and "77.70" not in body and "bia@beta" not in body, (method, path)
        assert "beta" not in body.replace('value="beta-bot"', ""), (method, path)
    assert Account.get(Account.slug == "beta").state == "active"
    assert ApiKey.get(ApiKey.prefix == prefix).revoked_at is None  # their key still works
    assert Broadcast.get_by_id(broadcast.id).state == "scheduled" and Pool.get_by_id("beta-pool").members == [
        ["beta-bot", 1]]  # fmt: skip
    assert Account.get(Account.slug == "acme").email == "ana@acme.com.br"
