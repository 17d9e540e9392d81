"""`python -m ops bench followups`: N due follow-ups (downsells) across B bots, drained by the chat
workers and the clock against the local fake Telegram: time to drain, sends per second, the cost
of the clock's claim per tick, and /start → welcome latency while the drain runs (the scan and the
sends must not slow the funnel). Uses REDIS_URL and DATABASE_URL as given (ops/bench starts
throwaway ones). Results go to --out as JSON and Markdown, with the machine's figures."""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from ops.benchmarks.driver import BOTS, against_the_funnel, machine, report, seed_leads, seller_config
from ops.procs import Platform, free_port


def bench_config(bots: int) -> dict[str, Any]:
    downsell = {"when": "not_bought", "delay": "1h", "text": "Volte! 50% off.", "offer": "vip", "discount_percent": 50}
    offer = {"id": "vip", "label": "VIP", "price": "19.90", "delivery_link": "https://t.me/+V"}
    return seller_config(bots, offer, downsells=[downsell])


def seed(total: int, bots: int) -> None:
    """`total` leads spread over the bots, each with one downsell due now."""
    import catalog
    from catalog.snapshot import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Followup, Gateway

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        # The funnel is driven over the first BOTS bench bots: configure them even when fewer are seeded.
        catalog.apply(catalog.parse(bench_config(max(bots, BOTS)), known))
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
    from db import sql
    from db.database import init_db, utcnow

    database = init_db()
    timings = []
    with database.connection_context():
        for _ in range(runs):
            with database.atomic() as txn:
                started = time.perf_counter()
                sql.claim_due("followup", DUE, utcnow(), LEASE, limit=500)
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
    results["whatsapp_backlog"] = whatsapp_backlog()
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    d, w, c = results["drain"], results["welcome_during_drain"], results["claim_500"]
    b = results["whatsapp_backlog"]
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
            f"{b['backlog']} downsells due at once on one 10/min WhatsApp number, {b['expiries']} Telegram "
            f"expiries due over 60 s, one followups process × 2 threads, {b['seconds']:.0f} s",
            f"live follow-up messages in Redis max {b['live_messages_max']} (p50 {b['live_messages_p50']}); "
            f"WhatsApp sent {b['whatsapp_sent']}, still due {b['whatsapp_still_due']}; expiries done "
            f"{b['expiries_done']}/{b['expiries']}, late p50 {b['expiry_late_p50_s']} s, "
            f"max {b['expiry_late_max_s']} s",
        ),
        (
            f"/start → welcome at {w['rate_per_second']}/s during the drain",
            f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms ({w['welcomes']}/{w['updates']} welcomes)",
        ),
    ]
    report("followups", results, rows, out)


# --- a WhatsApp backlog beside Telegram expiries -----------------------------------------------------

WA_BOT = "wa-down"
WA_BACKLOG = 5_000
EXPIRIES = 200


