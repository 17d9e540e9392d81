"""Fixtures over the real Redis and the real database that ops/test starts (REDIS_URL, DATABASE_URL).

Outside services are faked only at the HTTP boundary: httpx.MockTransport here, a local fake
server for the end-to-end tests."""

from __future__ import annotations

import email
import email.policy
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

if not os.environ.get("REDIS_URL") or not os.environ.get("DATABASE_URL"):
    pytest.exit("run the suite with ops/test: it starts Redis and the databases and sets REDIS_URL/DATABASE_URL", 2)
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("METRICS_PORT", "0")  # tests that want the private listener give it a port


import redis

import catalog
from actors import updates
from actors.broker import broker
from actors.channels import Channels
from actors.throttle import Throttle
from catalog.schema import BotConfig
from catalog.snapshot import load_bots
from db.database import db, is_sqlite
from db.migrate import migrate
from db.models import MODELS, ConfigState
from gateways.evolution import EvolutionGateway
from gateways.payments.sandbox import SandboxGateway
from gateways.telegram import TelegramGateway, parse_update
from gateways.whatsapp_cloud import CloudGateway

TELEGRAM_BASE = "https://telegram.test"

DEMO_CONFIG = {
    "gateways": [
        {
            "id": "main",
            "kind": "sandbox",
            "webhook_secret": "whsec-1",
            "pix_key": "pix@example.com",
            "merchant_name": "GRIMBOTS DEMO",
            "merchant_city": "SAO PAULO",
        }
    ],
    "bots": [
        {
            "id": "demo",
            "token": "123456:TEST",
            "username": "demo_bot",
            "webhook_secret": "tg-secret-1",
            "gateway": "main",
            "welcome": {"text": "Olá! Escolha seu plano:", "media_url": "https://example.com/welcome.jpg"},
            "offers": [
                {
                    "id": "vip",
                    "label": "VIP mensal – R$ 19,90",
                    "price": "19.90",
                    "delivery_text": "Pagamento confirmado! Seu acesso:",
                    "delivery_link": "https://t.me/+AbCdEf",
                },
                {"id": "anual", "label": "VIP anual", "price": "149.90", "delivery_chat_id": -100123},
            ],
        }
    ],
}


# Tests of Redis, the edge's parsing and process supervision, not of the database: run once, on
# PostgreSQL (production's), to keep the two-database suite short.
once = pytest.mark.skipif(is_sqlite(), reason="database-independent: run on PostgreSQL only")


def demo_with(*extra: tuple[str, int]) -> dict[str, Any]:
    """DEMO_CONFIG with more bots like its first, one per (id, n): token `12345{n}:TEST`, username
    `{id}_bot`, webhook secret `tg-secret-{n}`."""
    data = json.loads(json.dumps(DEMO_CONFIG))
    for bot_id, n in extra:
        bot = json.loads(json.dumps(data["bots"][0]))
        bot.update(id=bot_id, token=f"12345{n}:TEST", username=f"{bot_id}_bot", webhook_secret=f"tg-secret-{n}")
        data["bots"].append(bot)
    return data


def two_bots() -> dict[str, Any]:
    """DEMO_CONFIG with a second bot, "other", like the first."""
    return demo_with(("other", 2))


@pytest.fixture
def sandbox(redis_client: redis.Redis) -> SandboxGateway:
    """The demo configuration's sandbox gateway, with its bank in the test Redis."""
    return SandboxGateway(webhook_secret="whsec-1", pix_key="pix@example.com", merchant_name="GRIMBOTS DEMO",
                          merchant_city="SAO PAULO", bank=redis_client)  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def _schema() -> None:
    migrate(db.obj)


@pytest.fixture(autouse=True)
def clean_state() -> Iterator[None]:
    """Every test starts from empty tables and an empty Redis database."""
    broker.client.flushdb()
    db.connect(reuse_if_open=True)
    tables = [m for m in MODELS if m is not ConfigState]
    if is_sqlite():
        with db.atomic():
            for model in reversed(tables):
                model.delete().execute()
    else:
        names = ", ".join(f'"{m._meta.table_name}"' for m in tables)
        db.execute_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    # The version only grows (as in production): a process-wide catalog that loaded an earlier
    # test's configuration sees the next apply as a change.
    ConfigState.update(version=ConfigState.version + 1).execute()
    yield
    if not db.is_closed():
        db.close()


def drain(queue: str) -> None:
    """Run a real Dramatiq worker in this process until `queue` is empty."""
    from dramatiq import Worker

    worker = Worker(broker, worker_threads=1, queues={queue})
    worker.start()
    try:
        broker.join(queue, timeout=10_000)
    finally:
        worker.stop()


