"""Hand-written SQL for the few statements every /start runs, on SQLite and PostgreSQL alike.

peewee spends 0.2–0.6 ms of CPU building each of these queries, about a third of a worker's CPU
per welcome (measured: ops/bench and py-spy); here the SQL is a constant per placeholder style
and only the parameters change. Everything else stays with peewee's query builder. The columns
are those of db/models.py; tests run every function on both databases."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from peewee import Model, SqliteDatabase

from db.database import db

M = TypeVar("M", bound=Model)

RECORD_UPDATE = """
INSERT INTO "processed_update" ("bot_id", "update_id", "kind", "received_at", "redrives")
VALUES ({p}, {p}, {p}, {p}, 0)
ON CONFLICT ("bot_id", "update_id") DO NOTHING
RETURNING "id"
"""

OWE = """
UPDATE "processed_update" SET "lead_id" = {p}, "owed" = {p}, "due_at" = {p}, "kind" = {p} WHERE "id" = {p}
"""

SETTLE_OWED = """
UPDATE "processed_update" SET "done_at" = {p}, "due_at" = NULL WHERE "bot_id" = {p} AND "update_id" = {p}
AND "done_at" IS NULL
"""

UPSERT_LEAD = """
INSERT INTO "lead" ("bot_id", "person_id", "chat_id", "first_name", "last_name", "username",
                    "language_code", "start_payload", "first_seen_at", "last_seen_at", "reachable",
                    "unreachable_since")
VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})
ON CONFLICT ("bot_id", "person_id") DO UPDATE SET
  "chat_id" = EXCLUDED."chat_id", "first_name" = EXCLUDED."first_name", "last_name" = EXCLUDED."last_name",
  "username" = EXCLUDED."username", "language_code" = EXCLUDED."language_code",
  "start_payload" = COALESCE(EXCLUDED."start_payload", "lead"."start_payload"),
  "last_seen_at" = EXCLUDED."last_seen_at"{reachability}
RETURNING "id", "chat_id", "reachable"
"""
REACHABILITY = ', "reachable" = EXCLUDED."reachable", "unreachable_since" = EXCLUDED."unreachable_since"'

CLAIM_NEW_SEND = """
INSERT INTO "outbound_message" ("key", "bot_id", "chat_id", "method", "state", "attempts", "created_at", "claimed_at",
                                "claim")
VALUES ({p}, {p}, {p}, {p}, 'sending', 1, {p}, {p}, {p})
ON CONFLICT ("key") DO NOTHING
"""

FINISH_SEND = """
UPDATE "outbound_message" SET "state" = {p}, "telegram_message_id" = {p}, "provider_id" = {p}, "error" = {p},
"finished_at" = {p} WHERE "key" = {p}
"""


DELIVERY_JOB = """
SELECT d."id", d."state", d."invite_link", c."bot_id", l."id", l."chat_id", o."delivery_text", o."delivery_link",
       o."delivery_chat_id", c."offer_id", c."bump_offer_id", d."bump_invite_link", o."join_by_request"
FROM "delivery" d JOIN "charge" c ON c."id" = d."charge_id" JOIN "lead" l ON l."id" = c."lead_id"
     JOIN "offer" o ON o."id" = c."offer_id"
WHERE d."charge_id" = {p}
"""

LEAD_TOUCH = """
UPDATE "lead" SET "first_click_id" = COALESCE("first_click_id", {p}), "last_click_id" = {p} WHERE "id" = {p}
"""

DELIVERY_ATTEMPT = """
UPDATE "delivery" SET "attempts" = "attempts" + 1, "updated_at" = {p} WHERE "id" = {p}
"""

LEAD_CLICK = """
SELECT l."person_id", c."fbc", c."fbp", c."ip", c."user_agent", c."source_url", c."ttclid", c."ttp", c."utm",
       l."first_name", l."ctwa_clid"
