"""`python -m ops bench followups`: N due follow-ups (downsells) across B bots, drained by the chat
workers and the clock against the local fake Telegram: time to drain, sends per second, the cost
of the clock's claim per tick, and /start → welcome latency while the drain runs (the scan and the
sends must not slow the funnel). Uses REDIS_URL and DATABASE_URL as given (ops/bench starts
throwaway ones). Results go to --out as JSON and Markdown, with the machine's figures."""

from __future__ import annotations

import statistics
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from ops.bench import BOTS, against_the_funnel, machine, report, seed_leads, seller_config


def bench_config(bots: int) -> dict[str, Any]:
    downsell = {"when": "not_bought", "delay": "1h", "text": "Volte! 50% off.", "offer": "vip", "discount_percent": 50}
    offer = {"id": "vip", "label": "VIP", "price": "19.90", "delivery_link": "https://t.me/+V"}
    return seller_config(bots, offer, downsells=[downsell])


def seed(total: int, bots: int) -> None:
    """`total` leads spread over the bots, each with one downsell due now."""
    from db.catalog import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Followup, Gateway
    from ops import config

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        # The funnel is driven over the first BOTS bench bots: configure them even when fewer are seeded.
        config.apply(config.parse(bench_config(max(bots, BOTS)), known))
        offers = {bot_id: bot.offers[0].id for bot_id, bot in load_bots().items()}
        now = utcnow()
        for chunk in seed_leads(database, bots, total, now):
            Followup.insert_many(
                [
                    {
                        "key": f"down:{lead_id}:0",
                        "bot_id": bot_id,
                        "lead_id": lead_id,
                        "kind": "downsell",
                        "position": 0,
                        "offer_id": offers[bot_id],
                        "amount": Decimal("9.95"),
                        "due_at": now,
                        "state": "scheduled",
                        "attempts": 0,
                        "created_at": now,
                    }
                    for lead_id, bot_id, _ in chunk
                ]
            ).execute()


def claim_cost(runs: int = 10) -> dict[str, float]:
    """The clock's claim of 500 due rows, as each tick runs it (rolled back: nothing is taken)."""
    from actors.followups import DUE, LEASE
    from db import hot
    from db.database import init_db, utcnow

    database = init_db()
    timings = []
    with database.connection_context():
        for _ in range(runs):
            with database.atomic() as txn:
                started = time.perf_counter()
                hot.claim_due("followup", DUE, utcnow(), LEASE, limit=500)
                timings.append((time.perf_counter() - started) * 1000)
                txn.rollback()
    return {"median_ms": round(statistics.median(timings), 2), "max_ms": round(max(timings), 2)}


def remaining(last_seeded: int) -> dict[str, int]:
    """The seeded follow-ups by state (not those the /start run schedules for an hour later)."""
    from peewee import fn

    from db.database import init_db
    from db.models import Followup

    with init_db().connection_context():
        query = Followup.select(Followup.state, fn.COUNT(Followup.id)).where(Followup.id <= last_seeded)
        rows: list[tuple[str, int]] = list(query.group_by(Followup.state).tuples())  # type: ignore[arg-type]
        return {state: int(n) for state, n in rows}


def last_id() -> int:
    from peewee import fn

    from db.database import init_db
    from db.models import Followup

    with init_db().connection_context():
        return int(Followup.select(fn.MAX(Followup.id)).scalar() or 0)


def run(
    *,
    total: int,
    bots: int,
    rate: int,
    seconds: float,
    out: Path,
    processes: int,
    threads: int,
    followup_threads: int = 2,
) -> dict[str, Any]:
    seed(total, bots)
    seeded = last_id()
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "followups": total,
        "bots": bots,
        "claim_500": claim_cost(),
    }
    drained = against_the_funnel("followups", lambda: remaining(seeded).get("scheduled", 0) == 0, rate=rate,
                                 seconds=seconds, processes=processes, threads=threads,
                                 followup_threads=followup_threads)  # fmt: skip
    states = remaining(seeded)
    results["drain"] = {
        "seconds": round(drained.seconds, 1),
        "sent": states.get("sent", 0),
        "sends_per_second": round(states.get("sent", 0) / drained.seconds, 1),
        "states": states,
        "worker_processes": processes,
        "worker_threads": threads,
        "followup_threads": followup_threads,
    }
    results["welcome_during_drain"] = drained.funnel
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    d, w, c = results["drain"], results["welcome_during_drain"], results["claim_500"]
    rows = [
        ("follow-ups due at once", f"{results['followups']} over {results['bots']} bots"),
        (
            "time to drain",
            f"{d['seconds']} s ({d['sends_per_second']} sends/s; 1 followups process × {d['followup_threads']} "
            f"threads beside {d['worker_processes']} chat processes × {d['worker_threads']} threads); "
            f"states {d['states']}",
        ),
        ("the clock's claim of 500 due rows", f"median {c['median_ms']} ms, max {c['max_ms']} ms"),
        (
            f"/start → welcome at {w['rate_per_second']}/s during the drain",
            f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms ({w['welcomes']}/{w['updates']} welcomes)",
        ),
    ]
    report("followups", results, rows, out)
