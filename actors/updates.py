"""Update routing: every Telegram update the edge accepted is recorded once under (bot, update_id)
and routed — /start to the welcome funnel, button presses to their handler, blocks and unblocks
to the lead's reachability."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import dramatiq
from peewee import EXCLUDED, fn

from actors import funnel, runtime
from actors.broker import UPDATES, retry_when
from actors.enqueue import enqueue, unit_of_work
from db.catalog import BotConfig
from db.database import utcnow
from db.models import Lead, ProcessedUpdate

log = logging.getLogger(__name__)

START = re.compile(r"^/start(?:@\w+)?(?:\s+(?P<payload>\S+))?\s*$")
PAYLOAD = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Routed:
    kind: str  # start | message | callback | block | unblock | other | duplicate
    lead_id: int | None = None


def classify(update: dict[str, Any]) -> str:
    message = update.get("message")
    if isinstance(message, dict):
        if (message.get("chat") or {}).get("type") != "private" or not isinstance(message.get("from"), dict):
            return "other"
        text = message.get("text")
        if isinstance(text, str) and START.match(text.strip()):
            return "start"
        return "message"
    if isinstance(update.get("callback_query"), dict):
        return "callback"
    member = update.get("my_chat_member")
    if isinstance(member, dict) and (member.get("chat") or {}).get("type") == "private":
        status = (member.get("new_chat_member") or {}).get("status")
        if status == "kicked":
            return "block"
        if status == "member":
            return "unblock"
    return "other"


def start_payload(text: str) -> str | None:
    match = START.match(text.strip())
    payload = match.group("payload") if match else None
    return payload if payload and PAYLOAD.match(payload) else None


def upsert_lead(bot_id: str, user: dict[str, Any], chat_id: int, *, payload: str | None = None,
                reachable: bool | None = True) -> int:  # fmt: skip
    """Insert or refresh the lead; first_seen_at stays, the rest follows the latest update."""
    now = utcnow()
    values = {
        Lead.bot: bot_id,
        Lead.telegram_user_id: int(user["id"]),
        Lead.chat_id: chat_id,
        Lead.first_name: str(user.get("first_name") or "")[:255],
        Lead.last_name: (str(user["last_name"])[:255] if user.get("last_name") else None),
        Lead.username: (str(user["username"])[:64] if user.get("username") else None),
        Lead.language_code: (str(user["language_code"])[:16] if user.get("language_code") else None),
        Lead.start_payload: payload,
        Lead.first_seen_at: now,
        Lead.last_seen_at: now,
        Lead.reachable: reachable is not False,
        Lead.unreachable_since: now if reachable is False else None,
    }
    update: dict[Any, Any] = {
        Lead.chat_id: EXCLUDED.chat_id,
        Lead.first_name: EXCLUDED.first_name,
        Lead.last_name: EXCLUDED.last_name,
        Lead.username: EXCLUDED.username,
        Lead.language_code: EXCLUDED.language_code,
        Lead.start_payload: fn.COALESCE(EXCLUDED.start_payload, Lead.start_payload),
        Lead.last_seen_at: EXCLUDED.last_seen_at,
    }
    if reachable is not None:
        update[Lead.reachable] = EXCLUDED.reachable
        update[Lead.unreachable_since] = EXCLUDED.unreachable_since
    Lead.insert(values).on_conflict(conflict_target=[Lead.bot, Lead.telegram_user_id], update=update).execute()
    return int(
        Lead.select(Lead.id).where((Lead.bot == bot_id) & (Lead.telegram_user_id == int(user["id"]))).scalar()
    )


def _handle(bot: BotConfig, update_id: int, kind: str, update: dict[str, Any]) -> int | None:
    """The update's database writes and follow-up messages, inside one unit of work."""
    if kind in ("start", "message"):
        message = update["message"]
        payload = start_payload(message.get("text") or "") if kind == "start" else None
        lead_id = upsert_lead(bot.id, message["from"], int(message["chat"]["id"]), payload=payload,
                              reachable=True)  # fmt: skip
        if kind == "start":
            enqueue(funnel.welcome.message(bot.id, lead_id, update_id))
        return lead_id
    if kind == "callback":
        query = update["callback_query"]
        chat_id = int(((query.get("message") or {}).get("chat") or {}).get("id") or query["from"]["id"])
        lead_id = upsert_lead(bot.id, query["from"], chat_id, reachable=None)
        enqueue(funnel.callback.message(bot.id, chat_id, str(query["id"])))
        return lead_id
    if kind in ("block", "unblock"):
        member = update["my_chat_member"]
        return upsert_lead(bot.id, member["from"], int(member["chat"]["id"]), reachable=kind == "unblock")
    return None


def route_update(bot: BotConfig, update: dict[str, Any]) -> Routed:
    """Take one update in, once. The row is marked done only after the follow-up messages were
    enqueued, so a worker that dies in between leaves it to the redelivered message."""
    update_id = int(update["update_id"])
    kind = classify(update)
    ProcessedUpdate.insert(bot_id=bot.id, update_id=update_id, kind=kind).on_conflict_ignore().execute()
    record = ProcessedUpdate.get((ProcessedUpdate.bot_id == bot.id) & (ProcessedUpdate.update_id == update_id))
    if record.done_at is not None:
        log.info("update duplicate bot=%s update=%s", bot.id, update_id)
        return Routed("duplicate")
    with unit_of_work():
        lead_id = _handle(bot, update_id, kind, update)
    ProcessedUpdate.update(done_at=utcnow()).where(ProcessedUpdate.id == record.id).execute()
    log.info("update routed bot=%s update=%s kind=%s", bot.id, update_id, kind)
    return Routed(kind, lead_id)


@dramatiq.actor(
    actor_name="updates.route",
    queue_name=UPDATES,
    max_retries=10,
    min_backoff=500,
    max_backoff=120_000,
    retry_when=retry_when(10),
    time_limit=30_000,
    max_age=24 * 3600 * 1000,  # Telegram itself gives up on an update after 24 h
)
def route(bot_id: str, update: dict[str, Any]) -> None:
    bot = runtime.bot_config(bot_id)
    if bot is None:
        log.warning("update dropped: unknown bot bot=%s", bot_id)
        return
    route_update(bot, update)
