"""`python -m ops`: the operator's commands (CONTRACT §1)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

import settings


def _reais(amount: str) -> str:
    """ "19.9" → "R$ 19,90", as buyers and sellers read prices (JSON output keeps "19.90")."""
    from decimal import Decimal

    from actors.payments import brl

    return f"R$ {brl(Decimal(amount))}"


def _database():  # type: ignore[no-untyped-def]
    from db.database import init_db

    return init_db()


def _migrate_quietly() -> list[str]:
    from db.migrate import migrate

    return migrate(_database())


class Commands(click.Group):
    """Every command: Redis or the database not answering is one clear line and exit status 1,
    naming what is down (never a traceback, never a password)."""

    def invoke(self, ctx: click.Context) -> Any:
        import redis
        from peewee import OperationalError

        try:
            return super().invoke(ctx)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(f"Redis at {_safe_url(settings.REDIS_URL)} is not answering "
                                       f"({type(exc).__name__}): start it, or set REDIS_URL") from None  # fmt: skip
        except OperationalError as exc:
            raise click.ClickException(f"the database at {_safe_url(settings.DATABASE_URL)} is not answering "
                                       f"({type(exc).__name__}): start it, or set DATABASE_URL") from None  # fmt: skip


def _safe_url(url: str) -> str:
    """A URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


@click.group(cls=Commands, invoke_without_command=True, help="Operate the GrimBots platform. Run from the "
             "repository root with the venv's python (.venv/bin/python -m ops ...).")  # fmt: skip
@click.pass_context
def cli(ctx: click.Context) -> None:
    if ctx.invoked_subcommand is None:  # bare `python -m ops`: what it can do, not an error
        click.echo(ctx.get_help())


@cli.command("rotate-credentials", help="Re-encrypt every stored credential with the current SECRET_KEY (after "
             "a rotation: the old key in SECRET_KEY_FALLBACKS until this has run). Safe to run twice.")  # fmt: skip
def rotate_credentials() -> None:
    from db.database import transaction
    from db.models import Bot, Gateway

    database = _database()
    with database.connection_context(), transaction():
        count = 0
        for model in (Gateway, Bot):
            for row in model.select():
                row.save()  # every field written again: encrypted fields with the current key
                count += 1
    click.echo(f"re-encrypted the credentials of {count} gateway(s) and bot(s) with the current SECRET_KEY")


@cli.command(help="Bring the database schema up to date. Safe to run twice.")
def migrate() -> None:
    applied = _migrate_quietly()
    if applied:
        for name in applied:
            click.echo(f"applied {name}")
    else:
        click.echo("schema is up to date")


@cli.command(
    help="Create or update gateways, bots, offers and redirect pools from a TOML file, in the account it names "
    '(account = "slug" at the top; without it, the account `default`). Validates the whole file first; nothing is '
    "written when any key is wrong, or names another account's gateway, bot, pool or bot token. Idempotent."
)
@click.argument("file", type=click.Path(path_type=Path))
def apply(file: Path) -> None:
    import catalog

    database = _database()
    _migrate_quietly()
    with database.connection_context():
        try:
            data = catalog.read(file)
            known, bots = catalog.owned(catalog.account_for(catalog.account_of(data)))
            changes = catalog.apply(catalog.parse(data, known, bots))
        except catalog.ConfigError as exc:
            raise click.ClickException(f"{file}: {exc}") from None
    for line in changes:
        click.echo(line)
    if not changes:
        click.echo("nothing changed")


# chat_member and chat_join_request: subscriptions (who joins a VIP chat, and through which link).


@cli.command(
    "set-webhooks",
    help="Point every bot's provider at the edge: Telegram setWebhook (PUBLIC_BASE_URL/webhook/telegram/{bot id}, "
    "the bot's secret token, the update types the platform handles); Evolution webhook/set "
    "(PUBLIC_BASE_URL/webhook/whatsapp/{bot id}, with the bearer secret). Cloud API numbers are "
    "subscribed in Meta's app dashboard (the URL is printed).",
)
def set_webhooks() -> None:
    from actors.channels import standalone, webhook_url
    from catalog.snapshot import load_bots
    from gateways.channel import ChannelError

    database = _database()
    with database.connection_context():
        bots = load_bots()
    channels = standalone()
    failures = 0
    for bot in sorted(bots.values(), key=lambda b: b.id):
        url = webhook_url(bot)
        try:
            done = channels.of(bot).set_webhook(url, bot.webhook_secret)
        except ChannelError as exc:
            failures += 1
            click.echo(f"bot {bot.id}: failed: {exc}", err=True)
            continue
        click.echo(f"bot {bot.id}: {done}")
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
    from reports.queues import queue_stats

    client = _broker_client()
    stats = [queue_stats(client, q) for q in QUEUES]
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in stats], indent=2))
        return
    click.echo(f"{'queue':<14}{'ready':>8}{'in-flight':>11}{'delayed':>9}{'dead':>7}  oldest ready")
    for s in stats:
        age = "-" if s.oldest_ready_age_seconds is None else f"{s.oldest_ready_age_seconds:.1f}s"
        click.echo(f"{s.queue:<14}{s.ready:>8}{s.in_flight:>11}{s.delayed:>9}{s.dead:>7}  {age}")


