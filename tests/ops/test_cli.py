import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dramatiq
import httpx
from click.testing import CliRunner

from actors import updates
from actors.broker import broker
from catalog.schema import BotConfig
from db.models import ProcessedUpdate
from ops.cli import cli
from ops.procs import ROOT, Platform, free_port
from tests.conftest import drain


def queues_json() -> dict[str, dict[str, Any]]:
    result = CliRunner().invoke(cli, ["queues", "--json"])
    assert result.exit_code == 0, result.output
    return {row["queue"]: row for row in json.loads(result.output)}


def dead_letter(message: dramatiq.Message[Any]) -> None:
    """Fail a message the way a worker does once its retries are spent."""
    broker.enqueue(message)
    consumer = broker.consume(message.queue_name, prefetch=1, timeout=100)
    proxy = next(m for m in consumer if m is not None)
    proxy.fail()
    consumer.nack(proxy)
    consumer.close()


def test_queues_counts_ready_and_dead_and_retry_dead_brings_them_back(demo_bot: BotConfig) -> None:
    update = {"update_id": 77, "message": {"message_id": 1, "date": 0, "text": "oi",
              "from": {"id": 5, "first_name": "Rui"}, "chat": {"id": 5, "type": "private"}}}  # fmt: skip
    dead_letter(updates.route.message("demo", update))
    broker.enqueue(updates.route.message("demo", {**update, "update_id": 78}))
    stats = queues_json()["updates"]
    assert (stats["ready"], stats["dead"]) == (1, 1)
    assert stats["oldest_ready_age_seconds"] is not None and stats["oldest_ready_age_seconds"] < 60

    result = CliRunner().invoke(cli, ["retry-dead", "--queue", "updates"])
    assert result.exit_code == 0 and "updates: moved 1 message(s) back" in result.output
    stats = queues_json()["updates"]
    assert (stats["ready"], stats["dead"]) == (2, 0)

    drain("updates")
    assert {p.update_id for p in ProcessedUpdate.select()} == {77, 78}


def test_retry_dead_rejects_unknown_queue() -> None:
    result = CliRunner().invoke(cli, ["retry-dead", "--queue", "nope"])
    assert result.exit_code == 1 and "--queue: unknown queue 'nope'" in result.output


def test_help_explains_every_command() -> None:
    out = CliRunner().invoke(cli, ["--help"]).output
    for command in ("apply", "migrate", "set-webhooks", "queues", "retry-dead", "bench", "pixel-events"):
        assert command in out


