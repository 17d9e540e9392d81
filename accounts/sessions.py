"""Server-side sessions in Redis (revocable: logout, "log out everywhere", a password change or a
suspension ends them), and the limits on failed logins.

A session is `grimbots:session:{sha256(id)}` → JSON (account, CSRF token, start, address), expiring
after SESSION_IDLE_SECONDS unused and SESSION_MAX_SECONDS in all; each account's live sessions are
listed in `grimbots:sessions:{account}`. Only the id's hash is stored: a leaked Redis dump holds no
usable cookie. A visitor who is not logged in has a session too (account None), for the CSRF token
of the login and sign-up forms; logging in replaces it with a new id."""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis

import settings

PREFIX = "grimbots:session:"
BY_ACCOUNT = "grimbots:sessions:{account}"
FAILURES = "grimbots:login-failures:{who}"
FAIL_WINDOW_SECONDS = 15 * 60
SLOW_AFTER = 3  # failures before each answer is slowed
REFUSE_AT = 10  # failures (per address, per e-mail) within the window before every login is refused
ANONYMOUS_SECONDS = 3600  # a visitor's session (a form's CSRF token): anyone can make one, so it dies soon


def _key(session_id: str) -> str:
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    id: str
    account: int | None
    csrf: str
    started: float
    address: str
    pending: int | None = None  # an account whose password was right, waiting for its second factor

    @property
    def tag(self) -> str:
        """What the audit log keeps of the session: its hash's first characters."""
        return hashlib.sha256(self.id.encode()).hexdigest()[:12]


def _idle(account: int | None) -> int:
    idle = min(settings.SESSION_IDLE_SECONDS, settings.SESSION_MAX_SECONDS)
    return idle if account is not None else min(idle, ANONYMOUS_SECONDS)


def start(client: redis.Redis, account: int | None, address: str, pending: int | None = None) -> Session:
    """A new session (a new id) of `account`, or an anonymous one (waiting for `pending`'s second factor)."""
    session = Session(secrets.token_urlsafe(32), account, secrets.token_urlsafe(32), time.time(), address, pending)
    doc = json.dumps({"account": account, "csrf": session.csrf, "started": session.started, "address": address,
                      "pending": pending})  # fmt: skip
    pipe = client.pipeline()
    pipe.set(_key(session.id), doc, ex=_idle(account))
    if account is not None:
        pipe.sadd(BY_ACCOUNT.format(account=account), _key(session.id))
    pipe.execute()
    return session


def get(client: redis.Redis, session_id: str | None) -> Session | None:
    """The live session with this id (its idle time starts again), or None."""
    if not session_id or len(session_id) > 128:
        return None
    key = _key(session_id)
    raw = client.get(key)
    if raw is None:
        return None
    doc = json.loads(raw)
    left = settings.SESSION_MAX_SECONDS - (time.time() - float(doc["started"]))
    if left <= 0:
        end(client, session_id)
        return None
    client.expire(key, int(min(_idle(doc["account"]), left)) or 1)
    return Session(session_id, doc["account"], doc["csrf"], float(doc["started"]), doc.get("address") or "",
                   doc.get("pending"))  # fmt: skip


def live(client: redis.Redis, account: int) -> list[tuple[str, float, str]]:
    """The account's live sessions: (tag, started, address), the newest first."""
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.smembers(BY_ACCOUNT.format(account=account))]
    out = []
    for key, raw in zip(keys, client.mget(keys) if keys else [], strict=True):
        if raw is None:
            client.srem(BY_ACCOUNT.format(account=account), key)  # expired: forget it
            continue
        doc = json.loads(raw)
        out.append((key[len(PREFIX) :][:12], float(doc["started"]), doc.get("address") or ""))
    return sorted(out, key=lambda s: -s[1])


def end(client: redis.Redis, session_id: str) -> None:
    key = _key(session_id)
    raw = client.get(key)
    client.delete(key)
    if raw is not None and (account := json.loads(raw).get("account")) is not None:
        client.srem(BY_ACCOUNT.format(account=account), key)


def end_all(client: redis.Redis, account: int, keep: str | None = None) -> int:
    """End every session of the account (but `keep`'s); returns how many ended."""
    listed = BY_ACCOUNT.format(account=account)
    kept = _key(keep) if keep else None
    keys = [k.decode() if isinstance(k, bytes) else k for k in client.smembers(listed)]
    doomed = [k for k in keys if k != kept]
    if doomed:
        client.delete(*doomed)
        client.srem(listed, *doomed)
    return len(doomed)


def failures(client: redis.Redis, *who: str) -> int:
    """The most failed logins within the window of any of `who` (an address, an e-mail)."""
    counts = client.mget([FAILURES.format(who=w) for w in who])
    return max((int(c) for c in counts if c is not None), default=0)


def failed(client: redis.Redis, *who: str) -> None:
    pipe = client.pipeline()
    for w in who:
        key = FAILURES.format(who=w)
        pipe.incr(key)
        pipe.expire(key, FAIL_WINDOW_SECONDS, nx=True)
    pipe.execute()


def delay_for(count: int) -> float:
    """How long an answer waits after `count` failures: nothing for the first few, then a second more each."""
    return float(max(0, count - SLOW_AFTER + 1)) if count >= SLOW_AFTER else 0.0