def payment_summary() -> dict[str, Any]:
    from reports import payments as report

    with _database().connection_context():
        return report.last_day()


def selling_summary() -> list[dict[str, Any]]:
    import datetime as dt

    from db.database import utcnow
    from reports import selling

    with _database().connection_context():
        return selling.as_dicts(selling.totals(since=utcnow() - dt.timedelta(hours=24)))


def subscription_summary() -> list[dict[str, Any]]:
    from reports import selling

    with _database().connection_context():
        return selling.subscription_totals()


def undelivered_summary() -> list[dict[str, Any]]:
    """WhatsApp sends that did not reach the buyer in the last 24 h, per bot, kind and reason: taken
    and then failed (Cloud `failed` statuses: Meta's code and title), or refused outside the 24-hour
    window; what the buyer was owed (welcome, pix, delivery) first."""
    import datetime as dt

    from actors.statuses import OWED_PREFIXES
    from db.database import utcnow
    from db.models import OutboundMessage
    from gateways.whatsapp_cloud import OUTSIDE_WINDOW

    since = utcnow() - dt.timedelta(hours=24)
    found: dict[tuple[str, str, str], int] = {}
    with _database().connection_context():
        rows = OutboundMessage.select(OutboundMessage.bot_id, OutboundMessage.key, OutboundMessage.error).where(
            (OutboundMessage.state == "failed") & (OutboundMessage.finished_at >= since)
            & (OutboundMessage.error.startswith("whatsapp ") | (OutboundMessage.error == OUTSIDE_WINDOW)))  # fmt: skip
        for row in rows.iterator():
            kind = row.key.split(":", 1)[0]
            name = (row.bot_id, kind, row.error)
            found[name] = found.get(name, 0) + 1
    return [{"bot": b, "kind": k, "owed": k in OWED_PREFIXES, "error": e, "count": n}
            for (b, k, e), n in sorted(found.items(), key=lambda i: (i[0][1] not in OWED_PREFIXES, i[0]))]  # fmt: skip


def broadcast_summary() -> list[dict[str, Any]]:
    """Broadcasts scheduled or running now, with their counts."""
    from actors import broadcasts
    from db.models import Broadcast

    with _database().connection_context():
        live = [b.id for b in Broadcast.select(Broadcast.id).where(Broadcast.state.in_(["scheduled", "running"]))]
        return [s.as_dict() for bid in live for s in broadcasts.summaries(broadcast_id=bid)]


def pixel_summary() -> dict[str, int]:
    from reports import pixel_events

    with _database().connection_context():
        return pixel_events.last_day()


