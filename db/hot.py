"""Hand-written SQL for the few statements every /start runs, on SQLite and PostgreSQL alike.

peewee spends 0.2–0.6 ms of CPU building each of these queries, about a third of a worker's CPU
per welcome (measured: ops/bench and py-spy); here the SQL is a constant per placeholder style
and only the parameters change. Everything else stays with peewee's query builder. The columns
are those of db/models.py; tests run every function on both databases."""

from __future__ import annotations

import datetime as dt
from functools import cache

from db.database import db

RECORD_UPDATE = """
INSERT INTO "processed_update" ("bot_id", "update_id", "kind", "received_at") VALUES ({p}, {p}, {p}, {p})
ON CONFLICT ("bot_id", "update_id") DO NOTHING
"""

UPSERT_LEAD = """
INSERT INTO "lead" ("bot_id", "telegram_user_id", "chat_id", "first_name", "last_name", "username",
                    "language_code", "start_payload", "first_seen_at", "last_seen_at", "reachable",
                    "unreachable_since")
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT ("bot_id", "telegram_user_id") DO UPDATE SET
  "chat_id" = EXCLUDED."chat_id", "first_name" = EXCLUDED."first_name", "last_name" = EXCLUDED."last_name",
  "username" = EXCLUDED."username", "language_code" = EXCLUDED."language_code",
  "start_payload" = COALESCE(EXCLUDED."start_payload", "lead"."start_payload"),
  "last_seen_at" = EXCLUDED."last_seen_at"{reachability}
RETURNING "id", "chat_id", "reachable"
"""
REACHABILITY = ', "reachable" = EXCLUDED."reachable", "unreachable_since" = EXCLUDED."unreachable_since"'

CLAIM_NEW_SEND = """
INSERT INTO "outbound_message" ("key", "bot_id", "chat_id", "method", "state", "attempts", "created_at", "claimed_at")
VALUES ({p}, {p}, {p}, {p}, 'sending', 1, {p}, {p})
ON CONFLICT ("key") DO NOTHING
"""

FINISH_SEND = """
UPDATE "outbound_message" SET "state" = {p}, "telegram_message_id" = {p}, "error" = {p}, "finished_at" = {p}
WHERE "key" = {p}
"""


LEAD_CLICK = """
SELECT l."telegram_user_id", c."fbc", c."fbp", c."ip", c."user_agent", c."source_url"
FROM "lead" l LEFT JOIN "click" c ON c."id" = l."last_click_id" WHERE l."id" = {p}
"""


@cache
def _sql(template: str, param: str, **parts: str) -> str:
    return template.format(p=param, **parts)


def record_update(bot_id: str, update_id: int, kind: str, now: dt.datetime) -> bool:
    """Record an update under its (bot, update_id); False when it was there already."""
    cursor = db.execute_sql(_sql(RECORD_UPDATE, db.param), (bot_id, update_id, kind, now))
    return bool(cursor.rowcount)


def upsert_lead(
    bot_id: str,
    telegram_user_id: int,
    chat_id: int,
    names: tuple[str, str | None, str | None, str | None],
    start_payload: str | None,
    now: dt.datetime,
    reachable: bool | None,
) -> tuple[int, int, bool]:
    """Insert or refresh a lead: first_seen_at stays, start_payload only ever changes to a new
    non-empty one, reachability only when `reachable` is not None. Returns (id, chat_id, reachable)."""
    first_name, last_name, username, language_code = names
    sql = _sql(UPSERT_LEAD, db.param, reachability="" if reachable is None else REACHABILITY)
    params = (
        bot_id, telegram_user_id, chat_id, first_name, last_name, username, language_code, start_payload,
        now, now, reachable is not False, now if reachable is False else None,
    )  # fmt: skip
    lead_id, chat, is_reachable = db.execute_sql(sql, params).fetchone()
    return int(lead_id), int(chat), bool(is_reachable)


def claim_new_send(key: str, bot_id: str, chat_id: int, method: str, now: dt.datetime) -> bool:
    """Create a send's row already claimed by this worker; False when the row exists."""
    cursor = db.execute_sql(_sql(CLAIM_NEW_SEND, db.param), (key, bot_id, chat_id, method, now, now))
    return bool(cursor.rowcount)


def finish_send(key: str, state: str, message_id: int | None, error: str | None, now: dt.datetime) -> None:
    db.execute_sql(_sql(FINISH_SEND, db.param), (state, message_id, error, now, key))


def lead_click(lead_id: int) -> tuple[int, str | None, str | None, str | None, str | None, str | None] | None:
    """(telegram user id, fbc, fbp, ip, user agent, source url) of a lead's last ad click (Nones
    when the lead came without one), or None when there is no such lead: what a pixel event needs."""
    row = db.execute_sql(_sql(LEAD_CLICK, db.param), (lead_id,)).fetchone()
    return tuple(row) if row is not None else None  # type: ignore[return-value]
