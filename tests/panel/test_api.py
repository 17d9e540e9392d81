"""The HTTP API (CONTRACT §14): bearer keys (401 without, or revoked), another account's id → 404,
the account's rate → 429, a bot read with secrets masked and saved through the same validation
(422 naming the key) and apply as a file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from accounts import api_keys
from db.models import Account, AuditEntry, Bot
from panel.app import PANEL, make_app
from tests.panel.test_panel import run, shops


@pytest.fixture
def api() -> Iterator[TestClient]:
    PANEL._client = None
    shops()  # acme and beta, each a bot and a paid sale
    with TestClient(make_app(), base_url="http://127.0.0.1:8100") as http:
        code, key = run("accounts", "api-key", "acme")
        assert code == 0 and key.startswith("gbk_")
        http.headers["Authorization"] = f"Bearer {key.strip()}"
        yield http


def test_no_key_or_a_revoked_one_is_401(api: TestClient) -> None:
    assert TestClient(make_app()).get("/api/v1/bots").status_code == 401
    assert api.get("/api/v1/bots", headers={"Authorization": "Bearer gbk_nope_nope"}).status_code == 401
    acme = Account.get(Account.slug == "acme")
    key = api_keys.create(acme)
    assert api.get("/api/v1/bots", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert api_keys.revoke(acme, key.split("_")[1])
    assert api.get("/api/v1/bots", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_the_accounts_bots_charges_and_report_and_nothing_of_another(api: TestClient) -> None:
    assert api.get("/api/v1/bots").json() == [{"id": "acme-bot", "channel": "telegram", "username": "demo_bot",
                                               "healthy": True}]  # fmt: skip
    charges = api.get("/api/v1/charges").json()
    assert [(c["bot"], c["amount"], c["state"]) for c in charges] == [("acme-bot", "19.90", "paid")]
    assert api.get("/api/v1/charges", params={"state": "pending"}).json() == []
    assert api.get("/api/v1/charges", params={"since": "yesterday"}).status_code == 422
    report = api.get("/api/v1/report", params={"by": "day"}).json()
    assert [r["revenue"] for r in report] == ["19.90"]
    assert api.get("/api/v1/report", params={"by": "nope"}).json()["key"] == "by"
    for path in ("/api/v1/bots/beta-bot", "/api/v1/charges?bot=beta-bot", "/api/v1/report?bot=beta-bot"):
        answer = api.get(path)
        assert answer.status_code == 404 and "77" not in answer.text and "beta" not in answer.text, path
    assert api.put("/api/v1/bots/beta-bot", json={"welcome": {"text": "x"}}).status_code == 404
    assert api.get("/api/v1/openapi.json").json()["paths"]["/api/v1/bots/{id}"]["put"]


def test_a_bot_is_read_with_secrets_masked_and_saved_through_validation_and_apply(api: TestClient) -> None:
    table = api.get("/api/v1/bots/acme-bot").json()
    assert table["token"] == "…ACME" and table["webhook_secret"].startswith("…") and "4:ACME" not in str(table)
    table["welcome"]["text"] = "Bem-vindo à Acme!"
    saved = api.put("/api/v1/bots/acme-bot", json=table)
    assert saved.status_code == 200 and saved.json()["changes"] == ["updated bot acme-bot"]
    bot = Bot.get(Bot.id == "acme-bot")
    assert bot.welcome_text == "Bem-vindo à Acme!" and bot.token == "400:ACME"  # the masked token kept
    entry = AuditEntry.get(AuditEntry.action == "bot updated")
    assert entry.actor == "acme (api)" and entry.after == {"welcome_text": "Bem-vindo à Acme!"}
    table["offers"][0]["price"] = 19.9
    refused = api.put("/api/v1/bots/acme-bot", json=table)
    assert refused.status_code == 422 and refused.json()["key"] == "offers[0].price"
    table["offers"][0]["price"] = "19.90"
    table["gateway"] = "beta-main"  # another account's gateway
    assert api.put("/api/v1/bots/acme-bot", json=table).json()["key"] == "gateway"


def test_over_the_rate_is_429(api: TestClient) -> None:
    import time

    import settings

    if time.time() % 60 > 50:  # the minute's counter must not roll over mid-test
        time.sleep(61 - time.time() % 60)
    answers = [api.get("/api/v1/bots").status_code for _ in range(settings.API_RATE_PER_MINUTE + 1)]
    assert answers.count(200) == settings.API_RATE_PER_MINUTE and answers[-1] == 429
    assert 0 < int(api.get("/api/v1/bots").headers["retry-after"]) <= 60


def test_gateways_pools_broadcasts_media_and_purchases_through_the_api(api: TestClient) -> None:
    from catalog.snapshot import load_gateways, load_pools
    from db.models import Broadcast, Charge

    [main] = api.get("/api/v1/gateways").json()
    assert main["id"] == "acme-main" and main["webhook_secret"].startswith("…")
    made = api.put("/api/v1/gateways/acme-pix", json={"kind": "sandbox", "webhook_secret": "whsec-acme-2",
                                                      "pix_key": "+5511987654321", "merchant_name": "Acme",
                                                      "merchant_city": "Recife"})  # fmt: skip
    assert made.status_code == 200 and made.json()["changes"] == ["created gateway acme-pix"]
    read = api.get("/api/v1/gateways/acme-pix").json()
    assert read["pix_key"] == "…4321"
    read["merchant_city"] = "Olinda"
    assert api.put("/api/v1/gateways/acme-pix", json=read).status_code == 200  # masked values kept
    assert load_gateways()["acme-pix"].settings["pix_key"] == "+5511987654321"
    assert load_gateways()["acme-pix"].settings["merchant_city"] == "Olinda"
    bad = api.put("/api/v1/gateways/acme-pix", json={**read, "merchant_name": "A" * 40})
    assert bad.status_code == 422 and bad.json()["key"] == "merchant_name"
    assert api.put("/api/v1/gateways/beta-main", json=read).status_code == 404  # another account's id
    assert api.post("/api/v1/gateways/acme-pix/test").json()["ok"] is True

    zap = api.post("/api/v1/bots", json={"channel": "whatsapp_cloud", "id": "acme-zap", "number": "5511999990000",
                                         "phone_number_id": "123", "waba_id": "456", "access_token": "EAAG-1",
                                         "app_secret": "s3cr3t"})  # fmt: skip
    assert zap.status_code == 201 and zap.json()["id"] == "acme-zap"
    assert api.post("/api/v1/bots", json={"token": "nope"}).json()["key"] == "token"

    assert api.put("/api/v1/pools/acme-pool", json={"bots": [{"bot": "acme-bot", "weight": 2}]}).status_code == 200
    assert load_pools()["acme-pool"].members == (("acme-bot", 2),)
    assert api.put("/api/v1/pools/acme-pool", json={"bots": ["beta-bot"]}).status_code == 404

    assert api.get("/api/v1/broadcasts/preview", params={"bot": "acme-bot", "segment": "all"}).json() == {"reach": 1}
    refused = api.post("/api/v1/broadcasts", json={"bot": "acme-bot", "segment": "all", "text": ""})
    assert refused.status_code == 422 and refused.json()["key"] == "text"
    created = api.post("/api/v1/broadcasts", json={"bot": "acme-bot", "segment": "paid", "text": "Oi",
                                                   "at": "2099-01-01T10:00"})  # fmt: skip
    assert created.status_code == 201
    broadcast_id = created.json()["id"]
    assert Broadcast.get_by_id(broadcast_id).starts_at.hour == 13  # 10:00 in São Paulo
    assert api.get(f"/api/v1/broadcasts/{broadcast_id}").json()["state"] == "scheduled"
    assert api.post(f"/api/v1/broadcasts/{broadcast_id}/stop").json()["stopped"] is True
    assert api.post("/api/v1/broadcasts", json={"bot": "beta-bot", "text": "x"}).status_code == 404

    png = b"\x89PNG\r\n\x1a\n" + b"\x03" * 100
    uploaded = api.post("/api/v1/media", content=png, headers={"Content-Type": "image/png"})
    assert uploaded.status_code == 201 and uploaded.json()["media_url"].startswith("media:")
    assert api.post("/api/v1/media", content=b"not an image").status_code == 422

    sale = Charge.get(Charge.bot_id == "acme-bot").id
    assert api.post(f"/api/v1/charges/{sale}/purchase").json() == {"queued": 0}  # the bot has no pixel
    theirs = Charge.get(Charge.bot_id == "beta-bot").id
    assert api.post(f"/api/v1/charges/{theirs}/purchase").status_code == 404
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/api/v1/broadcasts"]) and "put" in paths["/api/v1/gateways/{id}"]
    actions = {e.action for e in AuditEntry.select().where(AuditEntry.actor == "acme (api)")}
    assert {"gateway created", "gateway updated", "pool created", "broadcast created"} <= actions
