"""`python -m ops bench subscriptions`: N active subscriptions over the bench bots, E of them
expiring within the same minute; the clock and the followups worker remove each member (ban +
unban) and tell them, against the local fake Telegram. Reports how long until every one due was
removed, Telegram calls per second achieved (against 30 messages/s per bot), and /start → welcome
latency meanwhile. Uses REDIS_URL and DATABASE_URL as given (ops/bench starts throwaway ones)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from ops.benchmarks.driver import BOTS, against_the_funnel, machine, report, seed_leads, seller_config

CHAT_BASE = -1_009_000_000_000


def bench_config(bots: int) -> dict[str, Any]:
    data = seller_config(bots, {"id": "vip", "label": "VIP", "price": "29.90", "duration": "30d"},
                         subscriptions={"expired_text": "Sua assinatura venceu. Toque para renovar."})  # fmt: skip
    for i, bot in enumerate(data["bots"]):
        bot["offers"][0]["delivery_chat_id"] = CHAT_BASE - i
    return data


def seed(total: int, expiring: int, bots: int) -> tuple[int, dt.datetime]:
    """`total` active subscriptions, the first `expiring` of them ending within the next minute
    (from 10 s on), each with its expiry row. Returns (the last expiring row's id, the first end)."""
    from decimal import Decimal

    import catalog
    from catalog.snapshot import load_bots
    from db.database import init_db, utcnow
    from db.migrate import migrate
    from db.models import Followup, Gateway, Subscription

    database = init_db()
    migrate(database)
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        catalog.apply(catalog.parse(bench_config(bots), known))
        offers = {bot_id: bot.offers[0].id for bot_id, bot in load_bots().items()}
        now = utcnow()
        first_end = now + dt.timedelta(seconds=10)
        last_expiring = 0
        for leads in seed_leads(database, bots, total, now):
            subs = []
            for lead_id, bot_id, i in leads:
                ends = (
                    first_end + dt.timedelta(seconds=50 * i / expiring) if i < expiring else now + dt.timedelta(days=30)
                )
                subs.append(
                    {
                        "bot_id": bot_id,
                        "lead_id": lead_id,
                        "chat_id": CHAT_BASE - int(bot_id.split("-")[1]),
                        "offer_id": offers[bot_id],
                        "started_at": now,
                        "ends_at": ends,
                        "state": "active",
                        "renewals": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            Subscription.insert_many(subs).execute()
            sub_query = (
                Subscription.select(
                    Subscription.id,
                    Subscription.bot_id,
                    Subscription.lead_id,
                    Subscription.offer_id,
                    Subscription.ends_at,
                )
                .where(Subscription.lead_id.in_([lead_id for lead_id, _, _ in leads]))
                .tuples()
            )
            rows: list[tuple[int, str, int, int, dt.datetime]] = list(sub_query)  # type: ignore[arg-type]
            expiries = []
            for sub_id, bot_id, lead_id, offer_id, ends in rows:
                epoch = int(ends.replace(tzinfo=dt.UTC).timestamp())
                expiries.append(
                    {
                        "key": f"expire:{sub_id}:{epoch}",
                        "bot_id": bot_id,
                        "lead_id": lead_id,
                        "kind": "expiry",
                        "position": 0,
                        "offer_id": offer_id,
                        "amount": Decimal("29.90"),
                        "subscription_id": sub_id,
                        "due_at": ends,
                        "state": "scheduled",
                        "attempts": 0,
                        "created_at": now,
                    }
                )
            Followup.insert_many(expiries).execute()
        last_expiring = int(
            Followup.select(Followup.id)
            .where((Followup.kind == "expiry") & (Followup.due_at < now + dt.timedelta(days=1)))
            .order_by(Followup.id.desc())
            .scalar()
            or 0
        )
    return last_expiring, first_end


def due_left(last_expiring: int) -> int:
    """Expiries of the seeded ending subscriptions still to do (by id, not by due_at: a claimed row's
    due_at has moved on by its lease while its send waits in the queue)."""
    from db.database import init_db
    from db.models import Followup

    with init_db().connection_context():
        return int(
            Followup.select()
            .where((Followup.kind == "expiry") & (Followup.state == "scheduled") & (Followup.id <= last_expiring))
            .count()
        )


def run(
    *,
    total: int,
    expiring: int,
    rate: int,
    seconds: float,
    out: Path,
    processes: int,
    threads: int,
    followup_threads: int = 4,
) -> dict[str, Any]:
    from db.database import utcnow

    last_expiring, first_end = seed(total, expiring, BOTS)
    last_end = first_end + dt.timedelta(seconds=50)
    results: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "subscriptions": total,
        "expiring": expiring,
        "bots": BOTS,
    }
    drained = against_the_funnel("subscriptions", lambda: utcnow() > last_end and due_left(last_expiring) == 0,
                                 rate=rate, seconds=seconds, processes=processes, threads=threads,
                                 followup_threads=followup_threads)  # fmt: skip
    expired_text = bench_config(1)["bots"][0]["subscriptions"]["expired_text"]
    removal = [c for c in drained.calls if c["method"] in ("banChatMember", "unbanChatMember")
               or (c["method"] == "sendMessage" and c["params"].get("text") == expired_text)]  # fmt: skip
    starts = [c["at"] for c in removal]
    span = (max(starts) - min(starts)) if starts else 0.0
    results["removal"] = {
        "last_due_to_all_removed_seconds": round((drained.finished_at - last_end).total_seconds(), 1),
        "bans": sum(1 for c in removal if c["method"] == "banChatMember"),
        "telegram_calls": len(removal),
        "calls_per_second": round(len(removal) / span, 1) if span else None,
        "per_bot_message_limit": 30,
        "followup_threads": followup_threads,
    }
    results["welcome_meanwhile"] = drained.funnel
    write(results, out)
    return results


def write(results: dict[str, Any], out: Path) -> None:
    r, w = results["removal"], results["welcome_meanwhile"]
    rows = [
        (
            "subscriptions",
            f"{results['subscriptions']} active over {results['bots']} bots, {results['expiring']} "
            "ending within the same 50 s",
        ),
        ("all removed", f"{r['last_due_to_all_removed_seconds']} s after the last one was due ({r['bans']} bans)"),
        (
            "Telegram calls",
            f"{r['telegram_calls']} (ban, unban, message) at {r['calls_per_second']}/s; limit 30 "
            f"messages/s per bot × {results['bots']} bots",
        ),
        (
            f"/start → welcome at {w['rate_per_second']}/s meanwhile",
            f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms ({w['welcomes']}/{w['updates']} welcomes)",
        ),
    ]
    report("subscriptions", results, rows, out)