def test_set_webhooks_calls_telegram_for_every_bot(demo_bot: BotConfig, tmp_path: Path) -> None:
    port = free_port()
    platform = Platform(tmp_path)
    try:
        platform.fake_telegram(port)
        env = {**os.environ, "TELEGRAM_API_BASE": f"http://127.0.0.1:{port}",
               "PUBLIC_BASE_URL": "https://bots.example.com"}  # fmt: skip
        done = subprocess.run([sys.executable, "-m", "ops", "set-webhooks"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "bot demo: webhook set to https://bots.example.com/webhook/telegram/demo" in done.stdout
        assert "123456:TEST" not in done.stdout + done.stderr
        deadline = time.monotonic() + 5
        calls: list[dict[str, Any]] = []
        while not calls and time.monotonic() < deadline:
            calls = httpx.get(f"http://127.0.0.1:{port}/_calls").json()
        [call] = calls
        assert call["token"] == "123456:TEST" and call["method"] == "setWebhook"
        assert call["params"]["url"] == "https://bots.example.com/webhook/telegram/demo"
        assert call["params"]["secret_token"] == "tg-secret-1"
        assert set(call["params"]["allowed_updates"]) == {"message", "callback_query", "my_chat_member", "chat_member",
                                                          "chat_join_request"}  # fmt: skip
    finally:
        platform.close()


def test_status_shows_live_processes_queues_and_outcomes(demo_bot: BotConfig) -> None:
    from actors.metrics import beat

    beat(broker.client, "worker", {"queues": ["updates"], "threads": 4})
    broker.enqueue(updates.route.message("demo", {"update_id": 1}))
    result = CliRunner().invoke(cli, ["status", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    [worker] = doc["processes"]
    assert worker["role"] == "worker" and worker["threads"] == 4 and worker["age_seconds"] < 5
    assert {q["queue"]: q["ready"] for q in doc["queues"]}["updates"] == 1
    text = CliRunner().invoke(cli, ["status"]).output
    assert "processes (1 alive)" in text and "updates" in text and "error rate" in text


def test_status_says_when_no_worker_is_alive() -> None:
    text = CliRunner().invoke(cli, ["status"]).output
    assert "no worker is alive" in text


def test_payments_lists_charges_and_totals_and_sandbox_pay_marks_the_bank(demo_bot: BotConfig) -> None:
    from decimal import Decimal

    from db.database import utcnow
    from db.models import Charge, Lead
    from gateways.payments.sandbox import SandboxGateway

    lead = Lead.create(bot="demo", person_id=5, chat_id=5)
    offer = demo_bot.offers[0]
    bank = SandboxGateway(webhook_secret="whsec-1", pix_key="k", merchant_name="n", merchant_city="c",
                          bank=broker.client)  # fmt: skip
    from gateways.payments.base import ChargeRequest

    created = bank.create_charge(ChargeRequest(Decimal("19.90"), "VIP", "r", "k1", expires_in_seconds=600))
    where = {
        "bot_id": "demo",
        "lead_id": lead.id,
        "offer_id": offer.id,
        "gateway_id": "main",
        "gateway_kind": "sandbox",
    }
    pending = Charge.create(**where, external_id=created.charge_id, idempotency_key="k1", amount=Decimal("19.90"),
                            status="pending", br_code=created.br_code, expires_at=created.expires_at)  # fmt: skip
    Charge.create(**where, external_id="T" * 25, idempotency_key="k2", amount=Decimal("19.90"), status="paid",
                  paid_amount=Decimal("10.00"), underpaid=True, paid_at=utcnow())  # fmt: skip

    result = CliRunner().invoke(cli, ["payments", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert [c["status"] for c in doc["charges"]] == ["paid", "pending"] and doc["charges"][0]["underpaid"]
    assert doc["totals"] == [
        {"bot": "demo", "charges": 2, "paid": 1, "revenue": "10.00", "conversion": 0.5, "refunded": "0.00"}
    ]
    text = CliRunner().invoke(cli, ["payments", "--status", "paid"]).output
    assert "paid!" in text and "flagged, not delivered" in text and "pending" not in text.split("totals")[0]
    assert f"vip ({offer.id})" in text and "R$ 19,90" in text and "R$ 10,00" in text  # as sellers read money
    assert CliRunner().invoke(cli, ["payments", "--status", "bogus"]).exit_code == 2

    assert bank.fetch_status(created.charge_id).status == "pending"
    result = CliRunner().invoke(cli, ["sandbox", "pay", str(pending.id)])
    assert result.exit_code == 0, result.output
    assert f"charge {pending.id} paid R$ 19,90" in result.output
    assert bank.fetch_status(created.charge_id).status == "paid"
    again = CliRunner().invoke(cli, ["sandbox", "pay", str(pending.id)])
    assert again.exit_code == 0 and "was already paid (R$ 19,90)" in again.output
    missing = CliRunner().invoke(cli, ["sandbox", "pay", "999999"])
    assert missing.exit_code == 1 and "no sandbox charge" in missing.output

    status = CliRunner().invoke(cli, ["status", "--json"])
    assert json.loads(status.output)["payments"] == {"charges": 2, "paid": 1, "revenue": "10.00",
                                                     "deliveries_pending": 0, "deliveries_failed": 0}  # fmt: skip


def test_pixel_events_lists_events_with_their_match_keys_never_the_values(demo_bot: BotConfig) -> None:
    from db.database import utcnow
    from db.models import PixelEvent

    now = utcnow()
    user = {"fbc": "fb.1.1.SECRETCLICK", "client_ip_address": "203.0.113.9", "client_user_agent": "UA-PRIVATE",
            "external_id": ["abc"]}  # fmt: skip
    common = {"bot_id": "demo", "pixel_id": "123", "event_time": now, "next_attempt_at": now, "created_at": now}
    PixelEvent.create(event_id="pur.1", event_name="Purchase", state="sent", attempts=1, sent_at=now, **common,
                      payload={"user_data": user, "custom_data": {"currency": "BRL", "value": 19.9}})  # fmt: skip
    PixelEvent.create(
        event_id="vc.demo.1",
        event_name="ViewContent",
        state="failed",
        attempts=1,
        **common,
        payload={"user_data": {}},
        error="meta: HTTP 400: OAuthException 100: Invalid parameter",
    )
    result = CliRunner().invoke(cli, ["pixel-events", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    purchase, view = doc["events"][1], doc["events"][0]
    assert purchase["event"] == "Purchase" and purchase["value"] == 19.9 and purchase["state"] == "sent"
    assert purchase["matched_by"] == ["fbc", "ip", "ua", "xid"] and view["error"].startswith("meta: HTTP 400")
    assert doc["totals"] == [{"bot": "demo", "event": "ViewContent", "counts": {"failed": 1}},
                             {"bot": "demo", "event": "Purchase", "counts": {"sent": 1}}]  # fmt: skip
    text = CliRunner().invoke(cli, ["pixel-events"]).output
    for private in ("SECRETCLICK", "203.0.113.9", "UA-PRIVATE"):
        assert private not in text and private not in result.output
    assert "R$ 19,90" in text and "error: meta: HTTP 400" in text
    failed = CliRunner().invoke(cli, ["pixel-events", "--state", "failed", "--json"]).output
    assert [e["event_id"] for e in json.loads(failed)["events"]] == ["vc.demo.1"]
    assert CliRunner().invoke(cli, ["pixel-events", "--state", "bogus"]).exit_code == 2
    status = json.loads(CliRunner().invoke(cli, ["status", "--json"]).output)
    assert status["pixel_events"] == {"pending": 0, "sending": 0, "sent": 1, "failed": 1, "expired": 0}


def test_commands_say_which_service_is_down_instead_of_a_traceback() -> None:
    env = {**os.environ, "REDIS_URL": "redis://:hunter2@127.0.0.1:1/0"}
    for command in (["queues"], ["status"], ["retry-dead"]):
        out = subprocess.run([sys.executable, "-m", "ops", *command], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert out.returncode == 1, out
        assert "Redis at redis://:***@127.0.0.1:1/0 is not answering" in out.stderr
        assert "Traceback" not in out.stderr and "hunter2" not in out.stderr


def test_bare_ops_prints_its_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "ops"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "apply" in out.stdout and "set-webhooks" in out.stdout