@cli.command(help="One screen: live processes (by heartbeat), queues, worker outcomes and error rate, updates, "
             "charges, revenue and pixel events of the last 24 h.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    from actors.broker import QUEUES
    from actors.metrics import processes, read
    from actors.pools import unhealthy
    from reports.queues import queue_stats

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
    live = broadcast_summary()
    undelivered = undelivered_summary()
    health = unhealthy(client)
    refused = sorted(health)
    if as_json:
        doc = {"processes": seen, "queues": stats, "messages": outcomes, "error_rate": error_rate, "updates": updates,
               "payments": payment_summary(), "pixel_events": pixel_summary(),
               "selling": selling_summary(), "subscriptions": subscription_summary(),
               "broadcasts": live, "undelivered": undelivered, "unhealthy_bots": refused,
               "unhealthy_why": {b: str(health[b].get("description") or "") for b in refused}}  # fmt: skip
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
    money = payment_summary()
    click.echo(f"payments  last 24 h: {money['charges']} charges, {money['paid']} paid, {_reais(money['revenue'])}; "
               f"deliveries waiting {money['deliveries_pending']}, failed {money['deliveries_failed']}")  # fmt: skip
    events = pixel_summary()
    click.echo("pixel     last 24 h: " + ", ".join(f"{n} {state}" for state, n in events.items()))
    for t in subscription_summary():
        click.echo(f"subs      {t['bot']}: {t['active']} active, {t['renewals_30d']} renewed, {t['churned_30d']} "
                   f"churned in 30 days, MRR {_reais(t['mrr'])}")  # fmt: skip
    for t in selling_summary():
        click.echo(f"selling   last 24 h, {t['bot']}: bumps {t['bumps_accepted']}/{t['bumps_asked']} taken, "
                   f"upsells {t['upsells_paid']}/{t['upsells_sent']} paid, "
                   f"downsells {t['downsells_paid']}/{t['downsells_sent']} paid")  # fmt: skip
    for b in live:
        click.echo(f"broadcast {b['id']} ({b['bot']}, {b['segment']}): {b['state']}, {b['sent']}/{b['total']} sent, "
                   f"{b['pending']} pending, {b['blocked']} blocked, {b['failed']} failed")  # fmt: skip
    for u in undelivered:
        owed = "OWED, not delivered" if u["owed"] else "marketing, not delivered"
        click.echo(f"whatsapp  last 24 h, {u['bot']}: {u['count']} {u['kind']} ({owed}): {u['error']}")
    if refused:
        why = ", ".join(f"{b} ({health[b].get('description') or '?'})" for b in refused)
        click.echo(f"bots      UNHEALTHY (token refused or WhatsApp number disconnected; sends wait, out of every "
                   f"pool): {why}")  # fmt: skip


@cli.command(help="Recent charges with status, amounts, times and delivery; totals per bot.")
@click.option("--bot", help="Only this bot.")
@click.option("--status", type=click.Choice(["creating", "pending", "paid", "expired", "refunded", "failed"]))
@click.option("--since-hours", type=click.IntRange(min=1), help="Only charges created in the last N hours.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Charges listed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def payments(bot: str | None, status: str | None, since_hours: int | None, limit: int, as_json: bool) -> None:
    import datetime as dt

    from db.database import utcnow
    from reports import payments as report
    from reports import selling

    since = utcnow() - dt.timedelta(hours=since_hours) if since_hours else None
    with _database().connection_context():
        lines = report.recent(bot, status, since, limit)
        sums = report.totals(bot, since)
        extra = selling.totals(bot, since)
    if as_json:
        doc = {"charges": report.as_dicts(lines), "totals": report.as_dicts(sums), "selling": selling.as_dicts(extra)}
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{'id':>7} {'bot':<12}{'offer (id)':<16}{'status':<10}{'amount':>12}{'paid':>12}  "
               f"{'delivery':<9}{'created (UTC)':<21}paid at")  # fmt: skip
    for c in lines:
        state = c.status + ("!" if c.underpaid else "")
        offer = f"{c.offer[:10]} ({c.offer_id})"
        paid = _reais(c.paid_amount) if c.paid_amount else "-"
        click.echo(f"{c.id:>7} {c.bot[:11]:<12}{offer:<16}{state:<10}{_reais(c.amount):>12}{paid:>12}  "
                   f"{c.delivery or '-':<9}{c.created_at:<21}{c.paid_at or '-'}")  # fmt: skip
        if c.error:
            click.echo(f"{'':>8}error: {c.error}")
    if not lines:
        click.echo("no charges")
    if any(c.underpaid for c in lines):
        click.echo("! = paid less than the charge's amount: flagged, not delivered")
    click.echo("totals" + (f" (last {since_hours} h)" if since_hours else ""))
    for t in sums:
        back = f" ({_reais(t.refunded)} refunded)" if t.refunded != "0.00" else ""
        click.echo(f"  {t.bot:<12} {t.charges} charges, {t.paid} paid ({t.conversion:.1%}), {_reais(t.revenue)}{back}")
    for s in extra:
        click.echo(f"  {s.bot:<12} bumps {s.bumps_accepted}/{s.bumps_asked} taken ({s.bump_take_rate:.1%}); "
                   f"upsells {s.upsells_paid} paid of {s.upsells_sent} sent; "
                   f"downsells {s.downsells_paid} paid of {s.downsells_sent} sent")  # fmt: skip


@cli.command(help="Follow-ups (upsells, downsells): each with its state, when it is or was due, and why it was "
             "cancelled or failed; counts per bot, kind and state.")  # fmt: skip
@click.option("--bot", help="Only this bot.")
@click.option("--state", type=click.Choice(["scheduled", "sent", "cancelled", "failed", "unknown"]))
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Follow-ups listed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def followups(bot: str | None, state: str | None, limit: int, as_json: bool) -> None:
    from reports import selling

    with _database().connection_context():
        lines = selling.recent(bot, state, limit)
        counts = selling.counts(bot)
    if as_json:
        click.echo(json.dumps({"followups": selling.as_dicts(lines), "counts": counts}, indent=2))
        return
    click.echo(f"{'id':>7} {'bot':<12}{'lead':>14} {'kind':<9}{'#':>2} {'price':>12} {'state':<10}"
               f"{'due (UTC)':<21}sent at")  # fmt: skip
    for f in lines:
        click.echo(f"{f.id:>7} {f.bot[:11]:<12}{f.lead:>14} {f.kind:<9}{f.position:>2} {_reais(f.amount):>12} "
                   f"{f.state:<10}{f.due_at:<21}{f.sent_at or '-'}")  # fmt: skip
        if f.error:
            click.echo(f"{'':>8}{'cancelled' if f.state == 'cancelled' else 'error'}: {f.error}")
    if not lines:
        click.echo("no follow-ups")
    click.echo("counts")
    for bot_id, kinds in sorted(counts.items()):
        for kind, states in sorted(kinds.items()):
            click.echo(f"  {bot_id:<12} {kind:<9} " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))


@cli.command(help="Subscriptions (VIP chats): buyer, chat, offer, first start, end, state; with --json a list "
             "of objects. Per bot: active, renewed and churned in 30 days, monthly recurring revenue.")  # fmt: skip
