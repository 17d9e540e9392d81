"""`python -m ops bench journeys`: complete tracked buyer journeys per second — ad click (GET /r/…)
→ /start {token} → welcome → tap an offer → charge + code message → signed "paid" notification →
delivery, and the pixel events on the way — through the real edge, workers, Redis and database,
with the sandbox gateway, a local fake Telegram and a local fake Meta Graph API. Journeys start at
a fixed rate (open loop); paid → delivered is measured from the notification's POST to the moment
the fake Telegram receives the delivery, paid → Purchase to the moment the fake Meta receives the
Purchase event. Results go to --out as JSON and Markdown."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

import settings
from ops.benchmarks.driver import LoadConnection, cpu_seconds, machine, open_loop, percentile, redis_pid, report
from ops.procs import Platform, free_port, wait_until

BOTS = 40  # three messages per journey at 200 journeys/s stay under Telegram's 30/s per bot
PIXELS = 4  # bots share pixels, as a seller's bots do: events batch per pixel
SECRET = "bench-secret"
WEBHOOK_SECRET = "bench-whsec"
DELIVERED = "BENCH-DELIVERED"
CODE = re.compile(r"<code>(.+?)</code>")


def journey_config(bots: int, send_qr: bool) -> dict[str, Any]:
    return {
        "gateways": [{"id": "bench-pay", "kind": "sandbox", "webhook_secret": WEBHOOK_SECRET,
                      "pix_key": "pix@example.com", "merchant_name": "GRIMBOTS BENCH", "merchant_city": "SAO PAULO"}],
        "bots": [
            {"id": f"shop-{i}", "token": f"{800000 + i}:SHOP", "username": f"shop_{i}_bot", "webhook_secret": SECRET,
             "gateway": "bench-pay", "welcome": {"text": "Olá! Escolha seu plano:"}, "checkout": {"send_qr": send_qr},
             "pixel_id": str(9_000_000 + i % PIXELS), "pixel_access_token": "EAAB-bench",
             "offers": [{"id": "vip", "label": "VIP", "price": "19.90", "delivery_text": DELIVERED,
                         "delivery_link": "https://t.me/+Bench"}]}
            for i in range(bots)
        ],
    }  # fmt: skip


def apply_journey_config(send_qr: bool) -> dict[str, int]:
    """Applies the bench bots; returns each bot's offer id."""
    import catalog
    from catalog.snapshot import load_bots
    from db.database import init_db
    from db.migrate import migrate
    from db.models import Gateway

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        catalog.apply(catalog.parse(journey_config(BOTS, send_qr), known))
        return {bot.id: bot.offers[0].id for bot in load_bots().values() if bot.id.startswith("shop-")}


