"""`python -m ops bench broadcast`: B bots × L leads each, one broadcast per bot created at once,
sent by the broadcasts workers against the local fake Telegram while /start arrives at the same
bots. Reports messages per second achieved against what the bots are allowed together (30 per
second each), the most any bot sent in one second (measured at the fake), CPU per message per
process, and /start → welcome latency meanwhile (the funnel goes first).

Then WhatsApp at scale: a Cloud API number with 1,000 leads, then one with --whatsapp-leads
(100,000) leads, each broadcast to all of them with an offer button (every send reads the lead's
24-hour window and records its menu on the lead row): the CPU each message costs, over the same
WHATSAPP_SAMPLE messages at both sizes (after WHATSAPP_WARM), should not grow with the leads (the
lookups are indexed by (bot, chat)); the larger broadcast is stopped once measured.

Uses REDIS_URL and DATABASE_URL as given (ops/bench starts throwaway ones; with PostgreSQL, the
database server's CPU is not counted). Results go to --out, with the machine."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

import settings
from ops.benchmarks.driver import (
    BOTS,
    _drive,
    bench_config,
    cpu_seconds,
    machine,
    percentile,
    redis_pid,
    report,
    seed_leads,
    seller_config,
    warm_up,
    welcomes_meanwhile,
)
from ops.procs import Platform, free_port, wait_until

TEXT = "BENCH-BROADCAST: promoção de hoje!"
WHATSAPP_SMALL = 1_000
WHATSAPP_SAMPLE = 1_000  # messages measured at each size
WHATSAPP_WARM = 200  # sent before the measured ones (connections, caches, the lanes under way)


def seed(bots: int, leads: int) -> list[int]:
    """The bots (the bench's), `leads` leads each, and one broadcast per bot to all of them
    (scheduled now: the clock starts them once it runs). Returns the broadcasts' ids."""
    import catalog
    from actors import broadcasts
    from catalog.snapshot import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Gateway

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        # The funnel is driven over the first BOTS bench bots: configure them even when fewer broadcast.
        catalog.apply(catalog.parse(bench_config(max(bots, BOTS)), known))
        for _ in seed_leads(database, bots, bots * leads, utcnow()):
            pass  # leads only: the broadcasts freeze them when they start
        configured = load_bots()
        return [broadcasts.create(configured[f"bench-{b}"], "all", TEXT).id for b in range(bots)]


def whatsapp_bot(k: int, fake: str) -> dict[str, Any]:
    """A Cloud API number on the fake WhatsApp at the highest rate a number may have, selling one
    offer (the broadcast's button)."""
    return {"id": f"wa-scale-{k}", "channel": "whatsapp_cloud", "number": f"551190000{k:04d}",
            "phone_number_id": f"{9100 + k}", "waba_id": "9000", "access_token": "BENCH-TOKEN",
            "app_secret": "bench-app-secret", "verify_token": "bench-verify", "rate_per_minute": 6000,
            "gateway": "bench-gw", "welcome": {"text": "Olá! Escolha seu plano:"},
            "offers": [{"id": "vip", "label": "VIP", "price": "9.90", "delivery_link": "https://x/p"}]}  # fmt: skip


def seed_whatsapp(sizes: tuple[int, ...], fake: str) -> None:
    """One Cloud number per size with that many leads (numbers of their own, each written just
    now: the 24-hour window is open)."""
    import catalog
    from db.database import init_db, utcnow
    from db.models import Gateway, Lead

    database = init_db()
    now = utcnow()
    with database.connection_context():
        data = seller_config(BOTS, {"id": "vip", "label": "VIP", "price": "9.90", "delivery_link": "https://x/p"})
        data["bots"] += [whatsapp_bot(k, fake) for k in range(len(sizes))]
        catalog.apply(catalog.parse(data, {g.id for g in Gateway.select(Gateway.id)}))
        for k, size in enumerate(sizes):
            first = 5_511_910_000_000 + k * 10_000_000
            for start in range(0, size, 10_000):
                with database.atomic():
                    for chunk in range(start, min(start + 10_000, size), 1_000):
                        Lead.insert_many([{"bot": f"wa-scale-{k}", "person_id": first + i, "chat_id": first + i,
                                           "first_name": "B", "first_seen_at": now, "last_seen_at": now}
                                          for i in range(chunk, min(chunk + 1_000, size))]).execute()  # fmt: skip


def whatsapp_scale(sizes: tuple[int, ...], processes: int, threads: int) -> list[dict[str, Any]]:
    """Each size's number in turn broadcasts to all its leads with the offer's button, from the
    clock's start to its WHATSAPP_SMALL-th message (then it is stopped): our CPU per message over
    the messages after WHATSAPP_WARM, and messages per second."""
    from actors import broadcasts
    from catalog.snapshot import load_bots
    from db.database import init_db

    work = Path(tempfile.mkdtemp(prefix="grimbots-bench-broadcast-wa-"))
    fake_port = free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    seed_whatsapp(sizes, fake)
    env = Platform(work, META_GRAPH_BASE=fake, LOG_LEVEL="WARNING")
    measured: list[dict[str, Any]] = []
    try:
        env.fake_whatsapp(fake_port)
        pids = {f"broadcasts-{i}": env.worker(f"broadcasts-{i}", threads=threads, queues=("broadcasts",)).proc.pid
                for i in range(processes)}  # fmt: skip
        # The clock's ticks: broadcasts started, their lanes kept (and the rest of its housekeeping).
        pids["maintenance"] = env.worker("maintenance", threads=2, queues=("maintenance",)).proc.pid
        redis = redis_pid(urlparse(settings.REDIS_URL).port or 6379)
        if redis is not None:
            pids["redis"] = redis
        pids["clock"] = env.clock().proc.pid
        since = 0
        for k, size in enumerate(sizes):
            with init_db().connection_context():
                broadcast_id = broadcasts.create(load_bots()[f"wa-scale-{k}"], "all", TEXT, offer="vip").id
            marks, since = sample_sends(fake, str(9100 + k), since, pids)
            with init_db().connection_context():
                broadcasts.stop(broadcast_id)
            (t0, n0, cpu0), (t1, n1, cpu1) = marks
            used = sum(cpu1[name] - cpu0[name] for name in pids)
            measured.append({
                "leads": size,
                "messages_measured": n1 - n0,
                "messages_per_second": round((n1 - n0) / (t1 - t0), 1),
                "cpu_ms_per_message": {name: round((cpu1[name] - cpu0[name]) * 1000 / (n1 - n0), 3) for name in pids},
                "cpu_ms_per_message_total": round(used * 1000 / (n1 - n0), 3),
            })  # fmt: skip
            time.sleep(1.0)  # the stopped lanes see the stop before the next number starts
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    return measured


def sample_sends(fake: str, phone_number_id: str, since: int, pids: dict[str, int],
                 ) -> tuple[list[tuple[float, int, dict[str, float]]], int]:  # fmt: skip
    """Follows the fake's calls from index `since` on: (time, sends from `phone_number_id`, CPU of
    `pids`) when the WHATSAPP_WARM-th and the WHATSAPP_SMALL-th arrived, and the index reached."""
    marks: list[tuple[float, int, dict[str, float]]] = []
    count = 0
    deadline = time.monotonic() + 1800
    while len(marks) < 2:
        if time.monotonic() > deadline:
            raise SystemExit(f"the broadcast of number {phone_number_id} sent {count} messages in 30 minutes")
        calls = httpx.get(f"{fake}/_calls", params={"since": since}, timeout=60).json()
        since += len(calls)
        count += sum(1 for c in calls if str(c.get("phone_number_id")) == phone_number_id)
        if count >= (WHATSAPP_WARM, WHATSAPP_SMALL)[len(marks)]:
            marks.append((time.monotonic(), count, {name: cpu_seconds(pid) for name, pid in pids.items()}))
        time.sleep(0.05)
    return marks, since


def done(ids: list[int]) -> bool:
    from db.database import init_db
    from db.models import Broadcast

    with init_db().connection_context():
        return Broadcast.select().where(Broadcast.id.in_(ids) & (Broadcast.state != "done")).count() == 0


def max_in_a_second(times: list[float]) -> int:
    """The most sends inside any 1-second window."""
    times, most, j = sorted(times), 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most


def run(*, bots: int, leads: int, rate: int, seconds: float, out: Path, processes: int, threads: int,
        broadcast_processes: int = 2, broadcast_threads: int = 40, whatsapp_leads: int = 100_000,
        ) -> dict[str, Any]:  # fmt: skip
    if whatsapp_leads < WHATSAPP_SMALL:
        raise SystemExit(f"--whatsapp-leads must be at least {WHATSAPP_SMALL}")
    ids = seed(bots, leads)
    results: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "bots": bots, "leads_per_bot": leads,
                               "lanes_per_broadcast": settings.BROADCAST_LANES}  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="grimbots-bench-broadcast-"))
    telegram_port, edge_port = free_port(), free_port()
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", LOG_LEVEL="WARNING")
    edge, telegram = f"http://127.0.0.1:{edge_port}", f"http://127.0.0.1:{telegram_port}"
    try:
        pids = {"fake telegram": env.fake_telegram(telegram_port).proc.pid, "edge": env.edge(edge_port).proc.pid}
        for i in range(processes):
            pids[f"chat-{i}"] = env.worker(f"chat-{i}", threads=threads, queues=("updates", "funnel")).proc.pid
        pids["maintenance"] = env.worker("maintenance", threads=2, queues=("maintenance",)).proc.pid
        for i in range(broadcast_processes):
            pids[f"broadcasts-{i}"] = env.worker(f"broadcasts-{i}", threads=broadcast_threads,
                                                 queues=("broadcasts",)).proc.pid  # fmt: skip
        warm_up(edge, telegram)
        redis = redis_pid(urlparse(settings.REDIS_URL).port or 6379)
        if redis is not None:
            pids["redis"] = redis
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        pids["clock"] = env.clock().proc.pid  # the broadcasts start at its first tick
        before["clock"] = 0.0
        base = int(time.time()) * 100_000  # the funnel's chats, in a range of their own
        sent, acks, failures = asyncio.run(_drive(edge, rate, seconds, base))
        wait_until(lambda: done(ids), 3600, "every broadcast done", interval=1.0)
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        calls = httpx.get(f"{telegram}/_calls", timeout=300).json()
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    by_bot: dict[str, list[float]] = {}
    seen: set[tuple[str, int]] = set()
    duplicates = 0
    for c in calls:
        if c["method"] == "sendMessage" and c["params"].get("text") == TEXT:
            by_bot.setdefault(c["token"], []).append(c["at"])
            duplicates += (c["token"], c["params"]["chat_id"]) in seen
            seen.add((c["token"], c["params"]["chat_id"]))
    every = sorted(t for times in by_bot.values() for t in times)
    span = (every[-1] - every[0]) if len(every) > 1 else 0.0
    allowed = bots * 30  # what Telegram allows the bots together (our window keeps a margin below it)
    achieved = len(every) / span if span else 0.0
    per_bot = [len(times) / (max(times) - min(times)) for times in by_bot.values() if len(times) > 1]
    results["broadcast"] = {
        "messages": len(every),
        "sent_twice": duplicates,
        "seconds": round(span, 1),
        "messages_per_second": round(achieved, 1),
        "allowed_per_second": round(allowed, 1),
        "share_of_allowed": round(achieved / allowed, 3) if allowed else None,
        "per_bot_per_second_min": round(min(per_bot), 1) if per_bot else None,
        "most_in_any_second_by_one_bot": max((max_in_a_second(t) for t in by_bot.values()), default=0),
        "cpu_ms_per_message": {name: round(s * 1000 / max(len(every), 1), 3) for name, s in used.items()},
        "cpu_ms_per_message_total": round(sum(used.values()) * 1000 / max(len(every), 1), 3),
        "broadcast_processes": broadcast_processes,
        "broadcast_threads": broadcast_threads,
    }
    results["welcome_during_broadcast"] = welcomes_meanwhile(calls, sent, acks, failures, base, rate, seconds)
    first: dict[int, float] = {}
    for c in calls:
        if c["method"] == "sendMessage" and c["params"].get("chat_id") in sent:
            first.setdefault(c["params"]["chat_id"], c["at"])
    latencies = [(at - sent[chat]) * 1000 for chat, at in first.items()]
    results["welcome_during_broadcast"]["p90_ms"] = percentile(latencies, 0.9)
    results["whatsapp_scale"] = whatsapp_scale((WHATSAPP_SMALL, whatsapp_leads), processes=1, threads=8)
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    b, w = results["broadcast"], results["welcome_during_broadcast"]
    cpu = ", ".join(f"{name} {ms}" for name, ms in b["cpu_ms_per_message"].items())
    setup = (f"{results['bots']} bots × {results['leads_per_bot']} leads, one broadcast each, at once "
             f"({results['lanes_per_broadcast']} lanes each; {b['broadcast_processes']} broadcasts processes × "
             f"{b['broadcast_threads']} threads)")  # fmt: skip
    achieved = (f"{b['messages_per_second']} of {b['allowed_per_second']} allowed ({b['share_of_allowed']:.1%}); "
                f"{b['messages']} in {b['seconds']} s ({b['sent_twice']} twice); slowest bot "
                f"{b['per_bot_per_second_min']}/s")  # fmt: skip
    welcome = (f"p50 {w['p50_ms']} ms, p90 {w['p90_ms']} ms, p99 {w['p99_ms']} ms "
               f"({w['welcomes']}/{w['updates']} welcomes)")  # fmt: skip
    rows = [
        ("broadcasts", setup),
        ("messages/s achieved", achieved),
        ("most sends by one bot in any second (at the fake)", str(b["most_in_any_second_by_one_bot"])),
        ("CPU per message", f"{b['cpu_ms_per_message_total']} ms in all ({cpu})"),
        (f"/start → welcome at {w['rate_per_second']}/s to the same bots meanwhile", welcome),
    ]
    for size in results["whatsapp_scale"]:
        cpu = ", ".join(f"{name} {ms}" for name, ms in size["cpu_ms_per_message"].items())
        rows.append((f"WhatsApp Cloud number with {size['leads']:,} leads: CPU per message",
                     f"{size['cpu_ms_per_message_total']} ms in all ({cpu}); {size['messages_measured']} messages "
                     f"at {size['messages_per_second']}/s"))  # fmt: skip
    report("broadcast", results, rows, out)
