"""`python -m ops bench broadcast`: B bots × L leads each, one broadcast per bot created at once,
sent by the broadcasts workers against the local fake Telegram while /start arrives at the same
bots. Reports messages per second achieved against what the bots are allowed together (30 per
second each), the most any bot sent in one second (measured at the fake), CPU per message per
process, and /start → welcome latency meanwhile (the funnel goes first). Uses REDIS_URL and
DATABASE_URL as given (ops/bench starts throwaway ones). Results go to --out, with the machine."""

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
from ops.bench import (
    BOTS,
    _drive,
    bench_config,
    cpu_seconds,
    machine,
    percentile,
    redis_pid,
    report,
    seed_leads,
    warm_up,
    welcomes_meanwhile,
)
from ops.procs import Platform, free_port, wait_until

TEXT = "BENCH-BROADCAST: promoção de hoje!"


def seed(bots: int, leads: int) -> list[int]:
    """The bots (the bench's), `leads` leads each, and one broadcast per bot to all of them
    (scheduled now: the clock starts them once it runs). Returns the broadcasts' ids."""
    from actors import broadcasts
    from db.catalog import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Gateway
    from ops import config

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        # The funnel is driven over the first BOTS bench bots: configure them even when fewer broadcast.
        config.apply(config.parse(bench_config(max(bots, BOTS)), known))
        for _ in seed_leads(database, bots, bots * leads, utcnow()):
            pass  # leads only: the broadcasts freeze them when they start
        configured = load_bots()
        return [broadcasts.create(configured[f"bench-{b}"], "all", TEXT).id for b in range(bots)]


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
        broadcast_processes: int = 2, broadcast_threads: int = 40) -> dict[str, Any]:  # fmt: skip
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
    report("broadcast", results, rows, out)