@click.option("--bot", help="Only this bot.")
@click.option("--state", type=click.Choice(["active", "expired", "refunded"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of objects.")
def subscriptions(bot: str | None, state: str | None, as_json: bool) -> None:
    from reports import selling

    # Every matching row, streamed as the database yields them: none is dropped, however many.
    with _database().connection_context():
        rows = selling.subscriptions(bot, state)
        if as_json:
            click.echo("[", nl=False)
            for n, r in enumerate(rows):
                click.echo(("," if n else "") + "\n  " + json.dumps(r), nl=False)
            click.echo("\n]")
            return
        click.echo(f"{'bot':<12}{'lead':>14} {'chat':>16} {'offer':<12}{'start (UTC)':<22}{'end (UTC)':<22}state")
        shown = 0
        for r in rows:
            click.echo(f"{r['bot'][:11]:<12}{r['lead']:>14} {r['chat']:>16} {r['offer'][:11]:<12}{r['start']:<22}"
                       f"{r['end']:<22}{r['state']}")  # fmt: skip
            if r["error"]:
                click.echo(f"{'':>12}error: {r['error']}")
            shown += 1
        totals = selling.subscription_totals(bot)
    if not shown:
        click.echo("no subscriptions")
    for t in totals:
        click.echo(f"  {t['bot']:<12} {t['active']} active, {t['renewals_30d']} renewed and {t['churned_30d']} "
                   f"churned in 30 days ({t['churn_30d']:.1%}), MRR {_reais(t['mrr'])}")  # fmt: skip


@cli.command("pixel-events", help="Recent ad-platform events (Meta Conversions API, TikTok Events API, Utmify "
             "orders) with state, attempts, the match keys they carry (never their values) and the destination's "
             "error; counts per bot, event and state.")  # fmt: skip
@click.option("--bot", help="Only this bot.")
@click.option("--destination", type=click.Choice(["meta", "tiktok", "utmify"]), help="Only this destination's.")
@click.option("--state", type=click.Choice(["pending", "sending", "sent", "failed", "expired"]))
@click.option("--event", type=click.Choice(["PageView", "ViewContent", "InitiateCheckout", "Purchase",
                                            "CompletePayment", "waiting_payment", "paid", "refunded"]))  # fmt: skip
@click.option("--since-hours", type=click.IntRange(min=1), help="Only events recorded in the last N hours.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Events listed.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def pixel_events(bot: str | None, destination: str | None, state: str | None, event: str | None,
                 since_hours: int | None, limit: int, as_json: bool) -> None:  # fmt: skip
    import datetime as dt

    from db.database import utcnow
    from reports import pixel_events as report

    since = utcnow() - dt.timedelta(hours=since_hours) if since_hours else None
    with _database().connection_context():
        lines = report.recent(bot, state, event, since, limit, destination)
        sums = report.totals(bot, state, event, since, destination)
    if as_json:
        click.echo(json.dumps({"events": report.as_dicts(lines), "totals": report.as_dicts(sums)}, indent=2))
        return
    click.echo(f"{'id':>7} {'bot':<12}{'event':<17}{'state':<9}{'tries':>5}  {'matched by':<19}{'time (UTC)':<21}"
               "sent at")  # fmt: skip
    for e in lines:
        value = f" {_reais(str(e.value))}" if e.value is not None else ""
        click.echo(f"{e.id:>7} {e.bot[:11]:<12}{e.event:<17}{e.state:<9}{e.attempts:>5}  {','.join(e.matched_by):<19}"
                   f"{e.event_time:<21}{e.sent_at or '-'}{value}  {e.destination}")  # fmt: skip
        if e.error:
            click.echo(f"{'':>8}error: {e.error}")
    if not lines:
        click.echo("no pixel events")
    click.echo("totals" + (f" (last {since_hours} h)" if since_hours else ""))
    for t in sums:
        counts = ", ".join(f"{n} {s}" for s, n in sorted(t.counts.items()))
        click.echo(f"  {t.bot:<12} {t.event:<17} {counts}")


@cli.command(help="Print an account's configuration (its gateways, bots with their active offers, pools) as the TOML "
             "file `ops apply` takes back with nothing changed. It holds the account's credentials: keep it as secret "
             "as they are.")  # fmt: skip
@click.option("--account", "slug", required=True, help="The account's slug.")
def export(slug: str) -> None:
    import tomli_w

    import accounts as store
    from catalog.export import document

    with _database().connection_context(), _account_errors("--account: "):
        doc = document(store.get(slug))
    click.echo(tomli_w.dumps(doc), nl=False)


@contextmanager
def _account_errors(key: str = "") -> Iterator[None]:
    """An account operation refused (accounts.AccountError) is the command's error, naming the key."""
    import accounts as store

    try:
        yield
    except store.AccountError as exc:
        raise click.ClickException(f"{key}{exc}") from None


@cli.group(help="Seller accounts (CONTRACT §14): each owns its gateways, bots and pools; a configuration file names "
           "its account (account = \"slug\").")  # fmt: skip
def accounts() -> None:
    pass


@accounts.command("create", help="A new account: a seller, or with --operator one who sees and manages every account.")
@click.argument("slug")
@click.option("--email", required=True, help="The account's login e-mail.")
@click.option("--operator", is_flag=True, help="The platform's operator, not a seller.")
def accounts_create(slug: str, email: str, operator: bool) -> None:
    import accounts as store

    with _database().connection_context(), _account_errors():
        _migrate_quietly()
        account = store.create(slug, email, role="operator" if operator else "seller")
    click.echo(f"created account {account.slug} ({account.role})")


@accounts.command("invite", help="Print a one-use sign-up link (valid 7 days) for a seller's e-mail: they choose their "
                  "shop's name and password in the panel.")  # fmt: skip
@click.option("--email", required=True, help="Who is invited.")
def accounts_invite(email: str) -> None:
    import accounts as store

    with _database().connection_context(), _account_errors():
        _migrate_quietly()
        url = store.invite(email)
    click.echo(url)


@accounts.command("reset-link", help="Print a one-use link (valid 1 hour) where the account sets a new password; "
                  "every session of the account ends when it is used.")  # fmt: skip
@click.argument("slug")
def accounts_reset_link(slug: str) -> None:
    import accounts as store
    from accounts import links

    with _database().connection_context(), _account_errors():
        token = links.reset(store.get(slug))
    click.echo(links.url("reset", token))


@accounts.command("set-email", help="Give an account a new login e-mail (the `default` account, which holds what "
                  "was configured before accounts, has none: set one, then send it a reset-link).")  # fmt: skip
@click.argument("slug")
@click.option("--email", required=True, help="The new login e-mail.")
def accounts_set_email(slug: str, email: str) -> None:
    import accounts as store

    with _database().connection_context(), _account_errors():
        _migrate_quietly()
        changed = store.set_email(slug, email)
    click.echo(f"account {slug}: e-mail set" if changed else f"account {slug} had this e-mail already")


@accounts.command("api-key", help="Make a key to the HTTP API for the account and print it (once: only its hash "
                  "is kept).")  # fmt: skip
@click.argument("slug")
def accounts_api_key(slug: str) -> None:
    import accounts as store
    from accounts import api_keys

    with _database().connection_context(), _account_errors():
        _migrate_quietly()
        key = api_keys.create(store.get(slug))
    click.echo(key)


@accounts.command("list", help="Every account: slug, e-mail, role, state, bots.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def accounts_list(as_json: bool) -> None:
    import accounts as store

    with _database().connection_context():
        rows = store.summaries()
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    click.echo(f"{'account':<20}{'e-mail':<32}{'role':<10}{'state':<11}{'bots':>5}  created")
    for r in rows:
        click.echo(f"{r.slug:<20}{(r.email or '-'):<32}{r.role:<10}{r.state:<11}{r.bots:>5}  {r.created_at}")


def _set_state(slug: str, state: str, done: str) -> None:
    import accounts as store

    with _database().connection_context(), _account_errors():
        changed = store.set_state(slug, state)
    click.echo(f"account {slug} {done}" if changed else f"account {slug} was {state} already")


@accounts.command("suspend", help="Its bots stop selling (their welcome says the bot is unavailable, no charge is "
                  "created, follow-ups and broadcasts stop) within CONFIG_POLL_SECONDS.")  # fmt: skip
@click.argument("slug")
def accounts_suspend(slug: str) -> None:
    _set_state(slug, "suspended", "suspended")


@accounts.command("resume", help="Its bots sell again within CONFIG_POLL_SECONDS.")
@click.argument("slug")
def accounts_resume(slug: str) -> None:
    _set_state(slug, "active", "resumed")


@cli.group(help="Remarketing broadcasts: one message to a segment of a bot's leads, each lead once, at the "
           "bot's limit (segments: all, not_bought, unpaid, paid, expired, utm_campaign=X, utm_source=X).")  # fmt: skip
def broadcast() -> None:
    pass


def _bot_config(bot_id: str):  # type: ignore[no-untyped-def]
    from catalog.snapshot import load_bots

    bot = load_bots([bot_id]).get(bot_id)
    if bot is None:
        raise click.ClickException(f"--bot: no bot {bot_id!r} (apply a configuration that has it first)")
    return bot


def _segment(segment: str) -> str:
    from actors.broadcasts import BroadcastError, parse_segment

    try:
        parse_segment(segment)
    except BroadcastError as exc:
        raise click.ClickException(str(exc)) from None
    return segment


def _at(value: str | None):  # type: ignore[no-untyped-def]
    """--at as naive UTC (without a timezone it is UTC)."""
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise click.ClickException(
            f"--at: {value!r} is not an ISO-8601 time such as 2026-12-01T18:00:00-03:00"
        ) from None
    return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo is not None else at


def _broadcast_line(s: Any) -> str:
    return (f"{s.id:>6} {s.bot[:11]:<12}{s.segment[:23]:<24}{s.state:<10}{s.total:>7}{s.sent:>7}{s.blocked:>8}"
            f"{s.failed:>7}{s.pending:>8}  {s.starts_at}")  # fmt: skip


BROADCAST_HEADER = f"{'id':>6} {'bot':<12}{'segment':<24}{'state':<10}{'total':>7}{'sent':>7}{'blocked':>8}" \
                   f"{'failed':>7}{'pending':>8}  starts (UTC)"  # fmt: skip


@broadcast.command("preview", help="How many leads the segment holds now (reachable ones only).")
@click.option("--bot", "bot_id", required=True, help="The bot.")
@click.option("--segment", required=True, help="all, not_bought, unpaid, paid, expired, utm_campaign=X, utm_source=X.")
def broadcast_preview(bot_id: str, segment: str) -> None:
    from actors import broadcasts

    with _database().connection_context():
        _bot_config(bot_id)
        click.echo(broadcasts.preview(bot_id, _segment(segment)))


@broadcast.command("create", help="Create a broadcast: sent now, or at --at (ISO-8601; without a timezone, UTC). "
                   "The segment is frozen when it starts. Prints its id.")  # fmt: skip
@click.option("--bot", "bot_id", required=True, help="The bot.")
@click.option("--segment", required=True, help="all, not_bought, unpaid, paid, expired, utm_campaign=X, utm_source=X.")
@click.option("--text", required=True, help="The message (up to 4096 characters).")
@click.option("--media-url", help="A photo, or a video (.mp4), sent with the text.")
@click.option(
    "--offer", help="An offer of the bot (its id in the file, or its button number): adds a button buying it."
)
@click.option("--at", "at", help="When to start (ISO-8601), e.g. 2026-12-01T18:00:00-03:00.")
@click.option("--paid", is_flag=True, help="allow_paid_broadcast: up to TELEGRAM_PAID_BROADCAST_RATE messages/s, "
              "Telegram charges Stars for messages above the free limit.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help='Print {"id": ...}.')
def broadcast_create(bot_id: str, segment: str, text: str, media_url: str | None, offer: str | None, at: str | None,
                     paid: bool, as_json: bool) -> None:  # fmt: skip
    from actors import broadcasts

    with _database().connection_context():
        bot = _bot_config(bot_id)
        try:
            row = broadcasts.create(bot, _segment(segment), text, media_url=media_url, offer=offer, at=_at(at),
                                    paid=paid)  # fmt: skip
        except broadcasts.BroadcastError as exc:
            raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"id": row.id}))
    else:
        click.echo(row.id)


@broadcast.command("show", help="A broadcast's state (scheduled, running, done, stopped) and counts: total, sent, "
                   "blocked, failed, pending.")  # fmt: skip
@click.argument("broadcast_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: one object.")
def broadcast_show(broadcast_id: int, as_json: bool) -> None:
    from actors import broadcasts

    with _database().connection_context():
        found = broadcasts.summaries(broadcast_id=broadcast_id)
    if not found:
        raise click.ClickException(f"ID: no broadcast {broadcast_id}")
    s = found[0]
    if as_json:
        click.echo(json.dumps(s.as_dict(), indent=2))
        return
    click.echo(BROADCAST_HEADER)
    click.echo(_broadcast_line(s))
    if s.error:
        click.echo(f"{'':>7}error: {s.error}")


@broadcast.command("stop", help="Stop a broadcast: nothing more is sent (within a second).")
@click.argument("broadcast_id", type=int)
def broadcast_stop(broadcast_id: int) -> None:
    from actors import broadcasts
    from db.models import Broadcast

    with _database().connection_context():
        row = Broadcast.get_or_none(Broadcast.id == broadcast_id)
        if row is None:
            raise click.ClickException(f"ID: no broadcast {broadcast_id}")
        if broadcasts.stop(broadcast_id):
            click.echo(f"broadcast {broadcast_id} stopped")
        else:
            click.echo(f"broadcast {broadcast_id} had already ended ({row.state}): nothing to stop")


@broadcast.command("list", help="Every broadcast (newest first) with its counts.")
@click.option("--bot", "bot_id", help="Only this bot's.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of objects.")
def broadcast_list(bot_id: str | None, as_json: bool) -> None:
    from actors import broadcasts

    with _database().connection_context():
        rows = broadcasts.summaries(bot_id=bot_id)
    if as_json:
        click.echo(json.dumps([s.as_dict() for s in rows], indent=2))
        return
    click.echo(BROADCAST_HEADER)
    for s in rows:
        click.echo(_broadcast_line(s))
    if not rows:
        click.echo("no broadcasts")


@cli.command(help="Redirect pools (GET /p/{pool_id}): each pool's bots with weight, health (unhealthy: Telegram "
             "refused the token or a WhatsApp number is disconnected; re-checked by the clock), tracked clicks; "
             "with --json a list of objects.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: a list of objects.")
def pools(as_json: bool) -> None:
    from datetime import UTC, datetime

    from actors.pools import unhealthy
    from catalog.snapshot import load_bots, load_pools
    from db.database import db

    with _database().connection_context():
        configured, bots = load_pools(), load_bots()
        sql = (
            'SELECT "pool_id", "bot_id", COUNT(*) FROM "click" WHERE "pool_id" IS NOT NULL GROUP BY "pool_id", "bot_id"'
        )
        clicks = {(str(p), str(b)): int(n) for p, b, n in db.execute_sql(sql).fetchall()}
    refused = unhealthy(_broker_client())

    def since(bot_id: str) -> str | None:
        at = refused.get(bot_id, {}).get("since")
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S") if at else None

    out: list[dict[str, Any]] = []
    for pool in sorted(configured.values(), key=lambda p: p.id):
        members: list[dict[str, Any]] = []
        for b, w in pool.members:
            error = refused[b].get("description") if b in refused else None if b in bots else "bot no longer configured"
            healthy = b not in refused and b in bots
            members.append({"bot": b, "weight": w, "healthy": healthy, "unhealthy_since": since(b), "error": error,
                            "clicks": clicks.get((pool.id, b), 0)})  # fmt: skip
        out.append({"id": pool.id, "healthy_bots": sum(m["healthy"] for m in members), "bots": members,
                    "clicks": sum(m["clicks"] for m in members)})  # fmt: skip
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no pools")
    for p in out:
        state = "" if p["healthy_bots"] else "  NO HEALTHY BOT: /p answers 503"
        click.echo(f"pool {p['id']}: {p['healthy_bots']} of {len(p['bots'])} bots healthy, {p['clicks']} clicks{state}")
        for m in p["bots"]:
            health = "healthy" if m["healthy"] else f"UNHEALTHY since {m['unhealthy_since'] or '-'} ({m['error']})"
            click.echo(f"  {m['bot']:<16} weight {m['weight']:>4}  {m['clicks']:>8} clicks  {health}")


@cli.command(help="The funnel per row: clicks, starts (leads), charges, paid, revenue, refunded, conversion (paid / "
             "clicks), grouped by bot (default), day, utm_source, utm_campaign or offer, over the seller's last N "
             "days (REPORT_TIMEZONE). Charges, paid, revenue and refunded as `ops payments` counts them; UTMs of "
             "each lead's last ad click.")  # fmt: skip
@click.option("--bot", help="Only this bot.")
@click.option("--by", "by", type=click.Choice(["day", "utm_source", "utm_campaign", "offer"]), help="Group rows by.")
@click.option("--since-days", default=30, show_default=True, type=click.IntRange(1, 3650), help="The last N days.")
@click.option("--json", "as_json", is_flag=True, help="A list of rows.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV for spreadsheets.")
def report(bot: str | None, by: str | None, since_days: int, as_json: bool, as_csv: bool) -> None:
    from reports import funnel as reports

    key = by or "bot"
    with _database().connection_context():
        rows = reports.report(key, bot, since_days)
    if as_json:
        click.echo(json.dumps([r.as_dict(key) for r in rows], indent=2))
        return
    if as_csv:
        click.echo(reports.as_csv(rows, key), nl=False)
        return
    click.echo(f"{key:<28}{'clicks':>8}{'starts':>8}{'charges':>9}{'paid':>7}{'revenue':>16}{'refunded':>14}"
               f"{'conversion':>12}")  # fmt: skip
    for r in rows:
        conversion = "-" if r.conversion is None else f"{r.conversion:.1%}"
        clicks = "-" if r.clicks is None else str(r.clicks)
        starts = "-" if r.starts is None else str(r.starts)
        click.echo(f"{(r.key or '(none)')[:27]:<28}{clicks:>8}{starts:>8}{r.charges:>9}{r.paid:>7}"
                   f"{_reais(r.revenue):>16}{_reais(r.refunded):>14}{conversion:>12}")  # fmt: skip
    if not rows:
        click.echo(f"nothing in the last {since_days} days")


@cli.group(help="The sandbox gateway's simulated bank (for demos and tests).")
def sandbox() -> None:
    pass


@sandbox.command("pay", help="Pay a sandbox charge (our charge id or its txid), as a buyer's PIX would. "
                 "With --notify, also post the gateway's signed notification to PUBLIC_BASE_URL.")  # fmt: skip
@click.argument("charge")
@click.option("--amount", help="Pay this much instead of the charge's amount (e.g. to try an underpayment).")
@click.option("--notify", is_flag=True, help="Post the signed charge.paid notification to the edge too.")
def sandbox_pay(charge: str, amount: str | None, notify: bool) -> None:
    from decimal import Decimal, InvalidOperation

    import httpx

    from actors.broker import redis_client
    from db.models import Charge, Gateway
    from gateways.payments.base import ChargeStatus, PaymentPermanent
    from gateways.payments.sandbox import SandboxGateway, sign

    try:
        paid = Decimal(amount).quantize(Decimal("0.01")) if amount is not None else None
    except InvalidOperation:
        raise click.ClickException(f"--amount: {amount!r} is not a decimal such as 19.90") from None
    with _database().connection_context():
        where = (Charge.id == int(charge)) if charge.isdigit() else (Charge.external_id == charge)
        row = Charge.get_or_none(where & (Charge.gateway_kind == "sandbox"))
        if row is None:
            raise click.ClickException(f"CHARGE: no sandbox charge {charge!r}")
        gateway = Gateway.get_by_id(row.gateway_id)
    bank = SandboxGateway(webhook_secret=gateway.webhook_secret, bank=redis_client(), **gateway.settings)
    try:
        before = bank.fetch_status(row.external_id or "")
        if before.status is ChargeStatus.PAID:
            paid = before.amount if before.amount is not None else row.amount
            click.echo(f"charge {row.id} was already paid ({_reais(str(paid))}) in the sandbox bank: nothing paid")
        else:
            paid = bank.pay(row.external_id or "", paid)
            click.echo(f"charge {row.id} paid {_reais(str(paid))} in the sandbox bank")
    except PaymentPermanent as exc:
        raise click.ClickException(str(exc)) from None
    if notify:
        body = json.dumps({"event": "charge.paid", "charge_id": row.external_id, "amount": str(paid)}).encode()
        url = f"{settings.PUBLIC_BASE_URL}/webhook/payment/{row.gateway_id}"
        headers = {"X-Sandbox-Signature": sign(gateway.webhook_secret, body), "Content-Type": "application/json"}
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise click.ClickException(f"notification not delivered to {url}: {type(exc).__name__}") from None
        click.echo(f"notification posted to {url}: HTTP {response.status_code}")
        if response.status_code != 200:
            sys.exit(1)


@cli.command("retry-dead", help="Move dead-lettered messages back to their queue (all queues unless --queue).")
@click.option("--queue", "queue_name", help="Only this queue.")
def retry_dead_command(queue_name: str | None) -> None:
    from actors.broker import QUEUES
    from reports.queues import retry_dead

    if queue_name is not None and queue_name not in QUEUES:
        raise click.ClickException(f"--queue: unknown queue {queue_name!r} (one of {', '.join(QUEUES)})")
    client = _broker_client()
    for q in [queue_name] if queue_name else list(QUEUES):
        click.echo(f"{q}: moved {retry_dead(client, q)} message(s) back")


@cli.command(
    help="Benchmarks: `edge` (ack throughput and latency vs bare Starlette, /start → welcome latency); "
    "`journeys` (start → charge → paid → delivered per second with the sandbox gateway, paid → delivered latency); "
    "`followups` (time to drain --total due follow-ups over --bots bots, /start → welcome latency meanwhile); "
    "`subscriptions` (--total active subscriptions, --expiring of them in one minute: time to remove them all); "
    "`broadcast` (--bots bots (20) × --leads leads broadcast at once: messages/s vs allowed, CPU per message, "
    "/start → welcome latency meanwhile; then CPU per WhatsApp message at 1,000 and --whatsapp-leads leads); "
    "`whatsapp` (inbound WhatsApp messages/s acked by the edge, first message → welcome p50/p99, beside Telegram's)."
)
@click.argument("what", type=click.Choice(["edge", "journeys", "followups", "subscriptions", "broadcast", "whatsapp"]))
@click.option("--leads", default=5_000, show_default=True, help="broadcast: leads per bot.")
@click.option("--whatsapp-leads", default=100_000, show_default=True,
              help="broadcast: leads of the larger WhatsApp number (the smaller has 1,000).")  # fmt: skip
@click.option("--expiring", default=5_000, show_default=True, help="subscriptions: how many end in the same minute.")
@click.option("--total", default=50_000, show_default=True, help="followups: due follow-ups to drain.")
@click.option("--bots", default=100, show_default=True, help="followups: bots they are spread over "
              "(broadcast: 20 unless given).")  # fmt: skip
@click.option("--seconds", default=10.0, show_default=True, help="Duration of each measured run.")
@click.option("--concurrency", default=64, show_default=True, help="Open connections for the ack benchmark.")
@click.option("--rate", default=200, show_default=True, help="Updates per second for the welcome benchmark.")
@click.option("--processes", default=2, show_default=True, help="Worker processes for the welcome benchmark.")
@click.option("--threads", default=4, show_default=True, help="Threads per worker process.")
@click.option("--qr/--no-qr", default=True, show_default=True, help="journeys: send the QR image with the code.")
@click.option("--payment-processes", default=1, show_default=True, help="journeys: payments worker processes.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("var/bench"), show_default=True)
def bench(
    what: str, leads: int, whatsapp_leads: int, expiring: int, total: int, bots: int, seconds: float,
    concurrency: int, rate: int, processes: int, threads: int, qr: bool, payment_processes: int, out: Path,
) -> None:  # fmt: skip
    if what == "whatsapp":
        from ops.benchmarks import whatsapp as bench_whatsapp

        bench_whatsapp.run(seconds=seconds, concurrency=concurrency, rate=min(rate, 50), out=out, processes=processes,
                           threads=threads)  # fmt: skip
        return
    if what == "broadcast":
        from ops.benchmarks import broadcast as bench_broadcast

        bench_broadcast.run(bots=20 if bots == 100 else bots, leads=leads, rate=min(rate, 20), seconds=seconds,
                            out=out, processes=processes, threads=threads, whatsapp_leads=whatsapp_leads)  # fmt: skip
        return
    if what == "subscriptions":
        from ops.benchmarks import subscriptions as bench_subscriptions

        bench_subscriptions.run(total=total if total != 50_000 else 100_000, expiring=expiring, rate=min(rate, 50),
                                seconds=seconds, out=out, processes=processes, threads=threads)  # fmt: skip
        return
    if what == "followups":
        from ops.benchmarks import followups as bench_followups

        bench_followups.run(total=total, bots=bots, rate=min(rate, 50), seconds=seconds, out=out,
                            processes=processes, threads=threads)  # fmt: skip
        return
    if what == "journeys":
        from ops.benchmarks import journeys as bench_journeys

        bench_journeys.run(seconds=seconds, rate=rate, out=out, processes=processes, threads=threads, send_qr=qr,
                           payment_threads=8, payment_processes=payment_processes)  # fmt: skip
        return
    from ops.benchmarks import edge as benchmarks

    benchmarks.run(seconds=seconds, concurrency=concurrency, rate=rate, out=out, processes=processes, threads=threads)