def seed_backlog(fake: str) -> dict[int, dt.datetime]:
    """WA_BACKLOG downsells due now on one Evolution number at 10 a minute, and EXPIRIES Telegram
    subscriptions of the bench bots ending over the next 60 s (from 5 s on), each with its expiry.
    Returns each expiry row's due time."""
    import catalog
    from catalog.snapshot import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Followup, Gateway, Lead, Subscription
    from ops.benchmarks import subscriptions as bench_subscriptions

    data = bench_subscriptions.bench_config(BOTS)
    downsell = {"when": "not_bought", "delay": "1h", "text": "Volte! 50% off.", "offer": "vip", "discount_percent": 50}
    data["bots"].append({"id": WA_BOT, "channel": "evolution", "number": "5511900008888", "webhook_secret": "s",
                         "evolution_url": fake, "instance": "bench-down", "apikey": "K", "gateway": "bench-gw",
                         "offers": [{"id": "vip", "label": "VIP", "price": "19.90", "delivery_link": "https://x/v"}],
                         "welcome": {"text": "Olá!"}, "downsells": [downsell]})  # fmt: skip
    database = init_db()
    migrate(database)
    dues: dict[int, dt.datetime] = {}
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        catalog.apply(catalog.parse(data, known))
        bots = load_bots()
        now = utcnow()
        base = 5511_6000_0000 + int(time.time()) % 10_000 * 10_000
        with database.atomic():
            for start in range(0, WA_BACKLOG, 1000):
                Lead.insert_many([{"bot": WA_BOT, "person_id": base + n, "chat_id": base + n, "first_name": "L"}
                                  for n in range(start, min(start + 1000, WA_BACKLOG))]).execute()  # fmt: skip
            lead_ids = [lead.id for lead in Lead.select(Lead.id).where(Lead.bot == WA_BOT)]
            offer = bots[WA_BOT].offers[0].id
            for start in range(0, len(lead_ids), 1000):
                Followup.insert_many([{"key": f"down:{lead_id}:0", "bot_id": WA_BOT, "lead_id": lead_id,
                                       "kind": "downsell", "position": 0, "offer_id": offer,
                                       "amount": Decimal("9.95"), "due_at": now, "state": "scheduled", "attempts": 0,
                                       "created_at": now} for lead_id in lead_ids[start : start + 1000]])\
                    .execute()  # fmt: skip
            tg = [Lead.create(bot=f"bench-{i % BOTS}", person_id=7_000_000 + i, chat_id=7_000_000 + i,
                              first_name="S") for i in range(EXPIRIES)]  # fmt: skip
            for i, lead in enumerate(tg):
                bot_id = f"bench-{i % BOTS}"
                bot = bots[bot_id]
                ends = now + dt.timedelta(seconds=5 + 60 * i / EXPIRIES)
                sub = Subscription.create(bot_id=bot_id, lead_id=lead.id, chat_id=bot.offers[0].delivery_chat_id,
                                          offer_id=bot.offers[0].id, started_at=now, ends_at=ends, state="active",
                                          renewals=0, created_at=now, updated_at=now)  # fmt: skip
                epoch = int(ends.replace(tzinfo=dt.UTC).timestamp())
                row = Followup.create(key=f"expire:{sub.id}:{epoch}", bot_id=bot_id, lead_id=lead.id,
                                      kind="expiry", position=0, offer_id=sub.offer_id, amount=Decimal("29.90"),
                                      subscription_id=sub.id, due_at=ends, state="scheduled", attempts=0,
                                      created_at=now)  # fmt: skip
                dues[row.id] = ends
    return dues


def whatsapp_backlog(seconds: float = 70.0) -> dict[str, Any]:
    """The followups process (2 threads, as the Procfile runs it) and the clock, for `seconds`, with
    the backlog and the expiries of `seed_backlog`: the live follow-up messages in Redis, sampled
    twice a second, and each expiry's lateness (its removal recorded − its due time)."""
    from actors.broker import FOLLOWUPS, broker
    from db.database import init_db
    from db.models import Followup

    work = Path(tempfile.mkdtemp(prefix="grimbots-bench-wa-backlog-"))
    telegram_port, fake_port = free_port(), free_port()
    fake = f"http://127.0.0.1:{fake_port}"
    dues = seed_backlog(fake)
    env = Platform(work, TELEGRAM_API_BASE=f"http://127.0.0.1:{telegram_port}", LOG_LEVEL="WARNING",
                   EVOLUTION_TYPING_MS="0")  # fmt: skip
    names = [f"{broker.namespace}:{q}.msgs" for q in (FOLLOWUPS, f"{FOLLOWUPS}.DQ")]
    live: list[int] = []
    try:
        env.fake_telegram(telegram_port)
        env.fake_whatsapp(fake_port)
        env.worker("followups", threads=2, queues=("followups",))
        env.clock()
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            live.append(sum(int(broker.client.hlen(name)) for name in names))
            time.sleep(0.5)
        sent_wa = len(httpx.get(f"{fake}/_calls", timeout=60).json())
    finally:
        env.close()
        shutil.rmtree(work, ignore_errors=True)
    with init_db().connection_context():
        rows = list(Followup.select().where(Followup.id.in_(list(dues))))
        due_wa = Followup.select().where((Followup.bot_id == WA_BOT) & (Followup.state == "scheduled")).count()
    late = [(r.sent_at - dues[r.id]).total_seconds() for r in rows if r.sent_at is not None]
    return {"backlog": WA_BACKLOG, "rate_per_minute": 10, "seconds": seconds, "live_messages_max": max(live),
            "live_messages_p50": statistics.median(live), "whatsapp_sent": sent_wa, "whatsapp_still_due": due_wa,
            "expiries": len(dues), "expiries_done": len(late), "expiry_late_p50_s": round(statistics.median(late), 2)
            if late else None, "expiry_late_max_s": round(max(late), 2) if late else None}  # fmt: skip
