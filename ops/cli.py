"""`python -m ops`: the operator's commands (CONTRACT §1)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import settings


def _database():  # type: ignore[no-untyped-def]
    from db.database import init_db

    return init_db()


def _migrate_quietly() -> list[str]:
    from db.migrate import migrate

    return migrate(_database())


@click.group(help="Operate the GrimBots platform. Run from the repository root with the venv's python.")
def cli() -> None:
    pass


@cli.command(help="Bring the database schema up to date. Safe to run twice.")
def migrate() -> None:
    applied = _migrate_quietly()
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("schema is up to date")


@cli.command(
    help="Create or update gateways, bots and offers from a TOML file. Validates the whole file first; "
    "nothing is written when any key is wrong. Idempotent."
)
@click.argument("file", type=click.Path(path_type=Path))
def apply(file: Path) -> None:
    from db.models import Gateway
    from ops import config

    database = _database()
    _migrate_quietly()
    with database.connection_context():
        known = {g.id for g in Gateway.select(Gateway.id)}
        try:
            parsed = config.load(file, known)
        except config.ConfigError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
        changes = config.apply(parsed)
    for line in changes:
        click.echo(line)
    if not changes:
        click.echo("nothing changed")


ALLOWED_UPDATES = ["message", "callback_query", "my_chat_member"]


@cli.command(
    "set-webhooks",
    help="Call Telegram setWebhook for every bot: PUBLIC_BASE_URL/webhook/telegram/{bot id}, "
    "the bot's secret token, and the update types the platform handles.",
)
def set_webhooks() -> None:
    from db.catalog import load_bots
    from gateways.telegram import TelegramError, TelegramGateway, default_client

    database = _database()
    with database.connection_context():
        bots = load_bots()
    telegram = TelegramGateway(default_client(settings.TELEGRAM_TIMEOUT_SECONDS), settings.TELEGRAM_API_BASE)
    failures = 0
    for bot in sorted(bots.values(), key=lambda b: b.id):
        url = f"{settings.PUBLIC_BASE_URL}/webhook/telegram/{bot.id}"
        try:
            telegram.set_webhook(bot.token, url, bot.webhook_secret, ALLOWED_UPDATES)
        except TelegramError as exc:
            failures += 1
            click.echo(f"bot {bot.id}: failed: {exc}", err=True)
            continue
        click.echo(f"bot {bot.id}: webhook set to {url}")
    if not bots:
        click.echo("no bots configured")
    if failures:
        sys.exit(1)


def _broker_client():  # type: ignore[no-untyped-def]
    from actors.broker import redis_client

    return redis_client()


@cli.command(
    help="Per queue: ready, in-flight, delayed and dead-lettered messages, and the oldest ready message's age."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def queues(as_json: bool) -> None:
    from actors.broker import QUEUES
    from ops.queues import queue_stats

    client = _broker_client()
    stats = [queue_stats(client, q) for q in QUEUES]
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in stats], indent=2))
        return
    click.echo(f"{'queue':<14}{'ready':>8}{'in-flight':>11}{'delayed':>9}{'dead':>7}  oldest ready")
    for s in stats:
        age = "-" if s.oldest_ready_age_seconds is None else f"{s.oldest_ready_age_seconds:.1f}s"
        click.echo(f"{s.queue:<14}{s.ready:>8}{s.in_flight:>11}{s.delayed:>9}{s.dead:>7}  {age}")


@cli.command(help="One screen: live processes (by heartbeat), queues, worker outcomes and error rate, updates.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    from actors.broker import QUEUES
    from actors.metrics import processes, read
    from ops.queues import queue_stats

    client = _broker_client()
    seen = processes(client)
    stats = [queue_stats(client, q).as_dict() for q in QUEUES]
    outcomes: dict[str, float] = {}
    updates: dict[str, float] = {}
    for name, labels, value in read(client):
        if name == "grimbots_worker_messages_total":
            outcomes[labels["outcome"]] = outcomes.get(labels["outcome"], 0) + value
        elif name == "grimbots_updates_total":
            key = "repeated" if labels["repeated"] == "true" else labels["kind"]
            updates[key] = updates.get(key, 0) + value
    handled = sum(outcomes.values())
    errors = outcomes.get("retried", 0) + outcomes.get("failed", 0)
    error_rate = errors / handled if handled else 0.0
    if as_json:
        doc = {"processes": seen, "queues": stats, "messages": outcomes, "error_rate": error_rate, "updates": updates}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"processes ({len(seen)} alive)")
    for p in seen:
        extra = " ".join(f"{k}={v}" for k, v in p.items() if k not in ("role", "host", "pid", "age_seconds"))
        click.echo(f"  {p['role']:<8}{p['host']}:{p['pid']:<8} beat {p['age_seconds']}s ago  {extra}")
    if not any(p["role"] == "worker" for p in seen):
        click.echo("  no worker is alive: nothing is being processed")
    click.echo("queues")
    for q in stats:
        age = "-" if q["oldest_ready_age_seconds"] is None else f"{q['oldest_ready_age_seconds']:.1f}s"
        depths = f"ready {q['ready']:<6} in flight {q['in_flight']:<5} delayed {q['delayed']:<5} dead {q['dead']:<5}"
        click.echo(f"  {q['queue']:<12} {depths} oldest {age}")
    retried, dead = int(outcomes.get("retried", 0)), int(outcomes.get("failed", 0))
    click.echo(f"messages  {int(handled)} handled, {retried} retried, {dead} dead-lettered, "
               f"error rate {error_rate:.2%} (since the counters began)")  # fmt: skip
    click.echo("updates   " + (", ".join(f"{k} {int(v)}" for k, v in sorted(updates.items())) or "none yet"))
    click.echo("payments  not tracked yet (charges and revenue come with the payments stage)")


@cli.command("retry-dead", help="Move dead-lettered messages back to their queue (all queues unless --queue).")
@click.option("--queue", "queue_name", help="Only this queue.")
def retry_dead_command(queue_name: str | None) -> None:
    from actors.broker import QUEUES
    from ops.queues import retry_dead

    if queue_name is not None and queue_name not in QUEUES:
        raise click.ClickException(f"--queue: unknown queue {queue_name!r} (one of {', '.join(QUEUES)})")
    client = _broker_client()
    for q in [queue_name] if queue_name else list(QUEUES):
        click.echo(f"{q}: moved {retry_dead(client, q)} message(s) back")


@cli.command(help="Benchmarks: `edge` (ack throughput and latency vs bare Starlette, /start → welcome latency).")
@click.argument("what", type=click.Choice(["edge"]))
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each measured run.")
@click.option("--concurrency", default=64, show_default=True, help="Open connections for the ack benchmark.")
@click.option("--rate", default=200, show_default=True, help="Updates per second for the welcome benchmark.")
@click.option("--processes", default=2, show_default=True, help="Worker processes for the welcome benchmark.")
@click.option("--threads", default=4, show_default=True, help="Threads per worker process.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("var/bench"), show_default=True)
def bench(what: str, seconds: float, concurrency: int, rate: int, processes: int, threads: int, out: Path) -> None:
    from ops import bench as benchmarks

    benchmarks.run(seconds=seconds, concurrency=concurrency, rate=rate, out=out, processes=processes, threads=threads)