class Watcher:
    """Follows the fake Telegram's call log and wakes the journey waiting for each call."""

    def __init__(self, telegram: str) -> None:
        self.telegram = telegram
        self.seen = 0
        self.waiting: dict[tuple[int, str], asyncio.Future[dict[str, Any]]] = {}
        self.early: dict[tuple[int, str], dict[str, Any]] = {}
        self.stop = False

    def expect(self, chat: int, what: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if (chat, what) in self.early:
            future.set_result(self.early.pop((chat, what)))
        else:
            self.waiting[(chat, what)] = future
        return future

    @staticmethod
    def kind(call: dict[str, Any]) -> str | None:
        method, params = call["method"], call["params"]
        if method == "sendPhoto" and "caption" in params:
            return "code"
        if method == "sendMessage":
            text = params.get("text", "")
            return "delivery" if text.startswith(DELIVERED) else "code" if "<code>" in text else "welcome"
        return None

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while not self.stop:
                calls = (await client.get(f"{self.telegram}/_calls", params={"since": self.seen})).json()
                self.seen += len(calls)
                for call in calls:
                    what = self.kind(call)
                    if what is None:
                        continue
                    key = (int(call["params"]["chat_id"]), what)
                    future = self.waiting.pop(key, None)
                    if future is not None and not future.done():
                        future.set_result(call)
                    else:
                        self.early[key] = call
                await asyncio.sleep(0.02)


class MetaWatcher:
    """Follows the fake Meta's request log: when each buyer's Purchase arrived (by external_id)."""

    def __init__(self, meta: str) -> None:
        self.meta = meta
        self.seen = 0
        self.purchases: dict[str, float] = {}
        self.events = 0
        self.requests = 0
        self.stop = False

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            while True:
                stopping = self.stop
                requests = (await client.get(f"{self.meta}/_calls", params={"since": self.seen})).json()
                self.seen += len(requests)
                for request in requests:
                    self.requests += 1
                    for event in request["body"]["data"]:
                        self.events += 1
                        if event["event_name"] == "Purchase":
                            self.purchases.setdefault(event["user_data"]["external_id"][0], request["at"])
                if stopping:
                    return
                await asyncio.sleep(0.05)


async def _journeys(edge: str, telegram: str, meta: str, offers: dict[str, int], rate: int, seconds: float,
                    first_id: int, timeout: float = 60.0) -> dict[str, Any]:  # fmt: skip
    from gateways.payments import brcode
    from gateways.payments.sandbox import sign

    host, port = edge.split("//", 1)[1].split(":")
    pool: asyncio.Queue[LoadConnection] = asyncio.Queue()
    for _ in range(48):
        pool.put_nowait(LoadConnection(host, int(port)))
    watcher, pixel_watcher = Watcher(telegram), MetaWatcher(meta)
    watch, watch_meta = asyncio.create_task(watcher.run()), asyncio.create_task(pixel_watcher.run())
    stages: dict[str, list[float]] = defaultdict(list)
    failures: list[str] = []
    done: list[float] = []
    paid_at_by_buyer: dict[str, float] = {}

    async def post(path: str, body: bytes, headers: dict[str, str]) -> int:
        conn = await pool.get()
        try:
            return await conn.post(path, body, headers)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            conn.writer = None
            return 0
        finally:
            pool.put_nowait(conn)

    async def journey(i: int) -> None:
        chat, bot = first_id + i, f"shop-{i % BOTS}"
        user = {"id": chat, "is_bot": False, "first_name": "Bench"}
        tg = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        started = time.time()
        conn = await pool.get()
        try:
            # Each buyer from an address of their own, through the proxy in front of the edge (the
            # edge trusts 127.0.0.1's X-Forwarded-For here, as TRUSTED_PROXIES makes it in production).
            headers = {"User-Agent": "Mozilla/5.0 (bench)", "X-Forwarded-For": buyer_address(i)}
            status, answer = await conn.request("GET", f"/r/{bot}?fbclid=IwAR{chat}&utm_source=bench", b"", headers)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            conn.writer, status, answer = None, 0, {}
        finally:
            pool.put_nowait(conn)
        if status != 302 or "?start=" not in answer.get("location", ""):
            failures.append("click")
            return
        stages["click_redirect_ms"].append((time.time() - started) * 1000)
        token = answer["location"].split("?start=", 1)[1]
        welcome = watcher.expect(chat, "welcome")
        start = {"update_id": first_id * 3 + i * 3, "message": {"message_id": 1, "date": int(started),
                 "text": f"/start {token}", "from": user, "chat": {"id": chat, "type": "private"}}}  # fmt: skip
        if await post(f"/webhook/telegram/{bot}", json.dumps(start).encode(), tg) != 200:
            failures.append("start")
            return
        await asyncio.wait_for(welcome, timeout)
        code_message = watcher.expect(chat, "code")
        tapped = time.time()
        press = {"update_id": first_id * 3 + i * 3 + 1, "callback_query": {"id": f"cb{chat}", "from": user,
                 "message": {"message_id": 1, "chat": {"id": chat, "type": "private"}},
                 "data": f"buy:{offers[bot]}"}}  # fmt: skip
        if await post(f"/webhook/telegram/{bot}", json.dumps(press).encode(), tg) != 200:
            failures.append("tap")
            return
        call = await asyncio.wait_for(code_message, timeout)
        stages["tap_to_code_ms"].append((call["at"] - tapped) * 1000)
        found = CODE.search(call["params"].get("caption") or call["params"]["text"])
        if found is None:
            failures.append("code")
            return
        txid = brcode.parse_fields(brcode.parse(found.group(1))["62"])["05"]
        body = json.dumps({"event": "charge.paid", "charge_id": txid, "amount": "19.90"}).encode()
        delivered = watcher.expect(chat, "delivery")
        paid_at = time.time()
        paid_at_by_buyer[hashlib.sha256(str(chat).encode()).hexdigest()] = paid_at
        if await post("/webhook/payment/bench-pay", body, {"X-Sandbox-Signature": sign(WEBHOOK_SECRET, body)}) != 200:
            failures.append("notification")
            return
        call = await asyncio.wait_for(delivered, timeout)
        stages["paid_to_delivered_ms"].append((call["at"] - paid_at) * 1000)
        stages["journey_ms"].append((call["at"] - started) * 1000)
        done.append(call["at"])

    async def guarded(i: int) -> None:
        try:
            await journey(i)
        except TimeoutError:
            failures.append("timeout")

    wall0 = time.time()
    total = int(rate * seconds)
    await open_loop(rate, total, guarded)
    watcher.stop = True
    await watch
    # Purchases follow deliveries by the linger and a batch: wait for every paid journey's.
    deadline = time.time() + 90
    while time.time() < deadline and not set(paid_at_by_buyer) <= set(pixel_watcher.purchases):
        await asyncio.sleep(0.2)
    pixel_watcher.stop = True
    await watch_meta
    for buyer, paid_at in paid_at_by_buyer.items():
        if buyer in pixel_watcher.purchases:
            stages["paid_to_purchase_event_ms"].append((pixel_watcher.purchases[buyer] - paid_at) * 1000)
        else:
            failures.append("purchase event")
    span = (max(done) - wall0) if done else 0.0
    result: dict[str, Any] = {
        "rate_per_second": rate,
        "seconds": seconds,
        "journeys": total,
        "completed": len(done),
        "failures": dict((f, failures.count(f)) for f in set(failures)),
        "journeys_per_second": round(len(done) / span, 1) if span else 0.0,
        "meta_requests": pixel_watcher.requests,
        "meta_events": pixel_watcher.events,
    }
    for name, values in stages.items():
        result[name] = {"p50": percentile(values, 0.5), "p99": percentile(values, 0.99),
                        "max": round(max(values), 1), "mean": round(statistics.fmean(values), 1)}  # fmt: skip
    return result


def buyer_address(i: int) -> str:
    """The i-th buyer's public address (one per buyer, as ads bring them: the per-address click limit
    of 30 a minute never binds)."""
    return f"{45 + i // 65_536 % 150}.{i // 256 % 256}.{i % 256}.{10 + i % 7}"


def run(*, seconds: float, rate: int, out: Path, processes: int = 2, threads: int = 8, send_qr: bool = True,
        payment_threads: int = 16, payment_processes: int = 1) -> dict[str, Any]:  # fmt: skip
    offers = apply_journey_config(send_qr)
    work = Path(tempfile.mkdtemp(prefix="grimbots-journeys-"))
    telegram_port, edge_port, meta_port = free_port(), free_port(), free_port()
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}",
                   META_GRAPH_BASE=f"http://127.0.0.1:{meta_port}", LOG_LEVEL="WARNING",
                   TRUSTED_PROXIES="127.0.0.1/32")  # fmt: skip
    results: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        env.fake_telegram(telegram_port)
        env.fake_meta(meta_port)
        env.edge(edge_port)
        env.worker("chat", threads=threads, processes=processes)
        env.worker("payments", threads=payment_threads, processes=payment_processes, queues=("payments", "settle"))
        env.worker("pixel", threads=4, processes=1, queues=("pixel",))
        edge, telegram = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{telegram_port}"
        meta = f"http://127.0.0.1:{meta_port}"
        base = int(time.time()) * 10_000
        asyncio.run(_journeys(edge, telegram, meta, offers, 20, 2, base))  # warm-up, not measured
        wait_until(lambda: httpx.get(f"{telegram}/_stats").json()["calls"] > 0, 10, "warm-up")
        httpx.post(f"{telegram}/_reset")
        httpx.post(f"{meta}/_reset")
        pids = {p.name: p.proc.pid for p in env.processes}
        redis = redis_pid(urlparse(settings.REDIS_URL).port or 6379)
        if redis is not None:
            pids["redis"] = redis
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        load_before = time.process_time()
        results["journeys"] = asyncio.run(_journeys(edge, telegram, meta, offers, rate, seconds, base + 5_000))
        completed = results["journeys"]["completed"] or 1
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        used["load generator"] = time.process_time() - load_before
        results["journeys"]["cpu_ms_per_journey"] = {name: round(s * 1000 / completed, 1) for name, s in used.items()}
        results["journeys"].update(chat_processes=processes, chat_threads=threads, payment_threads=payment_threads,
                                   payment_processes=payment_processes, send_qr=send_qr)  # fmt: skip
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    j = results["journeys"]

    def stage(name: str) -> str:
        s = j.get(name)
        return f"p50 {s['p50']} ms, p99 {s['p99']} ms, max {s['max']} ms" if s else "-"

    done = f"{j['completed']}/{j['journeys']} completed, {j['journeys_per_second']} journeys/s"
    workers = (
        f"chat {j['chat_processes']} × {j['chat_threads']} threads, "
        f"payments {j['payment_processes']} × {j['payment_threads']} threads, "
        f"QR image {'on' if j['send_qr'] else 'off'}"
    )
    rows = [
        (f"journeys started at {j['rate_per_second']}/s for {j['seconds']} s", f"{done}, failures {j['failures']}"),
        ("workers", workers),
        ("click → redirect", stage("click_redirect_ms")),
        ("tap → code message", stage("tap_to_code_ms")),
        ("paid → delivered", stage("paid_to_delivered_ms")),
        ("paid → Purchase at Meta", stage("paid_to_purchase_event_ms")),
        ("Conversions API", f"{j['meta_events']} events in {j['meta_requests']} requests"),
        ("CPU per journey", ", ".join(f"{name} {ms} ms" for name, ms in j.get("cpu_ms_per_journey", {}).items())),
        ("whole journey (start → delivered)", stage("journey_ms")),
    ]
    report("journeys", results, rows, out)