FROM "lead" l LEFT JOIN "click" c ON c."id" = l."last_click_id" WHERE l."id" = {p}
"""


@cache
def _sql(template: str, param: str, **parts: str) -> str:
    return template.format(p=param, **parts)


def record_update(bot_id: str, update_id: int, kind: str, now: dt.datetime) -> int | None:
    """Record an update under its (bot, update_id): its row id, or None when it was there already."""
    row = db.execute_sql(_sql(RECORD_UPDATE, db.param), (bot_id, update_id, kind, now)).fetchone()
    return int(row[0]) if row is not None else None


def owe(record_id: int, lead_id: int | None, owed: str, due_at: dt.datetime, kind: str) -> None:
    """What the recorded update still owes its lead, and when the clock re-drives it if nothing says
    done; its kind as routed (a WhatsApp message that was the funnel's entry is a `start`)."""
    db.execute_sql(_sql(OWE, db.param), (lead_id, owed, due_at, kind, record_id))


def update_kind(bot_id: str, update_id: int) -> str | None:
    """The kind an update was recorded (and routed) as."""
    row = db.execute_sql(_sql('SELECT "kind" FROM "processed_update" WHERE "bot_id" = {p} AND "update_id" = {p}',
                              db.param), (bot_id, update_id)).fetchone()  # fmt: skip
    return str(row[0]) if row is not None else None


def settle_owed(bot_id: str, update_id: int, now: dt.datetime) -> None:
    """The stage an update owed has recorded its outcome: nothing left to re-drive."""
    db.execute_sql(_sql(SETTLE_OWED, db.param), (now, bot_id, update_id))


def upsert_lead(
    bot_id: str,
    person_id: int,
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
        bot_id, person_id, chat_id, first_name, last_name, username, language_code, start_payload,
        now, now, reachable is not False, now if reachable is False else None,
    )  # fmt: skip
    lead_id, chat, is_reachable = db.execute_sql(sql, params).fetchone()
    return int(lead_id), int(chat), bool(is_reachable)


def claim_new_send(key: str, bot_id: str, chat_id: int, method: str, now: dt.datetime, claim: str) -> bool:
    """Create a send's row already claimed by this worker (`claim`: its token); False when the row exists."""
    cursor = db.execute_sql(_sql(CLAIM_NEW_SEND, db.param), (key, bot_id, chat_id, method, now, now, claim))
    return bool(cursor.rowcount)


def finish_send(key: str, state: str, message_id: int | None, error: str | None, now: dt.datetime,
                provider_id: str | None = None) -> None:  # fmt: skip
    db.execute_sql(_sql(FINISH_SEND, db.param), (state, message_id, provider_id, error, now, key))


@dataclass(frozen=True)
class DeliveryJob:
    """What sending a paid charge's delivery needs, read in one query."""

    delivery_id: int
    state: str
    invite_link: str | None
    bot_id: str
    lead_id: int
    chat_id: int
    delivery_text: str
    delivery_link: str | None
    delivery_chat_id: int | None
    offer_id: int
    bump_offer_id: int | None  # an accepted order bump: delivered too
    bump_invite_link: str | None
    join_by_request: bool  # the link asks to join (a subscription decides who is approved)


def delivery_job(charge_id: int) -> DeliveryJob | None:
    """The charge's delivery with its bot, buyer and offer (deactivated offers included: they
    still deliver what was paid for); None when the charge has no delivery."""
    row = db.execute_sql(_sql(DELIVERY_JOB, db.param), (charge_id,)).fetchone()
    return DeliveryJob(*row) if row is not None else None


def count_delivery_attempt(delivery_id: int, now: dt.datetime) -> None:
    db.execute_sql(_sql(DELIVERY_ATTEMPT, db.param), (now, delivery_id))


def touch_lead_click(lead_id: int, click_id: int) -> None:
    """The click is the lead's last touch, and its first if it had none."""
    db.execute_sql(_sql(LEAD_TOUCH, db.param), (click_id, click_id, lead_id))


def lead_click(lead_id: int) -> tuple[Any, ...] | None:
    """(user id, fbc, fbp, ip, user agent, source url, ttclid, ttp, utm JSON, first name, ctwa_clid)
    of a lead and its last ad click (Nones when the lead came without one), or None when there is
    no such lead: what the ad destinations' events need."""
    row = db.execute_sql(_sql(LEAD_CLICK, db.param), (lead_id,)).fetchone()
    return tuple(row) if row is not None else None


# --- the same, for any model: statements built once per shape, values converted by the fields ----
# peewee rebuilds a query's SQL on every call (about 1 ms of CPU for a 20-column SELECT); these keep
# it, and take their WHERE clauses as hand-written SQL with {p} placeholders.


@cache
def _select(model: type[Model], where: str, param: str) -> str:
    columns = ", ".join(f'"{f.column_name}"' for f in model._meta.sorted_fields)  # type: ignore[attr-defined]
    return f'SELECT {columns} FROM "{model._meta.table_name}" WHERE {where.format(p=param)} LIMIT 1'  # type: ignore[attr-defined]


def first(model: type[M], where: str, params: tuple[Any, ...]) -> M | None:
    """The first row matching `where` as a model instance (every column, converted as peewee does)."""
    row = db.execute_sql(_select(model, where, db.param), params).fetchone()
    if row is None:
        return None
    fields = model._meta.sorted_fields  # type: ignore[attr-defined]
    return loaded(model, {f.name: f.python_value(v) for f, v in zip(fields, row, strict=True)})


def loaded(model: type[M], values: dict[str, Any]) -> M:
    """A model instance for a row as it is in the database (nothing to save)."""
    instance = model(**values)
    instance._dirty.clear()  # type: ignore[attr-defined]
    return instance


@cache
def _insert(model: type[Model], names: tuple[str, ...], param: str, ignore: bool) -> str:
    fields = model._meta.fields  # type: ignore[attr-defined]
    columns = ", ".join(f'"{fields[n].column_name}"' for n in names)
    conflict = " ON CONFLICT DO NOTHING" if ignore else ""
    marks = ", ".join([param] * len(names))
    return f'INSERT INTO "{model._meta.table_name}" ({columns}) VALUES ({marks}){conflict} RETURNING "id"'  # type: ignore[attr-defined]


def insert(model: type[Model], values: dict[str, Any], *, ignore_conflicts: bool = False) -> int | None:
    """Insert one row (every column the table needs must be in `values`: model defaults are not
    applied); returns its id, or None when a conflict was ignored."""
    fields = model._meta.fields  # type: ignore[attr-defined]
    names = tuple(values)
    sql = _insert(model, names, db.param, ignore_conflicts)
    row = db.execute_sql(sql, tuple(fields[n].db_value(values[n]) for n in names)).fetchone()
    return int(row[0]) if row is not None else None


@cache
def _update(model: type[Model], names: tuple[str, ...], where: str, param: str) -> str:
    fields = model._meta.fields  # type: ignore[attr-defined]
    assignments = ", ".join(f'"{fields[n].column_name}" = {param}' for n in names)
    return f'UPDATE "{model._meta.table_name}" SET {assignments} WHERE {where.format(p=param)}'  # type: ignore[attr-defined]


def update(model: type[Model], values: dict[str, Any], where: str, params: tuple[Any, ...]) -> int:
    """`UPDATE ... SET values WHERE where`; returns how many rows changed."""
    fields = model._meta.fields  # type: ignore[attr-defined]
    names = tuple(values)
    converted = tuple(fields[n].db_value(values[n]) for n in names)
    return int(db.execute_sql(_update(model, names, where, db.param), converted + params).rowcount)


# --- durable schedules: rows with a due time, claimed by moving it on (a lease) -------------------

CLAIM_DUE = """
UPDATE "{table}" SET "due_at" = {p}, "{counter}" = "{counter}" + 1
WHERE "id" IN (SELECT "id" FROM "{table}" WHERE {where} AND "due_at" <= {p} ORDER BY "due_at" LIMIT {limit}{lock})
RETURNING "id"
"""


def claim_due(table: str, where: str, now: dt.datetime, lease: dt.timedelta, *, counter: str = "attempts",
              limit: int = 500, params: tuple[Any, ...] = ()) -> list[int]:  # fmt: skip
    """Claim up to `limit` rows of `table` due at `now` (and matching `where`, hand-written SQL with
    {p} placeholders for `params`):
    their `due_at` moves to `now + lease`, so until then no other claimer takes them, and when the
    lease runs out with the work undone (Redis lost the message, a worker died) they come due again.
    One statement: on PostgreSQL the inner SELECT takes its rows FOR UPDATE SKIP LOCKED, so clocks
    and workers claiming at once never wait for or take each other's rows; SQLite has one writer."""
    lock = "" if isinstance(db.obj, SqliteDatabase) else " FOR UPDATE SKIP LOCKED"
    where = where.replace("{p}", db.param)
    sql = _sql(CLAIM_DUE, db.param, table=table, where=where, counter=counter, limit=str(int(limit)), lock=lock)
    return [int(row[0]) for row in db.execute_sql(sql, (now + lease, *params, now)).fetchall()]