@pytest.fixture
def redis_client() -> redis.Redis:
    return broker.client


@pytest.fixture
def throttle(redis_client: redis.Redis) -> Throttle:
    return Throttle(redis_client)


def apply_config(data: dict[str, Any]) -> list[str]:
    """Apply a configuration and have this process's worker catalog load it now (running
    processes do so within CONFIG_POLL_SECONDS)."""
    from actors import runtime

    known = {row[0] for row in db.execute_sql("SELECT id FROM gateway").fetchall()}
    changes = catalog.apply(catalog.parse(data, known))
    runtime.catalog().refresh()
    return changes


def route_update(bot: BotConfig, update: dict[str, Any], cache: redis.Redis | None = None) -> updates.Routed:
    """Take one Telegram update in, as the updates actor does (the bot's channel parses it)."""
    return updates.route_event(bot, parse_update(update), cache, first_message_starts=False)


@pytest.fixture
def demo_bot() -> BotConfig:
    apply_config(json.loads(json.dumps(DEMO_CONFIG)))
    return load_bots()["demo"]


class FakeTelegramTransport:
    """The Bot API at the HTTP boundary: records calls, answers like Telegram, fails on request."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.replies: dict[str, list[httpx.Response | Exception]] = {}
        self.message_ids = iter(range(1, 1_000_000))

    def queue(self, method: str, *replies: httpx.Response | Exception) -> None:
        self.replies.setdefault(method, []).extend(replies)

    def methods(self) -> list[str]:
        return [m for m, _ in self.calls]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[1]
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            params = multipart_fields(request)
        else:
            params = json.loads(request.content or b"{}")
        self.calls.append((method, params))
        queued = self.replies.get(method)
        if queued:
            reply = queued.pop(0)
            if isinstance(reply, Exception):
                raise reply
            return reply
        result: Any = True
        if method.startswith("send"):
            result = {"message_id": next(self.message_ids), "chat": {"id": params.get("chat_id")}}
            if method == "sendPhoto":
                result["photo"] = [{"file_id": "small"}, {"file_id": "PHOTO-FILE-ID"}]
            if method == "sendVideo":
                result["video"] = {"file_id": "VIDEO-FILE-ID"}
        return httpx.Response(200, json={"ok": True, "result": result})


def multipart_fields(request: httpx.Request) -> dict[str, Any]:
    """A multipart request's fields: JSON values decoded as Telegram does, files as bytes."""
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = email.message_from_bytes(head + request.read(), policy=email.policy.HTTP)
    fields: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if part.get_filename():
            fields[name] = payload
        else:
            text = payload.decode()
            fields[name] = json.loads(text) if text[:1] in "{[" else text
    return fields


def telegram_error(code: int, description: str, retry_after: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return httpx.Response(code, json=body)


@pytest.fixture
def fake_telegram() -> FakeTelegramTransport:
    return FakeTelegramTransport()


@pytest.fixture
def telegram(fake_telegram: FakeTelegramTransport) -> TelegramGateway:
    return TelegramGateway(httpx.Client(transport=httpx.MockTransport(fake_telegram)), TELEGRAM_BASE)


@pytest.fixture
def tmp_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "config.toml"
        path.write_text(text)
        return path

    return write


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Each phase's report on the test item, so fixtures can tell whether the test failed."""
    outcome = yield
    setattr(item, f"report_{call.when}", outcome.get_result())  # type: ignore[attr-defined]


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@contextmanager
def logs_on_failure(platform: Any, request: pytest.FixtureRequest) -> Iterator[None]:
    """Around an end-to-end fixture's set-up and yield: when set-up or the test fails, every
    process's log is printed; the processes are stopped in any case."""
    try:
        yield
        if failed(request):
            dump_logs(platform)
    except Exception:
        dump_logs(platform)
        raise
    finally:
        platform.close()


def dump_logs(platform: Any) -> None:
    """Stop an end-to-end test's processes and print what each of them logged."""
    platform.close()
    for process in platform.processes:
        print(f"--- {process.name} ---\n{process.output()}")


@pytest.fixture
def channels(telegram: TelegramGateway, redis_client: redis.Redis) -> Channels:
    """Every bot's channel: Telegram on the fake transport (WhatsApp bots: tests/actors/test_whatsapp.py)."""
    unused = httpx.Client(transport=httpx.MockTransport(_no_whatsapp))
    return Channels(telegram, EvolutionGateway(unused), CloudGateway(unused, "http://graph.test", "v21.0"),
                    cache=redis_client)  # fmt: skip


def _no_whatsapp(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"unexpected WhatsApp call {request.url.path}")
